"""BigGAN (Brock et al. 2019) as a registered class-conditional family: architecture, conditioning,
spectral norm, projection discriminator, hinge loss, orthogonal regularisation, exact resume."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import models.biggan  # noqa: F401  (registers the family until models/__init__.py imports it)
from histaug.gan_trainers import build_trainer
from histaug.generator_checkpoint import load_discriminator, load_generator
from histaug.train_generator import train_generator
from histaug.utils import PipelineError
from models import Condition, available_families, build_generator, get_family
from models.biggan import (
    BigGANGenerator,
    BigGANObjective,
    ConditionalBatchNorm2d,
    SelfAttention,
    count_parameters,
    is_spectral_normed,
    orthogonal_penalty,
)

from conftest import alternating_labels  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}


def tiny_cfg(**over) -> dict:
    """A 32-px BigGAN with 8-channel blocks and BigGAN's optimiser settings, fast enough for tests."""
    return {"family": "biggan", "image_size": 32, "channels": 2, "latent_dim": 16, "shared_dim": 8,
            "attention": 16, "ortho_weight": 1e-4, "batch_size": 4, "lr": 2e-4, "g_lr": 5e-5, "d_lr": 2e-4,
            "betas": [0.0, 0.999], "n_critic": 2, "ema_decay": 0.9, "steps": 4, "checkpoint_every": 2,
            "log_every": 1, "seed": 0, "keep_state": True, **over}


def tiny_parts(num_classes: int = 3, **over):
    torch.manual_seed(0)
    return build_generator(tiny_cfg(**over), num_classes, name="bg")


def block_outputs(G: BigGANGenerator, z, labels) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The output of every generator block and the image, via forward hooks."""
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone())) for b in G.blocks]
    try:
        with torch.no_grad():
            image = G(z, labels)
    finally:
        for h in hooks:
            h.remove()
    return outs, image


# --------------------------------------------------------------------------- registration and shapes


def test_family_is_registered_class_only_and_adversarial():
    assert "biggan" in available_families()
    spec = get_family("biggan")
    assert spec.trainer == "adversarial" and spec.conditions == ("class",) and not spec.class_head
    with pytest.raises(PipelineError, match=r"generators\.bg\.condition='attributes'"):
        build_generator(tiny_cfg(), Condition.attributes(["crowding", "polarity"], [2, 3]), name="bg")


@pytest.mark.parametrize("size, n_blocks, g_attn, d_attn", [(32, 3, 16, 16), (64, 4, 16, 16)])
def test_output_shapes(size, n_blocks, g_attn, d_attn):
    parts = tiny_parts(num_classes=3, image_size=size, latent_dim=4 * (n_blocks + 1))
    G, D = parts.generator, parts.discriminator
    assert (G.latent_dim, G.num_classes, G.image_size) == (4 * (n_blocks + 1), 3, size)
    assert len(G.blocks) == n_blocks and G.n_chunks == n_blocks + 1 and G.chunk_size == 4
    assert G.stage_sides[-1] == size and G.stage_sides[G.attention_index] == g_attn
    assert D.stage_sides[D.attention_index] == d_attn
    labels = torch.tensor([0, 1, 2, 1])
    x = G(torch.randn(4, G.latent_dim), labels)
    assert x.shape == (4, 3, size, size) and x.abs().max() <= 1
    out = D(x, labels)
    assert out["source"].shape == (4,) and out["class_logits"] is None


@pytest.mark.parametrize("size, g_side, d_side", [(32, 32, 16), (64, 64, 32), (128, 64, 64), (256, 64, 64)])
def test_attention_sits_at_the_stage_closest_to_64(size, g_side, d_side):
    """BigGAN's 64×64 at >= 128 px; the closest stage below. Only the stage plan is built here."""
    from models.biggan import D_ARCH, G_ARCH, closest_stage

    g_sides = [4 * 2 ** (i + 1) for i in range(len(G_ARCH[size][1]))]
    d_sides, side = [], size
    for down in D_ARCH[size][1]:
        side //= 2 if down else 1
        d_sides.append(side)
    assert g_sides[closest_stage(g_sides, 64)] == g_side
    assert d_sides[closest_stage(d_sides, 64)] == d_side
    assert closest_stage(g_sides, None) is None
    G = BigGANGenerator(2, 32, channels=2, latent_dim=8, shared_dim=4, attention=None)
    assert G.attention is None and not any(isinstance(m, SelfAttention) for m in G.modules())


# --------------------------------------------------------------------------- conditioning


def test_conditional_bn_gains_and_biases_come_from_the_shared_embedding_and_the_z_chunk():
    G = tiny_parts().generator.eval()
    assert sum(isinstance(m, nn.Embedding) for m in G.modules()) == 1  # one shared embedding
    z, labels = torch.randn(4, G.latent_dim), torch.tensor([2, 0, 1, 2])
    seen = {}
    k = 1  # second block
    handle = G.blocks[k].bn1.register_forward_hook(lambda m, i, o: seen.update(x=i[0], cond=i[1], out=o))
    with torch.no_grad():
        G(z, labels)
        handle.remove()
        bn1: ConditionalBatchNorm2d = G.blocks[k].bn1
        chunk = z[:, (k + 1) * G.chunk_size:(k + 2) * G.chunk_size]
        cond = torch.cat([G.shared.weight[labels], chunk], dim=1)
        torch.testing.assert_close(seen["cond"], cond)
        gain = 1 + cond @ bn1.gain.weight.t()
        bias = cond @ bn1.bias.weight.t()
        normalised = (seen["x"] - bn1.bn.running_mean[:, None, None]) / torch.sqrt(bn1.bn.running_var[:, None, None] + bn1.bn.eps)
        torch.testing.assert_close(seen["out"], normalised * gain[:, :, None, None] + bias[:, :, None, None])
    assert bn1.gain.in_features == G.shared_dim + G.chunk_size and bn1.gain.bias is None


def test_changing_the_class_with_fixed_z_changes_the_image():
    G = tiny_parts().generator.eval()
    z = torch.randn(3, G.latent_dim)
    inputs = []
    handle = G.linear.register_forward_hook(lambda m, i, o: inputs.append(o.detach().clone()))
    with torch.no_grad():
        a, b = G(z, torch.tensor([0, 0, 0])), G(z, torch.tensor([1, 2, 0]))
    handle.remove()
    assert (a[:2] - b[:2]).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    torch.testing.assert_close(a[2], b[2])  # same class, same z: same image
    # the class enters through the blocks' conditional BNs only; the input layer sees z chunk 0 alone
    torch.testing.assert_close(inputs[0], inputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [0, 1, 2, 3])
def test_each_z_chunk_enters_at_its_own_block(chunk):
    """Chunk 0 feeds the input layer, chunk i the i-th block: earlier blocks do not see it."""
    G = tiny_parts().generator.eval()
    z, labels = torch.randn(2, G.latent_dim), torch.tensor([0, 1])
    z2 = z.clone()
    z2[:, chunk * G.chunk_size:(chunk + 1) * G.chunk_size] += 1.0
    before, image = block_outputs(G, z, labels)
    after, image2 = block_outputs(G, z2, labels)
    first_changed = max(chunk - 1, 0)
    for i in range(first_changed):
        torch.testing.assert_close(before[i], after[i], rtol=0, atol=0)
    assert (before[first_changed] - after[first_changed]).abs().max() > 1e-4
    assert (image - image2).abs().max() > 1e-4


# --------------------------------------------------------------------------- spectral norm and the projection


def test_spectral_norm_on_every_conv_and_linear_of_g_and_d():
    parts = tiny_parts()
    G, D = parts.generator, parts.discriminator
    for net in (G, D):
        layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert layers and all(is_spectral_normed(m) for m in layers)
    assert is_spectral_normed(D.embed) and not is_spectral_normed(G.shared)  # reference code: G's embedding plain

    # the effective weight has spectral norm 1 once the power iteration has converged
    conv = D.blocks[1].conv1
    with torch.no_grad():
        conv.parametrizations.weight.original.normal_().mul_(5.0)
        x = torch.randn(2, 3, 32, 32)
        for _ in range(50):
            D(x, torch.tensor([0, 1]))
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    assert float(sigma) == pytest.approx(1.0, rel=1e-3)


def test_projection_term_is_the_embedding_difference_times_the_features():
    D = tiny_parts(num_classes=4).discriminator.eval()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    y1, y2 = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 3, 0, 1, 2])
    with torch.no_grad():
        h = D.features(x)
        e = D.embed.weight
        d1, d2 = D(x, y1)["source"], D(x, y2)["source"]
        torch.testing.assert_close(d1 - d2, ((e[y1] - e[y2]) * h).sum(dim=1))
        torch.testing.assert_close(d1, D.linear(h).squeeze(1) + (e[y1] * h).sum(dim=1))
        # h is sum-pooled after a ReLU
        assert (h >= 0).all() and h.shape == (5, D.widths[-1])


# --------------------------------------------------------------------------- losses


def test_orthogonal_penalty_of_a_small_matrix():
    W = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)  # 3 filters (rows)
    # Gram of the filters [[5, 11, 17], [11, 25, 39], [17, 39, 61]]; off-diagonal squares 2·(11² + 17² + 39²)
    penalty = orthogonal_penalty(W)
    assert float(penalty.detach()) == pytest.approx(2 * (11**2 + 17**2 + 39**2))
    (grad,) = torch.autograd.grad(penalty, W)
    gram = W.detach() @ W.detach().t()
    torch.testing.assert_close(grad, 4 * (gram * (1 - torch.eye(3))) @ W.detach())
    # a conv weight counts its filters as rows of (out, in·k·k)
    conv = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(orthogonal_penalty(conv), orthogonal_penalty(conv.reshape(4, -1)))
    # orthonormal filters cost nothing
    assert float(orthogonal_penalty(torch.eye(3))) == 0.0


def test_orthogonal_regularisation_covers_g_weights_but_not_embeddings_biases_or_bn():
    parts = tiny_parts()
    G, obj = parts.generator, parts.objective
    assert isinstance(obj, BigGANObjective) and obj.ortho_weight == 1e-4
    # the objective keeps G outside its module tree: no duplicate state
    assert list(obj.children()) == [] and obj.state_dict() == {} and obj.generator is G

    expected = {}
    for name, m in G.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            expected[f"{name}.parametrizations.weight.original"] = m.parametrizations.weight.original
    from models.biggan import orthogonally_regularised
    assert {n for n, _ in orthogonally_regularised(G)} == set(expected)
    direct = 1e-4 * sum(orthogonal_penalty(w) for w in expected.values())
    torch.testing.assert_close(obj.orthogonal_regularisation(), direct)

    before = obj.orthogonal_regularisation()
    with torch.no_grad():
        G.shared.weight.mul_(3.0).add_(1.0)               # the shared embedding
        G.blocks[0].conv1.bias.add_(1.0)                  # a bias
        G.output_bn.weight.add_(1.0)                      # a BN gain
        G.output_bn.bias.add_(1.0)
        G.attention.gamma.add_(1.0)                       # the attention gain
    torch.testing.assert_close(obj.orthogonal_regularisation(), before, rtol=0, atol=0)
    with torch.no_grad():  # orthogonal init: filters orthonormal, so perturb them
        G.blocks[0].conv1.parametrizations.weight.original.add_(torch.randn(8, 8, 3, 3))
    assert float(obj.orthogonal_regularisation().detach()) > float(before.detach())


def scores_in_pixel(x, labels):
    """A stub discriminator whose score is the image's first pixel."""
    return {"source": x[:, 0, 0, 0], "class_logits": None}


def images_with_scores(scores):
    x = torch.zeros(len(scores), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(scores)
    return x


def test_hinge_loss_on_known_scores():
    real, fake = images_with_scores([2.0, 0.5, -1.0]), images_with_scores([-2.0, 0.3, 1.0])
    labels = torch.tensor([0, 1, 0])
    obj = BigGANObjective(None)
    d_loss, d_terms = obj.discriminator_loss(scores_in_pixel, real, fake, labels)
    # E[relu(1 - D(x))] = (0 + 0.5 + 2)/3, E[relu(1 + D(G(z)))] = (0 + 1.3 + 2)/3
    assert float(d_loss) == pytest.approx(2.5 / 3 + 3.3 / 3)
    assert float(d_terms["d_adv"]) == pytest.approx(2.5 / 3 + 3.3 / 3)
    assert float(d_terms["d_real"]) == pytest.approx(0.5) and float(d_terms["d_fake"]) == pytest.approx(-0.7 / 3)
    g_loss, g_terms = obj.generator_loss(scores_in_pixel, fake, labels)
    assert float(g_loss) == pytest.approx(0.7 / 3) and "g_ortho" not in g_terms
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in {**d_terms, **g_terms}.values())

    # with a generator, the G loss adds exactly the orthogonal regularisation
    G = tiny_parts().generator
    obj = BigGANObjective(G, ortho_weight=1e-4)
    g_loss, g_terms = obj.generator_loss(scores_in_pixel, fake, labels)
    torch.testing.assert_close(g_loss, torch.tensor(0.7 / 3) + obj.orthogonal_regularisation())
    assert float(g_terms["g_ortho"]) > 0 and float(g_terms["g_adv"]) == pytest.approx(0.7 / 3)
    g_loss.backward()
    assert G.blocks[0].conv1.parametrizations.weight.original.grad is not None
    assert G.shared.weight.grad is None


def test_trainer_uses_the_biggan_optimiser_settings():
    parts = tiny_parts()
    trainer = build_trainer("bg", tiny_cfg(), parts, CPU)
    assert trainer.n_critic == 2 and trainer.ema is not None
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [5e-5]
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [2e-4]
    assert trainer.opt_g.param_groups[0]["betas"] == (0.0, 0.999)
    x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    terms = trainer.step(lambda: (x, y))
    assert {"d_adv", "d_loss", "g_adv", "g_ortho", "g_loss", "d_grad_norm", "g_grad_norm"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())


def test_a_bf16_step_is_finite():
    parts = tiny_parts()
    compute = {**CPU, "precision": {"generators": "bf16"}}
    trainer = build_trainer("bg", tiny_cfg(), parts, compute)
    x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    terms = trainer.step(lambda: (x, y))
    assert all(torch.isfinite(v) for v in terms.values())


# --------------------------------------------------------------------------- training through the shared loop


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, real_patches):
    x, y = real_patches[:16], alternating_labels(16)
    straight = tmp_path / "a" / "g.pt"
    train_generator("bg", tiny_cfg(steps=4), x, y, 2, straight, tmp_path / "a" / "state", CPU)
    split = tmp_path / "b" / "g.pt"
    first = train_generator("bg", tiny_cfg(steps=2), x, y, 2, split, tmp_path / "b" / "state", CPU)
    second = train_generator("bg", tiny_cfg(steps=4), x, y, 2, split, tmp_path / "b" / "state", CPU)
    assert first["steps_run"] == 2 and second["resumed_from"] == 2 and second["steps_run"] == 2

    a = torch.load(straight, map_location="cpu", weights_only=True)
    b = torch.load(split, map_location="cpu", weights_only=True)
    for key in ("generator_state", "discriminator_state", "objective_state"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    assert a["objective_state"] == {}  # G's weights are not duplicated in the objective
    assert any(k.endswith("_u") for k in a["discriminator_state"])  # spectral-norm vectors are saved
    sa = torch.load(tmp_path / "a" / "state" / "last.pt", map_location="cpu", weights_only=True)["trainer"]
    sb = torch.load(tmp_path / "b" / "state" / "last.pt", map_location="cpu", weights_only=True)["trainer"]
    for key in ("generator", "discriminator", "ema"):
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), f"trainer {key}.{k} differs"
    hist_a, hist_b = pd.read_csv(straight.parent / "history.csv"), pd.read_csv(split.parent / "history.csv")
    pd.testing.assert_frame_equal(hist_a, hist_b)
    assert {"d_adv", "g_adv", "g_ortho", "g_loss"} <= set(hist_a.columns)
    assert np.isfinite(hist_a.drop(columns="step").to_numpy()).all()

    G, D = load_generator(split), load_discriminator(split)
    with torch.no_grad():
        images = G(torch.randn(3, G.latent_dim), torch.tensor([0, 1, 1]))
    assert images.shape == (3, 3, 32, 32) and D(images, torch.tensor([0, 1, 1]))["source"].shape == (3,)


# --------------------------------------------------------------------------- sizes and config


def test_parameter_counts_grow_quadratically_with_channels():
    """At 32 px every block is 4ch wide: G's ch² coefficient is 3 blocks × (9+9+1)·16 plus the 16×16
    attention block (θ, φ: 4ch·ch/2; g: 4ch·2ch; o: 2ch·4ch) = 912 + 20; D's is 144 (first block's
    second conv) + 304 (block 2 with its 1×1 skip) + 2·288 + 20 (attention) = 1044."""

    def counts(ch: int, d_ch: int | None = None) -> tuple[int, int]:
        parts = build_generator(tiny_cfg(channels=ch, d_channels=d_ch), 3, name="bg")
        return count_parameters(parts.generator), count_parameters(parts.discriminator)

    (g8, d8), (g16, d16), (g24, d24) = counts(8), counts(16), counts(24)
    assert g8 < g16 < g24 and d8 < d16 < d24
    # second difference of a·ch² + b·ch + c over steps of 8 is 2·a·64
    assert (g24 - 2 * g16 + g8) == 2 * 932 * 64
    assert (d24 - 2 * d16 + d8) == 2 * 1044 * 64
    # d_channels scales D alone
    g, d = counts(8, d_ch=16)
    assert (g, d) == (g8, d16)


def test_paper_latent_sizes():
    from models.biggan import default_latent_dim

    assert [default_latent_dim(s) for s in (32, 64, 128, 256, 512)] == [80, 100, 120, 140, 128]
    G = BigGANGenerator(2, 64, channels=1, shared_dim=4)
    assert (G.latent_dim, G.chunk_size) == (100, 20)


@pytest.mark.parametrize(
    "over, key",
    [
        (dict(image_size=96), "image_size"),
        (dict(image_size=None), "image_size"),
        (dict(channels=0), "channels"),
        (dict(channels=2.5), "channels"),
        (dict(d_channels=-1), "d_channels"),
        (dict(latent_dim=18), "latent_dim"),
        (dict(shared_dim=0), "shared_dim"),
        (dict(attention=48), "attention"),
        (dict(attention="64"), "attention"),
        (dict(ortho_weight=-1e-4), "ortho_weight"),
        (dict(loss="wgan-gp"), "loss"),
    ],
)
def test_bad_keys_name_the_key(over, key):
    with pytest.raises(PipelineError, match=rf"generators\.bg\.{key}"):
        build_generator(tiny_cfg(**over), 2, name="bg")


def test_attention_off_and_defaults():
    parts = build_generator({"family": "biggan", "image_size": 32, "channels": 1, "attention": None}, 2, name="bg")
    assert parts.generator.attention is None and parts.discriminator.attention is None
    assert parts.generator.latent_dim == 80 and parts.generator.shared_dim == 128
    assert parts.objective.ortho_weight == 1e-4
