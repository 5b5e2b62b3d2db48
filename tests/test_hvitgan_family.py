"""HViTGAN / MedViTGAN as registered families: losses ([H] §2.4), training, checkpoints, head selector."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from histaug.selectors import load_selector
from histaug.gan_trainers import build_trainer
from histaug.generator_checkpoint import load_discriminator, load_generator
from histaug.train_generator import prepare_images, to_model_range, train_generator
from histaug.utils import PipelineError
from models import available_families, build_generator
from models.diffaug import PAPER_POLICY, DiffAugment
from models.hvitgan import DEMO_CONFIG
from models.hvitgan_objective import HViTGANObjective
from models.vit_layers import ConditionalLayerNorm

from conftest import alternating_labels  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}


def family_cfg(family: str = "hvitgan", **over) -> dict:
    """The demo model shrunk further (C = 64, z of 16) with the paper's optimiser settings."""
    cfg = {k: v for k, v in DEMO_CONFIG.items() if not (family == "medvitgan" and k == "class_projection")}
    cfg.update(
        family=family, embed_dim=64, latent_dim=16, g_depth=1, batch_size=4, n_critic=1, lr=1e-4,
        betas=[0.0, 0.99], steps=3, ema_decay=0.9, checkpoint_every=2, log_every=1, seed=0,
        keep_state=True,  # tests compare finished runs' training states and extend runs
    )
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def patches(real_patches):
    """32 real patches with alternating labels (the shared folder holds one class only)."""
    return real_patches[:32], alternating_labels(32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, patches):
    """trained(family, **cfg) -> (checkpoint path, summary); each distinct run is trained once."""
    x, y = patches
    runs: dict = {}

    def run(family: str, **over):
        key = (family, tuple(sorted(over.items())))
        if key not in runs:
            cfg = family_cfg(family, **over) if family in ("hvitgan", "medvitgan") else {"family": family, **over}
            out = tmp_path_factory.mktemp(family) / "checkpoint.pt"
            summary = train_generator(family, cfg, x, y, 2, out, out.parent / "state", CPU)
            runs[key] = (out, summary)
        return runs[key]

    return run


# --------------------------------------------------------------------------- the objective on a tiny D


class LinearCritic(nn.Module):
    """D_s(x) = ⟨w, x⟩ + b, D_c(x) = Ax + a. ∇ₓD_s = w everywhere, so the gradient penalty is λ(‖w‖ − 1)²."""

    def __init__(self, size: int = 4, num_classes: int = 2):
        super().__init__()
        self.source = nn.Linear(3 * size * size, 1)
        self.cls = nn.Linear(3 * size * size, num_classes)

    def forward(self, x, labels=None):
        h = x.flatten(1)
        return {"source": self.source(h).squeeze(1), "class_logits": self.cls(h)}


def cross_entropy(logits, labels):
    """−log softmax(logits)_c, batch mean, written out."""
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()


def weighed(mode: str, loss, s: float):
    """One weighed loss: Eq. 9 (hvitgan/all), Eq. 4 with γ = e^s (kendall), or unweighed (none)."""
    if mode in ("hvitgan", "all"):
        return math.exp(-s) * loss + s
    if mode == "kendall":
        gamma = math.exp(s)
        return loss / (2 * gamma**2) + math.log(gamma)
    return loss


SIGMAS_G = [0.5, -0.2]         # L1, L_G (the second only in mode "all")
SIGMAS_D = [0.3, -0.7, 1.1]    # L2, L3, L_S (the third only in mode "all")


def objective_with_sigmas(mode: str, gp_weight: float = 10.0, drift_weight: float = 1e-3) -> HViTGANObjective:
    obj = HViTGANObjective(weighing=mode, gp_weight=gp_weight, drift_weight=drift_weight)
    with torch.no_grad():
        for weighing, values in ((obj.generator_weighing, SIGMAS_G), (obj.discriminator_weighing, SIGMAS_D)):
            for p in weighing.parameters():
                p.copy_(torch.tensor(values[: weighing.n]))
    return obj


def tiny_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    D = LinearCritic()
    real = torch.rand(6, 3, 4, 4, generator=gen) * 2 - 1
    fake = torch.rand(6, 3, 4, 4, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    return D, real, fake, labels


@pytest.mark.parametrize("mode", ["hvitgan", "kendall", "none", "all"])
def test_objective_matches_the_paper_formulas(mode):
    D, real, fake, labels = tiny_batch()
    obj = objective_with_sigmas(mode)
    d_loss, d_terms = obj.discriminator_loss(D, real, fake, labels)
    g_loss, g_terms = obj.generator_loss(D, fake, labels)

    with torch.no_grad():
        s_real, s_fake = D(real)["source"], D(fake)["source"]
        l2, l3 = cross_entropy(D(real)["class_logits"], labels), cross_entropy(D(fake)["class_logits"], labels)
        l1 = l3  # the same fakes in the generator step
        gp = 10.0 * (D.source.weight.norm() - 1) ** 2
        l_s = s_fake.mean() - s_real.mean() + gp + 1e-3 * s_real.mean() ** 2
        adversarial = -s_fake.mean()
        if mode == "all":
            expected_d = weighed("all", l2, SIGMAS_D[0]) + weighed("all", l3, SIGMAS_D[1]) + weighed("all", l_s, SIGMAS_D[2])
            expected_g = weighed("all", l1, SIGMAS_G[0]) + weighed("all", adversarial, SIGMAS_G[1])
        else:
            expected_d = l_s + weighed(mode, l2, SIGMAS_D[0]) + weighed(mode, l3, SIGMAS_D[1])
            expected_g = adversarial + weighed(mode, l1, SIGMAS_G[0])

    torch.testing.assert_close(d_loss, expected_d)
    torch.testing.assert_close(g_loss, expected_g)
    assert d_terms["d_gp"] == pytest.approx(float(gp), rel=1e-5)
    assert d_terms["d_L_S"] == pytest.approx(float(l_s), rel=1e-5)
    assert d_terms["d_cls_real"] == pytest.approx(float(l2), rel=1e-5)
    assert g_terms["g_cls"] == pytest.approx(float(l1), rel=1e-5)
    assert d_terms["d_loss"] == pytest.approx(float(expected_d), rel=1e-5)
    assert all(isinstance(v, float) for v in {**d_terms, **g_terms}.values())
    # the logged weights are the current multipliers of each loss
    multiplier = {"hvitgan": lambda s: math.exp(-s), "all": lambda s: math.exp(-s),
                  "kendall": lambda s: 0.5 * math.exp(-2 * s), "none": lambda s: 1.0}[mode]
    assert g_terms["g_w_L1"] == pytest.approx(multiplier(SIGMAS_G[0]))
    assert d_terms["d_w_L3"] == pytest.approx(multiplier(SIGMAS_D[1]))
    assert ("d_w_L_S" in d_terms) == ("g_w_L_G" in g_terms) == (mode == "all")


@pytest.mark.parametrize("mode", ["hvitgan", "kendall", "none"])
def test_wgan_gp_term_is_not_weighed(mode):
    """Changing λ changes the D loss by exactly the change of the penalty, whatever the σ's."""
    D, real, fake, labels = tiny_batch()
    with_gp, terms = objective_with_sigmas(mode, gp_weight=10.0).discriminator_loss(D, real, fake, labels)
    without_gp, _ = objective_with_sigmas(mode, gp_weight=0.0).discriminator_loss(D, real, fake, labels)
    assert float((with_gp - without_gp).detach()) == pytest.approx(terms["d_gp"], rel=1e-5)
    assert terms["d_gp"] > 1.0


def test_wgan_gp_term_is_weighed_in_mode_all():
    D, real, fake, labels = tiny_batch()
    with_gp, terms = objective_with_sigmas("all", gp_weight=10.0).discriminator_loss(D, real, fake, labels)
    without_gp, _ = objective_with_sigmas("all", gp_weight=0.0).discriminator_loss(D, real, fake, labels)
    assert float((with_gp - without_gp).detach()) == pytest.approx(math.exp(-SIGMAS_D[2]) * terms["d_gp"], rel=1e-5)
    assert terms["d_w_L_S"] == pytest.approx(math.exp(-SIGMAS_D[2]))


@pytest.mark.parametrize("mode, n_g, n_d", [("hvitgan", 1, 2), ("kendall", 1, 2), ("all", 2, 3)])
def test_sigma_gradients_reach_only_their_own_update(mode, n_g, n_d):
    D, real, fake, labels = tiny_batch()
    obj = objective_with_sigmas(mode)
    (g_sigma,), (d_sigma,) = obj.generator_parameters(), obj.discriminator_parameters()
    assert (g_sigma.numel(), d_sigma.numel()) == (n_g, n_d)

    d_loss, terms = obj.discriminator_loss(D, real, fake, labels)
    d_loss.backward()
    assert g_sigma.grad is None
    if mode != "kendall":  # ∂(e^{−σ}L + σ)/∂σ = 1 − e^{−σ}L
        losses = [terms["d_cls_real"], terms["d_cls_fake"], terms["d_L_S"]][:n_d]
        expected = [1 - math.exp(-s) * loss for s, loss in zip(SIGMAS_D, losses)]
        torch.testing.assert_close(d_sigma.grad, torch.tensor(expected))
    assert (d_sigma.grad != 0).all()

    d_sigma.grad = None
    g_loss, g_terms = obj.generator_loss(D, fake, labels)
    g_loss.backward()
    assert d_sigma.grad is None
    if mode != "kendall":
        losses = [g_terms["g_cls"], g_terms["g_adv"]][:n_g]
        expected = [1 - math.exp(-s) * loss for s, loss in zip(SIGMAS_G, losses)]
        torch.testing.assert_close(g_sigma.grad, torch.tensor(expected))
    assert (g_sigma.grad != 0).all()


@pytest.mark.parametrize("mode", ["hvitgan", "all"])
def test_trainer_optimises_sigmas_with_the_right_network(mode):
    parts = build_generator(family_cfg(weighing=mode), 2, name="h")
    trainer = build_trainer("h", family_cfg(weighing=mode), parts, CPU)
    in_g = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    in_d = {id(p) for group in trainer.opt_d.param_groups for p in group["params"]}
    (g_sigma,), (d_sigma,) = trainer.objective.generator_parameters(), trainer.objective.discriminator_parameters()
    assert id(g_sigma) in in_g and id(g_sigma) not in in_d
    assert id(d_sigma) in in_d and id(d_sigma) not in in_g

    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1])
    terms = trainer.step(lambda: (x, y))
    assert (g_sigma.detach() != 0).all() and (d_sigma.detach() != 0).all()  # both updates moved their σ's
    assert terms["g_sigma_L1"] == 0.0 and terms["d_sigma_L2"] == 0.0  # logged before the update


def test_objective_needs_a_class_head():
    obj = HViTGANObjective()
    x = torch.zeros(2, 3, 4, 4)
    no_head = lambda x, labels: {"source": x.flatten(1).sum(1), "class_logits": None}  # noqa: E731
    with pytest.raises(PipelineError, match="classification head"):
        obj.generator_loss(no_head, x, torch.tensor([0, 1]))


# --------------------------------------------------------------------------- registration and config


def test_families_are_registered_with_their_defaults():
    assert {"hvitgan", "medvitgan"} <= set(available_families())
    hv = build_generator(family_cfg("hvitgan"), 2, name="hv")
    assert hv.trainer == "adversarial" and hv.objective.weighing == "hvitgan"
    assert hv.objective.gp_weight == 10.0 and hv.objective.drift_weight == 0.0
    assert isinstance(hv.augment, DiffAugment) and hv.augment.policy == PAPER_POLICY and hv.augment.strength == 1.0
    assert sum(isinstance(m, ConditionalLayerNorm) for m in hv.generator.modules()) == 4

    med = build_generator(family_cfg("medvitgan"), 2, name="med")
    assert med.objective.weighing == "none" and med.objective.generator_parameters() == []
    assert not any(isinstance(m, ConditionalLayerNorm) for m in med.generator.modules())
    assert med.discriminator.class_head.out_features == 2
    assert isinstance(med.augment, DiffAugment)

    other = build_generator(family_cfg(weighing="kendall", diffaug=[], gp_weight=5, drift_weight=1e-3), 2)
    assert other.augment is None and other.objective.weighing == "kendall"
    assert (other.objective.gp_weight, other.objective.drift_weight) == (5.0, 1e-3)
    weak = build_generator(family_cfg(diffaug="translation,cutout", diffaug_strength=0.5), 2)
    assert weak.augment.policy == ["translation", "cutout"] and weak.augment.strength == 0.5


@pytest.mark.parametrize(
    "family, over, message",
    [
        ("hvitgan", dict(weighing="uncertainty"), r"generators\.g\.weighing"),
        ("hvitgan", dict(gp_weight=-1), r"generators\.g\.gp_weight"),
        ("hvitgan", dict(loss="bce"), r"generators\.g\.loss"),
        ("hvitgan", dict(diffaug=["color", "hue"]), r"generators\.g\.diffaug"),
        ("hvitgan", dict(embed_dim=96), r"generators\.g: .*multiple of 64"),
        ("medvitgan", dict(class_projection=True), "MedViTGAN has no class projection"),
    ],
)
def test_config_errors_name_the_key(family, over, message):
    with pytest.raises(PipelineError, match=message):
        build_generator(family_cfg(family, **over), 2, name="g")


# --------------------------------------------------------------------------- training through the shared loop


@pytest.mark.parametrize("family", ["hvitgan", "medvitgan"])
def test_training_writes_generator_and_discriminator(trained, family):
    out, summary = trained(family)
    assert summary["steps"] == 3 and summary["steps_run"] == 3
    assert all(np.isfinite(v) for v in summary["final_losses"].values())
    hist = pd.read_csv(out.parent / "history.csv")
    assert list(hist["step"]) == [1, 2, 3]
    assert {"d_adv", "d_gp", "d_L_S", "d_cls_real", "d_cls_fake", "d_loss", "g_adv", "g_cls", "g_loss",
            "g_w_L1", "d_w_L2", "d_w_L3"} <= set(hist.columns)
    if family == "hvitgan":  # σ's start at 0 and are trained
        assert hist["g_sigma_L1"].iloc[0] == 0.0 and hist["g_sigma_L1"].iloc[-1] != 0.0
        assert hist["d_sigma_L2"].iloc[-1] != 0.0
    else:  # plain sum
        assert (hist[["g_w_L1", "d_w_L2", "d_w_L3"]] == 1.0).all().all()
        assert not any(c.startswith(("g_sigma", "d_sigma")) for c in hist.columns)

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert {"generator_state", "discriminator_state", "objective_state"} <= set(ckpt)
    assert (ckpt["family"], ckpt["image_size"], ckpt["latent_dim"]) == (family, 32, 16)
    state = torch.load(out.parent / "state" / "last.pt", map_location="cpu", weights_only=True)["trainer"]
    for key in state["discriminator"]:
        assert torch.equal(ckpt["discriminator_state"][key], state["discriminator"][key]), key
    assert ckpt["objective_state"].keys() == state["objective"].keys()
    assert bool(ckpt["objective_state"]) == (family == "hvitgan")
    for key in state["objective"]:
        assert torch.equal(ckpt["objective_state"][key], state["objective"][key])


@pytest.mark.parametrize("family", ["hvitgan", "medvitgan"])
def test_load_generator_and_discriminator_round_trip(trained, family):
    out, _ = trained(family)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    G, D = load_generator(out), load_discriminator(out)
    assert not G.training and not D.training
    for saved, module in ((ckpt["generator_state"], G), (ckpt["discriminator_state"], D)):
        loaded = module.state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    with torch.no_grad():
        images = G(torch.randn(3, 16), torch.tensor([0, 1, 1]))
        out_d = D(images, torch.tensor([0, 1, 1]))
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1
    assert out_d["source"].shape == (3,) and out_d["class_logits"].shape == (3, 2)


def test_load_discriminator_rejects_a_vae(trained):
    out, _ = trained("cvae", image_size=32, latent_dim=8, channels=4, conv_layers=4, batch_size=4, lr=1e-3, steps=1)
    with pytest.raises(PipelineError, match="no discriminator"):
        load_discriminator(out)


def test_resumed_hvitgan_run_equals_an_uninterrupted_one(tmp_path, patches):
    x, y = patches
    straight = tmp_path / "a" / "g.pt"
    train_generator("hv", family_cfg(steps=4), x, y, 2, straight, tmp_path / "a" / "state", CPU)
    split = tmp_path / "b" / "g.pt"
    train_generator("hv", family_cfg(steps=2), x, y, 2, split, tmp_path / "b" / "state", CPU)
    second = train_generator("hv", family_cfg(steps=4), x, y, 2, split, tmp_path / "b" / "state", CPU)
    assert second["resumed_from"] == 2 and second["steps_run"] == 2

    a = torch.load(straight, map_location="cpu", weights_only=True)
    b = torch.load(split, map_location="cpu", weights_only=True)
    for key in ("generator_state", "discriminator_state", "objective_state"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    pd.testing.assert_frame_equal(pd.read_csv(straight.parent / "history.csv"), pd.read_csv(split.parent / "history.csv"))


# --------------------------------------------------------------------------- the head selector


@pytest.mark.parametrize("family", ["hvitgan", "medvitgan"])
def test_head_selector_gives_the_class_head_softmax(trained, real_patches, family):
    out, _ = trained(family)
    images = real_patches[40:47]  # 96 px, resized to the generator's 32 px
    proba = load_selector("head", out, CPU)(images)
    assert proba.shape == (7, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)

    D = load_discriminator(out)
    with torch.no_grad():
        x = to_model_range(prepare_images(images, 32, "cpu"))
        expected = torch.softmax(D(x, torch.zeros(7, dtype=torch.long))["class_logits"], dim=1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
    assert load_selector("head", out, CPU)(images[:0]).shape == (0, 2)


def test_head_selector_rejects_families_without_a_class_head(trained):
    cgan, _ = trained("cgan", image_size=32, latent_dim=8, loss="wgan-gp", g_channels=4, d_channels=4,
                      batch_size=4, lr=1e-4, steps=1)
    with pytest.raises(PipelineError, match="no classification head"):
        load_selector("head", cgan, CPU)
    cvae, _ = trained("cvae", image_size=32, latent_dim=8, channels=4, conv_layers=4, batch_size=4, lr=1e-3, steps=1)
    with pytest.raises(PipelineError, match="selector='head'"):
        load_selector("head", cvae, CPU)
