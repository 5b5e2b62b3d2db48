"""AttributeGAN ([A], Ye et al. 2021) as a registered family: Eq. 1, efficient attention, SLE, the
projection discriminator, decoders, ablation switches, and exact resume through the shared loop."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import models.attributegan as ag
import models.attributegan_objective as ago
from histaug.generator_checkpoint import load_generator
from histaug.train_generator import train_generator
from histaug.utils import PipelineError
from models import Condition, available_families, build_generator

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}
LEVELS = (4, 3, 3, 2, 4)  # [A] §3: crowding, polarity, mitosis, nucleoli, pleomorphism
NAMES = ("crowding", "polarity", "mitosis", "nucleoli", "pleomorphism")
COND = Condition.attributes(NAMES, LEVELS)


def tiny_cfg(**over) -> dict:
    """A 32-px AttributeGAN with tiny widths and the paper's optimiser settings."""
    cfg = {**ag.DEMO_CONFIG, "latent_dim": 8, "g_channels": 16, "d_channels": 16, "attention_heads": 2,
           "attention_dim": 4, "contrastive_dim": 16, "batch_size": 4, "steps": 4, "ema_decay": 0.9,
           "checkpoint_every": 2, "log_every": 1, "seed": 0, "keep_state": True}
    cfg.update(over)
    return cfg


def build(**over):
    torch.manual_seed(0)
    return build_generator(tiny_cfg(**over), COND, name="ag")


def rows(*levels) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.long)


LABELS = rows([0, 1, 2, 1, 3], [3, 0, 0, 0, 1], [0, 1, 2, 1, 3], [2, 2, 1, 1, 0])


# --------------------------------------------------------------------------- Eq. 1


def eq1_with_loops(f, l, y, t, self_positive=True, margin=0.0, temperature_factor=False) -> float:
    """[A] Eq. 1 written out term by term, averaged over the anchors (code variants as options)."""
    n = len(y)
    cos = lambda a, b: float(torch.dot(a, b) / (a.norm() * b.norm()))  # noqa: E731
    total = 0.0
    for i in range(n):
        proxy = math.exp((cos(f[i], l[i]) - margin) / t)
        numerator, denominator = proxy, proxy
        for k in range(n):
            term = math.exp((cos(f[i], f[k]) - margin) / t)
            if y[k] == y[i] and y[i] >= 0 and (k != i or self_positive):
                numerator += term
            elif k == i and self_positive:  # the anchor itself, even without a contrastive class
                numerator += term
            if k != i:
                denominator += term
        ratio = numerator / denominator * (t if temperature_factor else 1.0)
        total += -math.log(ratio)
    return total / n


@pytest.mark.parametrize("variant", [
    dict(),                                                                  # the paper
    dict(self_positive=False, margin=0.3, temperature_factor=True),          # the code's switches
    dict(self_positive=False),
])
@pytest.mark.parametrize("t", [1.0, 0.3])
def test_contrastive_loss_is_eq1(variant, t):
    gen = torch.Generator().manual_seed(1)
    f, l = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    y = [2, 0, 2, 1, 2, 0, -1]  # three samples of class 2, two of class 0, one without a class
    got = ago.conditional_contrastive_loss(f, l, torch.tensor(y), t, **variant)
    assert float(got) == pytest.approx(eq1_with_loops(f, l, y, t, **variant), rel=1e-5)


def test_contrastive_loss_switches_differ_as_stated():
    gen = torch.Generator().manual_seed(2)
    f, l, y = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen), torch.tensor([0, 0, 1, 1, 1, 2])
    paper = ago.conditional_contrastive_loss(f, l, y, 0.5)
    code = ago.conditional_contrastive_loss(f, l, y, 0.5, self_positive=False)
    assert float(paper) < float(code)  # the self pair adds e^{1/t} to every numerator
    # the code's margin multiplies numerator and denominator by e^{-m/t}: it cancels
    torch.testing.assert_close(code, ago.conditional_contrastive_loss(f, l, y, 0.5, self_positive=False, margin=0.7))
    factor = ago.conditional_contrastive_loss(f, l, y, 0.5, self_positive=False, temperature_factor=True)
    assert float(factor - code) == pytest.approx(-math.log(0.5), rel=1e-5)


# --------------------------------------------------------------------------- efficient attention


def direct_attention(att: ag.EfficientAttention, x: torch.Tensor) -> torch.Tensor:
    """Q, K, V from the 1x1 convs; rho_q/rho_k; then (rho_q(Q) rho_k(K)^T) V with the n x n matrix."""
    b, _, h, w = x.shape
    heads, d = att.heads, att.dim
    flat = x.flatten(2)  # (b, c, n)
    def proj(conv):  # noqa: E306
        return (torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], flat) + conv.bias[None, :, None]).reshape(b, heads, d, -1)
    q, k, v = proj(att.to_q), proj(att.to_k), proj(att.to_v)
    outs = []
    for head in range(heads):
        Q, K, V = q[:, head].transpose(1, 2), k[:, head].transpose(1, 2), v[:, head].transpose(1, 2)  # (b, n, d)
        if att.normalisation == "softmax":
            Q = torch.softmax(Q * d**-0.25, dim=2)   # each query over its channels
            K = torch.softmax(K * d**-0.25, dim=1)   # each key channel over the positions
            A = Q @ K.transpose(1, 2)                # (b, n, n)
        else:
            A = Q @ K.transpose(1, 2) / (h * w)
        outs.append((A @ V).transpose(1, 2))        # (b, d, n)
    out = torch.cat(outs, dim=1).reshape(b, heads * d, h, w)
    return att.to_out(out)


@pytest.mark.parametrize("normalisation", ["softmax", "scaling"])
def test_efficient_attention_is_q_times_kt_v(normalisation):
    torch.manual_seed(0)
    att = ag.EfficientAttention(6, heads=2, dim=4, normalisation=normalisation).double()
    x = torch.randn(3, 6, 5, 7, dtype=torch.double)
    torch.testing.assert_close(att(x), direct_attention(att, x))


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_intermediate(fn, x) -> int:
    with torch.no_grad(), LargestTensor() as mode:
        fn(x)
    return mode.largest


def test_efficient_attention_memory_is_linear_in_pixels():
    torch.manual_seed(0)
    att = ag.EfficientAttention(8, heads=2, dim=4)
    sizes = [largest_intermediate(att, torch.randn(1, 8, s, s)) for s in (16, 32, 64)]
    ratios = [sizes[1] / sizes[0], sizes[2] / sizes[1]]
    assert all(3.5 <= r <= 4.5 for r in ratios), (sizes, ratios)
    # the measurement sees quadratic attention: the same maths through the n x n matrix grows 16x
    quadratic = [largest_intermediate(lambda x: direct_attention(att, x), torch.randn(1, 8, s, s)) for s in (16, 32, 64)]
    assert all(r >= 15 for r in (quadratic[1] / quadratic[0], quadratic[2] / quadratic[1])), quadratic
    assert sizes[2] < quadratic[2] / 100


# --------------------------------------------------------------------------- SLE, global context, decoders


def test_global_context_pools_with_softmax_attention_and_gates():
    torch.manual_seed(0)
    gc = ag.GlobalContext(6, 10)
    x = torch.randn(2, 6, 8, 8)
    weights = torch.softmax(gc.attention_pool(x).flatten(1), dim=1)       # (2, 64)
    expected = (x.flatten(2) * weights[:, None, :]).sum(-1)               # (2, 6)
    torch.testing.assert_close(gc.pool(x)[:, :, 0, 0], expected)
    gate = gc(x)
    assert gate.shape == (2, 10, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    assert ag.SkipLayerExcitation(6, 10)(x).shape == (2, 10, 1, 1)


def test_default_rules_for_attention_sle_and_contrastive_stage():
    assert ag.default_attention_sizes(512) == (32, 64)
    assert ag.default_attention_sizes(128) == (8, 16)
    assert ag.default_attention_sizes(32) == (4,)
    assert ag.default_sle_pairs(512) == ((16, 128), (32, 256), (64, 512))
    assert ag.default_sle_pairs(256) == ((16, 128), (32, 256))
    assert ag.default_sle_pairs(128) == ((16, 128),)
    assert ag.default_sle_pairs(64) == ag.default_sle_pairs(32) == ()
    assert ag.down_block_inputs(512) == [256, 128, 64, 32, 16] and ag.down_block_inputs(32) == [16]
    # the notes' widths at 512 px
    assert [ag.generator_width(r, 512) for r in (8, 16, 32, 64, 128, 256, 512)] == [512, 512, 256, 128, 64, 32, 3]
    assert [ag.discriminator_width(r, 512) for r in (256, 128, 64, 32, 16, 8)] == [16, 32, 64, 128, 256, 512]


def test_sle_gates_the_target_block_at_128px():
    parts = build(image_size=128, attention_sizes=None, sle_pairs=None)
    G = parts.generator.eval()
    assert list(G.skip_layer_excitation) == ["16x16_to_128x128"]
    assert list(G.attention) == ["8x8", "16x16"] and list(parts.discriminator.attention) == ["16x16"]
    gates, blocks = [], {}
    G.skip_layer_excitation["16x16_to_128x128"].register_forward_hook(lambda m, i, o: gates.append((i[0].shape, o)))
    G.upsampling_blocks[-1].register_forward_hook(lambda m, i, o: blocks.update(last=o))
    G.to_rgb.register_forward_hook(lambda m, i, o: blocks.update(rgb_in=i[0]))
    with torch.no_grad():
        G(torch.randn(2, 8), LABELS[:2])
    (source_shape, gate), = gates
    assert source_shape == (2, ag.generator_width(16, 16), 16, 16)
    assert gate.shape == (2, ag.generator_width(128, 16), 1, 1)
    torch.testing.assert_close(blocks["rgb_in"], blocks["last"] * gate)


@pytest.mark.parametrize("size, full, quadrant", [(32, 32, 16), (64, 64, 32), (128, 128, 64)])
def test_decoder_outputs_and_targets(size, full, quadrant):
    D = build(image_size=size, attention_sizes=None, sle_pairs=None).discriminator
    x = torch.rand(2, 3, size, size) * 2 - 1
    torch.manual_seed(3)
    decoded = D(x, LABELS[:2])["reconstruct"]()
    (recon_full, target_full), (recon_q, target_q) = decoded["full"], decoded["quadrant"]
    assert recon_full.shape == target_full.shape == (2, 3, full, full)
    assert recon_q.shape == target_q.shape == (2, 3, quadrant, quadrant)
    row, col = divmod(decoded["quadrant_index"], 2)
    half = size // 2
    expected_q = F.interpolate(x[..., row * half:(row + 1) * half, col * half:(col + 1) * half], size=quadrant)
    torch.testing.assert_close(target_q, expected_q)
    torch.testing.assert_close(target_full, F.interpolate(x, size=full))
    assert "quadrant" not in build(image_size=size, quadrant_decoder=False).discriminator(x, LABELS[:2])["reconstruct"]()


# --------------------------------------------------------------------------- projection and attribute vector


def test_projection_term_is_the_only_label_dependence():
    D = build().discriminator
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    other = LABELS.clone()
    other[:, 0] = (other[:, 0] + 1) % 4
    other[:, 4] = (other[:, 4] + 2) % 4
    a, b = D(x, LABELS), D(x, other)
    ff = D.logits.attribute_feedforward
    expected = ((ff(COND.one_hot(LABELS)) - ff(COND.one_hot(other))) * a["phi"]).sum(1)
    torch.testing.assert_close(a["source"] - b["source"], expected)
    assert (expected.abs() > 1e-4).all()
    torch.testing.assert_close(a["phi"], b["phi"])


def test_elementwise_projection_of_the_code():
    D = build(projection="elementwise").discriminator
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    other = LABELS.flip(0)
    a, b = D(x, LABELS)["scores"][0], D(x, other)["scores"][0]
    s = a / (1 + COND.one_hot(LABELS))                      # score = s + y (.) s
    assert a.shape == (4, COND.dim)
    torch.testing.assert_close(a - b, (COND.one_hot(LABELS) - COND.one_hot(other)) * s)


def test_attribute_input_gets_the_one_hot_layout_of_mixed_level_counts():
    G = build().generator.eval()
    seen = []
    G.attribute_input.register_forward_hook(lambda m, i, o: seen.append(i[0][:, :, 0, 0]))
    with torch.no_grad():
        G(torch.randn(4, 8), LABELS)
    assert COND.dim == 16 and COND.offsets == (0, 4, 7, 10, 12) and G.num_classes == 16
    expected = torch.zeros(4, 16)
    for i, row in enumerate(LABELS.tolist()):
        for offset, level in zip((0, 4, 7, 10, 12), row):
            expected[i, offset + level] = 1
    assert torch.equal(seen[0], expected)
    assert G.attribute_input[0].in_channels == 16


def test_changing_one_attribute_level_changes_the_image():
    G = build().generator.eval()
    z = torch.randn(4, G.latent_dim)
    changed = LABELS.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 3
    with torch.no_grad():
        a, b, again = G(z, LABELS), G(z, changed), G(z, LABELS)
    assert torch.equal(a, again)
    assert (a - b).flatten(1).abs().amax(1).min() > 1e-4


# --------------------------------------------------------------------------- shapes, switches, config


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("code", [False, True])
def test_shapes(size, code):
    over = dict(projection="elementwise", attribute_activation="relu", d_attention=False, low_resolution_branch=True,
                output_tanh=True) if code else {}
    parts = build(image_size=size, attention_sizes=None, sle_pairs=None, **over)
    G, D = parts.generator, parts.discriminator
    assert (G.latent_dim, G.num_classes, G.image_size, G.condition) == (8, 16, size, COND)
    x = G(torch.randn(4, 8), LABELS)
    assert x.shape == (4, 3, size, size)
    if code:
        assert x.abs().max() <= 1
    out = D(x, LABELS)
    assert out["source"].shape == (4,) and out["class_logits"] is None
    assert [s.shape for s in out["scores"]] == ([(4, 16), (4, 16)] if code else [(4, 1)])
    assert out["features"].shape == out["proxy"].shape == (4, 16)
    torch.testing.assert_close(out["features"].norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out["proxy"].norm(dim=1), torch.ones(4))


def params_under(module, prefixes) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefixes))


def test_ablation_switches_remove_exactly_their_part():
    base = dict(attention_sizes=[8, 16], low_resolution_branch=True)
    full = build(**base)
    G, D = full.generator, full.discriminator
    attention_g = ag.count_parameters(G.attention)
    attention_d = ag.count_parameters(D.attention) + ag.count_parameters(D.low_resolution.attention)
    assert attention_g > 0 and ag.count_parameters(D.attention) > 0 and attention_d > ag.count_parameters(D.attention)
    heads = ag.count_parameters(D.feature_projector) + ag.count_parameters(D.attribute_projector)
    assert heads > 0

    no_ea = build(**base, efficient_attention=False)
    assert ag.count_parameters(no_ea.generator) == ag.count_parameters(G) - attention_g
    assert ag.count_parameters(no_ea.discriminator) == ag.count_parameters(D) - attention_d
    assert not any(isinstance(m, ag.EfficientAttention) for net in (no_ea.generator, no_ea.discriminator) for m in net.modules())
    g_keys = {k for k in G.state_dict() if not k.startswith("attention.")}
    d_keys = {k for k in D.state_dict() if not k.startswith(("attention.", "low_resolution.attention."))}
    assert set(no_ea.generator.state_dict()) == g_keys and set(no_ea.discriminator.state_dict()) == d_keys

    for switch in (dict(contrastive=False), dict(ccl_weight=0)):
        no_ccl = build(**base, **switch)
        assert ag.count_parameters(no_ccl.generator) == ag.count_parameters(G)
        assert ag.count_parameters(no_ccl.discriminator) == ag.count_parameters(D) - heads
        assert set(no_ccl.discriminator.state_dict()) == {
            k for k in D.state_dict() if not k.startswith(("feature_projector.", "attribute_projector."))}
        out = no_ccl.discriminator(torch.rand(4, 3, 32, 32), LABELS)
        assert out["features"] is None and out["proxy"] is None
        _, terms = no_ccl.objective.generator_loss(no_ccl.discriminator, torch.rand(4, 3, 32, 32), LABELS)
        assert "g_ccl" not in terms
    # the paper's D attention: only the trunk's modules go with d_attention: false
    code_d = build(**base, d_attention=False).discriminator
    assert ag.count_parameters(code_d) == ag.count_parameters(D) - ag.count_parameters(D.attention)


def test_losses_are_the_stated_sums():
    parts = build(ccl_weight=0.5, recon_weight=2.0)
    D, obj = parts.discriminator, parts.objective
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(5)
    d_loss, terms = obj.discriminator_loss(D, real, fake, LABELS)
    torch.manual_seed(5)  # the same quadrant
    out_r, out_f = D(real, LABELS), D(fake, LABELS)
    hinge = F.relu(1 - out_r["source"]).mean() + F.relu(1 + out_f["source"]).mean()  # real pushed high
    decoded = out_r["reconstruct"]()
    recon = F.mse_loss(*decoded["full"]) + F.mse_loss(*decoded["quadrant"])
    ccl = ago.conditional_contrastive_loss(out_r["features"], out_r["proxy"], COND.contrastive_class(LABELS))
    torch.testing.assert_close(d_loss, hinge + 2.0 * recon + 0.5 * ccl)
    assert set(terms) == {"d_adv", "d_recon", "d_ccl", "d_loss"} and all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    g_loss, g_terms = obj.generator_loss(D, fake, LABELS)
    out = D(fake, LABELS)
    g_ccl = ago.conditional_contrastive_loss(out["features"], out["proxy"], COND.contrastive_class(LABELS))
    torch.testing.assert_close(g_loss, -out["source"].mean() + 0.5 * g_ccl)
    assert set(g_terms) == {"g_adv", "g_ccl", "g_loss"}


@pytest.mark.parametrize("over, key", [
    (dict(image_size=96), "image_size"),
    (dict(image_size=48), "image_size"),
    (dict(loss="wgan-gp"), "loss"),
    (dict(attribute_activation="gelu"), "attribute_activation"),
    (dict(projection="concat"), "projection"),
    (dict(efficient_attention="yes"), "efficient_attention"),
    (dict(attention_sizes=[32]), "attention_sizes"),
    (dict(sle_pairs=[[16, 8]]), "sle_pairs"),
    (dict(sle_pairs=[[8, 32], [16, 32]]), "sle_pairs"),
    (dict(temperature=0), "temperature"),
    (dict(ccl_weight=-1), "ccl_weight"),
    (dict(g_channels=0), "g_channels"),
    (dict(latent_dim=2.5), "latent_dim"),
    (dict(contrastive_dim=None), "contrastive_dim"),
])
def test_bad_config_keys_name_the_key(over, key):
    with pytest.raises(PipelineError, match=rf"generators\.ag\.{key}\b"):
        build_generator(tiny_cfg(**over), COND, name="ag")


def test_family_is_registered_for_attributes_only():
    assert "attributegan" in available_families()
    with pytest.raises(PipelineError, match=r"generators\.ag\.condition='class'"):
        build_generator(tiny_cfg(), 2, name="ag")
    parts = build_generator(tiny_cfg(), COND, name="ag")
    assert parts.trainer == "adversarial" and parts.augment is None
    assert isinstance(parts.objective, ago.AttributeGANObjective)
    assert parts.objective.generator_parameters() == [] == parts.objective.discriminator_parameters()


# --------------------------------------------------------------------------- the shared loop


@pytest.fixture(scope="module")
def patches(real_patches):
    """32 real patches with attribute rows from four combinations (so the CCL has positives)."""
    combos = np.array([[0, 1, 2, 1, 3], [3, 0, 0, 0, 1], [1, 2, 1, 1, 0], [2, 2, 1, 0, 2]])
    return real_patches[:32], combos[np.arange(32) % 4]


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, patches):
    x, y = patches
    straight = tmp_path / "a" / "g.pt"
    first = train_generator("ag", tiny_cfg(steps=4), x, y, COND, straight, tmp_path / "a" / "state", CPU)
    assert first["steps_run"] == 4
    split = tmp_path / "b" / "g.pt"
    train_generator("ag", tiny_cfg(steps=2), x, y, COND, split, tmp_path / "b" / "state", CPU)
    second = train_generator("ag", tiny_cfg(steps=4), x, y, COND, split, tmp_path / "b" / "state", CPU)
    assert second["resumed_from"] == 2 and second["steps_run"] == 2

    a = torch.load(straight, map_location="cpu", weights_only=True)
    b = torch.load(split, map_location="cpu", weights_only=True)
    for key in ("generator_state", "discriminator_state", "objective_state"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    history = pd.read_csv(straight.parent / "history.csv")
    pd.testing.assert_frame_equal(history, pd.read_csv(split.parent / "history.csv"))
    assert {"d_adv", "d_recon", "d_ccl", "d_loss", "g_adv", "g_ccl", "g_loss"} <= set(history.columns)
    assert np.isfinite(history.drop(columns="step").to_numpy()).all()

    G = load_generator(straight)
    with torch.no_grad():
        images = G(torch.randn(3, 8), torch.from_numpy(y[:3]))
    assert images.shape == (3, 3, 32, 32) and G.condition == COND
