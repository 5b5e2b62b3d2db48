"""Adversarial and VAE losses against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from histaug.losses import (
    LOSSES,
    AdversarialObjective,
    bce_discriminator_loss,
    bce_generator_loss,
    get_adversarial_loss,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_divergence,
    vae_loss,
    wgan_discriminator_loss,
    wgan_generator_loss,
)
from histaug.utils import PipelineError

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([0.25, -3.0, 1.5])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def mean(xs) -> float:
    return sum(xs) / len(xs)


def test_bce_matches_hand_computed():
    # -log σ(r) = softplus(-r);  -log(1 - σ(f)) = softplus(f)
    d = mean([softplus(-r) for r in REAL.tolist()]) + mean([softplus(f) for f in FAKE.tolist()])
    g = mean([softplus(-f) for f in FAKE.tolist()])
    assert bce_discriminator_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert bce_generator_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    # and the same as the textbook probabilities
    sig = torch.sigmoid
    textbook = -(torch.log(sig(REAL)).mean() + torch.log(1 - sig(FAKE)).mean())
    assert bce_discriminator_loss(REAL, FAKE).item() == pytest.approx(textbook.item(), rel=1e-5)


def test_hinge_matches_hand_computed():
    # relu(1 - r): [0, 2, 0.5] -> 2.5/3 ; relu(1 + f): [1.25, 0, 2.5] -> 3.75/3
    assert hinge_discriminator_loss(REAL, FAKE).item() == pytest.approx(2.5 / 3 + 3.75 / 3, rel=1e-6)
    assert hinge_generator_loss(FAKE).item() == pytest.approx(-(0.25 - 3.0 + 1.5) / 3, rel=1e-6)


def test_wgan_matches_hand_computed():
    assert wgan_discriminator_loss(REAL, FAKE).item() == pytest.approx((-1.25 / 3) - (1.5 / 3), rel=1e-6)
    assert wgan_generator_loss(FAKE).item() == pytest.approx(1.25 / 3, rel=1e-6)


def test_loss_lookup_and_unknown_name():
    assert set(LOSSES) == {"bce", "wgan-gp", "hinge"}
    assert get_adversarial_loss("wgan-gp").gradient_penalty
    assert not get_adversarial_loss("bce").gradient_penalty
    with pytest.raises(PipelineError, match=r"generators\.cgan\.loss"):
        get_adversarial_loss("lsgan", "cgan")
    with pytest.raises(PipelineError, match=r"generators\.mygan\.loss"):
        AdversarialObjective(loss="wgan", gen_name="mygan")


def test_gradient_penalty_linear_critic_is_exact():
    # D(x) = <w, x> has ∇D = w everywhere, so GP = weight · (‖w‖ - 1)² whatever ε is.
    torch.manual_seed(0)
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    w = torch.randn(3, 4, 4) * 0.7
    weight = 10.0
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, weight)
    expected = weight * (w.norm().item() - 1.0) ** 2
    assert gp.item() == pytest.approx(expected, rel=1e-5)
    # a unit-norm critic has no penalty
    w_unit = w / w.norm()
    assert gradient_penalty(lambda x: (x * w_unit).flatten(1).sum(1), real, fake, weight).item() == pytest.approx(0.0, abs=1e-9)


def test_gradient_penalty_interpolates_and_trains_the_critic():
    # D(x) = ½‖x‖² has ∇D(x̂) = x̂; with real = fake, x̂ = real for every ε.
    torch.manual_seed(1)
    real = torch.randn(4, 3, 2, 2)
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, real.clone(), 2.0)
    expected = 2.0 * ((real.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)

    # with an explicit ε the interpolate is εx + (1 - ε)G: check via the quadratic critic
    fake = torch.randn(4, 3, 2, 2)
    eps = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(4, 1, 1, 1)
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, fake, 1.0, eps=eps)
    x_hat = eps * real + (1 - eps) * fake
    assert gp.item() == pytest.approx(((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)

    # the penalty is differentiable in the critic's parameters: d/dw [(‖w‖ - 1)²] = 2(‖w‖ - 1) w/‖w‖
    w = torch.full((3, 2, 2), 0.5, requires_grad=True)  # ‖w‖ = sqrt(12 · 0.25) = sqrt(3)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, 1.0)
    gp.backward()
    n = math.sqrt(3.0)
    assert torch.allclose(w.grad, torch.full_like(w, 2 * (n - 1) * 0.5 / n), rtol=1e-5)


def test_objective_terms_with_class_head():
    """D loss = adversarial + GP + CE(real) + CE(fake); G loss = adversarial + CE(fake)."""
    torch.manual_seed(2)
    labels = torch.tensor([0, 1, 1])
    w = torch.randn(3, 2, 2)
    head = torch.randn(3 * 2 * 2, 2)

    def discriminate(x, y):
        return {"source": (x * w).flatten(1).sum(1), "class_logits": x.flatten(1) @ head}

    real, fake = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
    obj = AdversarialObjective(loss="wgan-gp", gp_weight=10.0, cls_weight=0.5)
    d_loss, terms = obj.discriminator_loss(discriminate, real, fake, labels)
    s_r, s_f = discriminate(real, labels)["source"], discriminate(fake, labels)["source"]
    ce_r = F.cross_entropy(real.flatten(1) @ head, labels)
    ce_f = F.cross_entropy(fake.flatten(1) @ head, labels)
    expected = (s_f.mean() - s_r.mean()) + 10.0 * (w.norm() - 1) ** 2 + 0.5 * (ce_r + ce_f)
    assert d_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"d_adv", "d_gp", "d_cls_real", "d_cls_fake", "d_loss"}

    g_loss, g_terms = obj.generator_loss(discriminate, fake, labels)
    assert g_loss.item() == pytest.approx((-s_f.mean() + 0.5 * ce_f).item(), rel=1e-5)
    assert set(g_terms) == {"g_adv", "g_cls", "g_loss"}

    # bce without a class head has neither GP nor CE terms
    plain = lambda x, y: {"source": (x * w).flatten(1).sum(1), "class_logits": None}  # noqa: E731
    d_loss, terms = AdversarialObjective(loss="bce").discriminator_loss(plain, real, fake, labels)
    assert set(terms) == {"d_adv", "d_loss"}
    assert d_loss.item() == pytest.approx(bce_discriminator_loss(s_r, s_f).item(), rel=1e-6)


def test_vae_loss_hand_computed():
    mu = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)]])
    # per sample: -½ Σ (1 + logσ² - μ² - σ²): row 1 -> ½·1 = 0.5 ; row 2 -> ½·4 + ½(4 - 1 - log 4) = 2 + 1.5 - log 2
    kl_rows = [0.5, 2.0 + 0.5 * (4.0 - 1.0 - math.log(4.0))]
    assert kl_divergence(mu, logvar).item() == pytest.approx(mean(kl_rows), rel=1e-6)

    x = torch.zeros(2, 3, 2, 2)
    x_hat = torch.full_like(x, 0.5)  # Σ (0.5)² over 12 pixels = 3 per image
    loss, terms = vae_loss(x_hat, x, mu, logvar, kl_weight=0.1)
    assert terms["recon"].item() == pytest.approx(3.0)
    assert loss.item() == pytest.approx(3.0 + 0.1 * mean(kl_rows), rel=1e-6)
