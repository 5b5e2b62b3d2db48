"""HViTGAN generator, discriminator and their building blocks (models/hvitgan.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from histaug.utils import PipelineError
from models.hvitgan import (
    DEMO_CONFIG,
    HVITGAN_DEFAULTS,
    PAPER_CONFIG,
    HViTGANDiscriminator,
    HViTGANGenerator,
    build_hvitgan,
    build_medvitgan,
    count_parameters,
    resolve_config,
)
from models.vit_layers import ConditionalLayerNorm, GridAttention, TransformerEncoder, window_merge, window_partition

# Small enough for CPU tests; C = 128 gives stage widths 128, 32, 8, 2.
SMALL_G = dict(embed_dim=128, depth=1, heads=[2, 2, 2, 1], latent_dim=16)


def small_generator(image_size: int, num_classes: int = 2, **kw) -> HViTGANGenerator:
    torch.manual_seed(0)
    return HViTGANGenerator(num_classes, image_size=image_size, **{**SMALL_G, **kw}).eval()


def inputs(g: HViTGANGenerator, batch: int = 2, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, g.latent_dim, generator=gen)
    labels = torch.arange(batch) % g.num_classes
    return z, labels


# --------------------------------------------------------------------------- generator shapes


@pytest.mark.parametrize(
    "image_size, expected",
    [
        (32, [(128, 4, 4), (32, 8, 8), (8, 16, 16), (2, 32, 32)]),
        (96, [(128, 12, 12), (32, 24, 24), (8, 48, 48), (2, 96, 96)]),
    ],
)
def test_generator_stage_shapes(image_size, expected):
    g = small_generator(image_size)
    z, labels = inputs(g)
    with torch.no_grad():
        image, stages = g(z, labels, return_stages=True)
    assert [tuple(s.shape[1:]) for s in stages] == expected
    assert g.stage_shapes() == expected
    assert image.shape == (2, 3, image_size, image_size)
    assert image.abs().max() <= 1.0
    assert torch.isfinite(image).all()


def test_generator_contract_attributes_and_64px():
    g = small_generator(64, num_classes=3)
    assert (g.latent_dim, g.num_classes, g.image_size) == (16, 3, 64)
    z, labels = inputs(g, batch=3)
    with torch.no_grad():
        out = g(z, labels)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 3, 64, 64)


def test_default_windows_divide_stage_sides():
    assert small_generator(96).windows == [None, None, 24, 16]
    assert small_generator(32).windows == [None, None, 8, 16]
    g128 = HViTGANGenerator(2, image_size=128, embed_dim=64, depth=1, heads=1, latent_dim=8)
    assert g128.windows == [None, None, 32, 16]  # the paper's windows at 128 px


def test_window_that_does_not_divide_is_rejected():
    # The paper's 32×32 stage-3 window on the 48-px stage 3 of a 96-px image.
    with pytest.raises(PipelineError, match="does not divide"):
        HViTGANGenerator(2, image_size=96, windows=[None, None, 32, 16], **SMALL_G)
    g = HViTGANGenerator(2, image_size=96, windows=[None, None, 16, 32], **SMALL_G)
    assert g.windows == [None, None, 16, 32]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=40), "multiple of 16"),
        (dict(image_size=96, bottom=8), "disagree"),
        (dict(image_size=32, embed_dim=96), "multiple of 64"),
        (dict(image_size=32, latent_dim=18), "divisible by 4"),
        (dict(image_size=32, heads=4), "heads"),
        (dict(image_size=32, depth=[1, 1]), "g_depth"),
    ],
)
def test_generator_rejects_bad_settings(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        HViTGANGenerator(2, **{**SMALL_G, **kwargs})


def test_generator_rejects_bad_inputs():
    g = small_generator(32)
    z, labels = inputs(g)
    with pytest.raises(PipelineError, match="labels must lie"):
        g(z, torch.tensor([0, 2]))
    with pytest.raises(PipelineError, match="z of shape"):
        g(z[:, :-1], labels)


# --------------------------------------------------------------------------- conditioned class projection


def test_conditional_layer_norm_matches_equation_1():
    torch.manual_seed(0)
    cln = ConditionalLayerNorm(dim=8, cond_dim=5)
    x = torch.randn(3, 4, 8)
    cond = torch.randn(3, 5)
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    gamma = 1 + cond @ cln.to_gamma.weight.T
    beta = cond @ cln.to_beta.weight.T
    expected = (x - mu) / torch.sqrt(var + cln.norm.eps) * gamma[:, None] + beta[:, None]
    torch.testing.assert_close(cln(x, cond), expected)


def test_conditional_layer_norm_starts_as_plain_layer_norm():
    cln = ConditionalLayerNorm(dim=8, cond_dim=5)
    nn.init.zeros_(cln.to_gamma.weight)
    nn.init.zeros_(cln.to_beta.weight)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(cln(x, torch.randn(2, 5)), nn.functional.layer_norm(x, (8,), eps=1e-6))


def test_gamma_beta_depend_on_class_and_on_own_z_chunk_only():
    g = small_generator(32)
    z, _ = inputs(g, batch=1)
    labels0, labels1 = torch.tensor([0]), torch.tensor([1])
    base = g.stage_conditions(z, labels0)
    other_class = g.stage_conditions(z, labels1)
    for stage, c0, c1 in zip(g.stages, base, other_class):
        gb0, gb1 = stage.class_projection.gamma_beta(c0), stage.class_projection.gamma_beta(c1)
        assert not torch.allclose(gb0[0], gb1[0]) and not torch.allclose(gb0[1], gb1[1])
    chunk = g.latent_dim // 4
    for i in range(4):
        z2 = z.clone()
        z2[:, i * chunk : (i + 1) * chunk] += 1.0
        changed = g.stage_conditions(z2, labels0)
        for j, (stage, c_old, c_new) in enumerate(zip(g.stages, base, changed)):
            gamma_old, beta_old = stage.class_projection.gamma_beta(c_old)
            gamma_new, beta_new = stage.class_projection.gamma_beta(c_new)
            if i == j:
                assert not torch.allclose(gamma_old, gamma_new) and not torch.allclose(beta_old, beta_new)
            else:
                assert torch.equal(gamma_old, gamma_new) and torch.equal(beta_old, beta_new)


def test_changing_class_changes_image_for_fixed_z():
    g = small_generator(32)
    z, _ = inputs(g, batch=1)
    with torch.no_grad():
        a, b = g(z, torch.tensor([0])), g(z, torch.tensor([1]))
    assert (a - b).abs().max() > 1e-4


def _cut_z_from_input_projection(g: HViTGANGenerator) -> None:
    """Zero the input projection's weights on z, so z can reach the image only through skip-z."""
    with torch.no_grad():
        g.input_proj.weight[:, : g.latent_dim] = 0.0


@pytest.mark.parametrize("chunk_index", [0, 1, 2, 3])
def test_each_skip_z_chunk_reaches_the_image(chunk_index):
    g = small_generator(32)
    _cut_z_from_input_projection(g)
    z, labels = inputs(g, batch=1)
    chunk = g.latent_dim // 4
    z2 = z.clone()
    z2[:, chunk_index * chunk : (chunk_index + 1) * chunk] += 1.0
    with torch.no_grad():
        diff = (g(z, labels) - g(z2, labels)).abs().max()
    assert diff > 1e-4


def test_without_class_projection_there_is_no_cln_and_no_skip_z():
    g = small_generator(32, class_projection=False)
    assert not any(isinstance(m, ConditionalLayerNorm) for m in g.modules())
    assert all(type(s.class_projection) is nn.LayerNorm for s in g.stages)
    z, labels = inputs(g, batch=1)
    assert g.stage_conditions(z, labels) == [None] * 4
    _cut_z_from_input_projection(g)
    with torch.no_grad():
        same = torch.equal(g(z, labels), g(torch.randn_like(z), labels))
        class_matters = (g(z, torch.tensor([0])) - g(z, torch.tensor([1]))).abs().max() > 1e-4
    assert same, "z must enter only through the input projection in the CP ablation"
    assert class_matters, "the label must still enter at the input projection"


def test_class_projection_adds_one_cln_per_stage():
    g = small_generator(32)
    clns = [m for m in g.modules() if isinstance(m, ConditionalLayerNorm)]
    assert len(clns) == 4
    assert [m.cond_dim for m in clns] == [2 + 4] * 4  # one-hot c (2) + z chunk (16 / 4)


# --------------------------------------------------------------------------- grid attention


def test_window_partition_round_trip():
    x = torch.randn(2, 8 * 8, 3)
    w = window_partition(x, (8, 8), 4)
    assert w.shape == (2 * 4, 16, 3)
    # first window of the first image = rows 0-3, cols 0-3
    grid = x.reshape(2, 8, 8, 3)
    assert torch.equal(w[0], grid[0, :4, :4].reshape(16, 3))
    assert torch.equal(window_merge(w, (8, 8), 4), x)


@pytest.mark.parametrize("module_cls", [GridAttention, TransformerEncoder])
def test_grid_attention_mixes_tokens_only_within_a_window(module_cls):
    torch.manual_seed(0)
    side, window = 8, 4
    block = module_cls(16, 2, window=window).eval()
    x = torch.randn(1, side * side, 16)
    row, col = 5, 2  # in the window covering rows 4-7, cols 0-3
    x2 = x.clone()
    x2[0, row * side + col] += torch.randn(16)  # not a constant shift, which LayerNorm would remove
    with torch.no_grad():
        y, y2 = block(x, (side, side)), block(x2, (side, side))
    changed = (y - y2).abs().amax(-1).reshape(side, side) > 0
    in_window = torch.zeros(side, side, dtype=torch.bool)
    in_window[4:8, 0:4] = True
    assert not changed[~in_window].any(), "a token outside the perturbed token's window changed"
    assert changed[in_window].all(), "every token of the window should see the perturbed token"


def test_global_attention_mixes_all_tokens():
    torch.manual_seed(0)
    block = GridAttention(16, 2, window=None).eval()
    x = torch.randn(1, 64, 16)
    x2 = x.clone()
    x2[0, 0] += torch.randn(16)
    with torch.no_grad():
        assert ((block(x, (8, 8)) - block(x2, (8, 8))).abs().amax(-1) > 0).all()


# --------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("image_size, windows", [(32, [None, None, None]), (96, [16, None, None])])
def test_discriminator_outputs(image_size, windows):
    torch.manual_seed(0)
    d = HViTGANDiscriminator(3, image_size=image_size, patch_size=2, embed_dim=64, depth=1, heads=2)
    assert d.windows == windows
    out = d(torch.rand(4, 3, image_size, image_size) * 2 - 1)
    assert set(out) == {"source", "class_logits"}
    assert out["source"].shape == (4,)
    assert out["class_logits"].shape == (4, 3)
    assert torch.isfinite(out["source"]).all() and torch.isfinite(out["class_logits"]).all()


def test_discriminator_ignores_labels():
    torch.manual_seed(0)
    d = HViTGANDiscriminator(2, image_size=32, patch_size=2, embed_dim=32, depth=1, heads=2).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain, with_a, with_b = d(x), d(x, torch.tensor([0, 0])), d(x, torch.tensor([1, 1]))
    for key in ("source", "class_logits"):
        assert torch.equal(plain[key], with_a[key]) and torch.equal(with_a[key], with_b[key])


def test_discriminator_supports_the_gradient_penalty():
    torch.manual_seed(0)
    d = HViTGANDiscriminator(2, image_size=32, patch_size=2, embed_dim=32, depth=1, heads=2)
    x_hat = torch.rand(3, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x_hat)["source"].sum(), x_hat, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    penalty.backward()
    assert d.source_head.weight.grad is not None and d.source_head.weight.grad.abs().sum() > 0
    assert torch.isfinite(d.patch_embeds[0].weight.grad).all() and d.patch_embeds[0].weight.grad.abs().sum() > 0


def test_discriminator_rejects_bad_sizes():
    with pytest.raises(PipelineError, match="multiple of 8"):
        HViTGANDiscriminator(2, image_size=40, patch_size=2, embed_dim=64, depth=1, heads=2)
    d = HViTGANDiscriminator(2, image_size=32, patch_size=2, embed_dim=64, depth=1, heads=2)
    with pytest.raises(PipelineError, match="expects images"):
        d(torch.zeros(1, 3, 64, 64))


def test_discriminator_multi_scale_widths():
    d = HViTGANDiscriminator(2, image_size=32, patch_size=2, embed_dim=64, depth=1, heads=2)
    assert [m.out_features for m in d.patch_embeds] == [48, 8, 8]
    assert [m.in_features for m in d.patch_embeds] == [3 * 2 * 2, 3 * 4 * 4, 3 * 8 * 8]
    assert [p.shape[1:] for p in d.pos_embeds] == [(256, 48), (64, 56), (16, 64)]


# --------------------------------------------------------------------------- factory


def test_build_hvitgan_and_medvitgan_from_config():
    cfg = {**DEMO_CONFIG, "family": "hvitgan", "lr": 1e-4}  # training keys are ignored
    g, d = build_hvitgan(cfg, num_classes=2)
    assert isinstance(g, HViTGANGenerator) and isinstance(d, HViTGANDiscriminator)
    assert g.image_size == d.image_size == 32 and g.class_projection
    without_cp_key = {k: v for k, v in cfg.items() if k != "class_projection"}
    mg, md = build_medvitgan(without_cp_key, 2)
    assert not mg.class_projection
    assert not any(isinstance(m, ConditionalLayerNorm) for m in mg.modules())
    assert md.class_head.out_features == 2  # the auxiliary classifier is kept
    with pytest.raises(PipelineError, match="MedViTGAN"):
        build_medvitgan(cfg, 2)
    assert count_parameters(mg) < count_parameters(g)
    z = torch.randn(2, g.latent_dim)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        out = d(g(z, labels))
    assert out["source"].shape == (2,) and out["class_logits"].shape == (2, 2)


def test_resolve_config_fills_defaults():
    p = resolve_config({"image_size": 64})
    assert set(p) == set(HVITGAN_DEFAULTS)
    assert p["image_size"] == 64 and p["embed_dim"] == HVITGAN_DEFAULTS["embed_dim"]
    assert PAPER_CONFIG["image_size"] == 96 and PAPER_CONFIG["class_projection"] is True
