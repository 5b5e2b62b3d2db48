"""Generator training losses.

Adversarial losses, selected by the config key ``generators.<name>.loss``:

* ``bce``     -- the original GAN objective with the non-saturating generator loss:
                 L_D = -E[log σ(D(x))] - E[log(1 - σ(D(G(z))))],  L_G = -E[log σ(D(G(z)))].
* ``wgan-gp`` -- the Wasserstein critic with gradient penalty (HViTGAN Eq. 2):
                 L_S = E[D_s(G(c,z))] - E[D_s(x)] + λ E[(‖∇_x̂ D_s(x̂)‖₂ - 1)²],
                 x̂ = εx + (1 - ε)G(c,z), ε ~ U[0,1];  the generator minimises -E[D_s(G(c,z))].
* ``hinge``   -- L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],  L_G = -E[D(G(z))].
                 (AttributeGAN's code uses the mirrored sign convention, real pushed low; the two
                 are the same loss with D negated.)

All scores are raw (pre-sigmoid) discriminator outputs of shape (B,).

When the discriminator also has a class head (AC-GAN, HViTGAN Eq. 3/8), the default objective adds
cross-entropy terms: L2 = CE(D_c(x), c) and L3 = CE(D_c(G(c,z)), c) in the discriminator step and
L1 = CE(D_c(G(c,z)), c) in the generator step.

VAE: loss = reconstruction + kl_weight · KL(q(z|x,c) ‖ N(0, I)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import per_sample
from .utils import PipelineError

# --------------------------------------------------------------------------- adversarial losses


def bce_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """-E[log σ(D(x))] - E[log(1 - σ(D(G(z))))] written with softplus for stability."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def bce_generator_loss(fake: Tensor) -> Tensor:
    """Non-saturating generator loss -E[log σ(D(G(z)))]."""
    return F.softplus(-fake).mean()


def wgan_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss E[D(G(z))] - E[D(x)] (the gradient penalty is added separately)."""
    return fake.mean() - real.mean()


def wgan_generator_loss(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    gradient_penalty: bool


LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss("bce", bce_discriminator_loss, bce_generator_loss, gradient_penalty=False),
    "wgan-gp": AdversarialLoss("wgan-gp", wgan_discriminator_loss, wgan_generator_loss, gradient_penalty=True),
    "hinge": AdversarialLoss("hinge", hinge_discriminator_loss, hinge_generator_loss, gradient_penalty=False),
}


def get_adversarial_loss(name: str, gen_name: str = "<name>") -> AdversarialLoss:
    """Look up a loss by its config name; unknown names raise a PipelineError naming the config key."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise PipelineError(
            f"config key generators.{gen_name}.loss={name!r}: unknown adversarial loss; "
            f"expected one of {sorted(LOSSES)}"
        ) from None


def gradient_penalty(
    critic_fn: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float = 10.0,
    eps: Tensor | None = None,
) -> Tensor:
    """WGAN-GP penalty  weight · E[(‖∇_x̂ D(x̂)‖₂ - 1)²],  x̂ = εx + (1 - ε)G(z),  ε ~ U[0, 1] per sample.

    ``critic_fn`` maps a batch of images to (B,) scores. The penalty is computed with autocast
    disabled (fp32), because its double backward is sensitive to reduced precision; the graph is
    kept (create_graph) so the penalty trains the critic.
    """
    real = real.detach().float()
    fake = fake.detach().float()
    if eps is None:
        eps = per_sample(lambda s: torch.rand(s, device=real.device), (real.shape[0], *([1] * (real.dim() - 1))))
    with torch.autocast(device_type=real.device.type, enabled=False):
        x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
        scores = critic_fn(x_hat).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return weight * ((norm - 1.0) ** 2).mean()


class AdversarialObjective(nn.Module):
    """Default loss hooks of the adversarial training loop.

    ``discriminate(x, labels)`` is the loop's discriminator call (augmentation included) and
    returns ``{"source": (B,), "class_logits": (B, K) or None}``.

    Terms: the chosen adversarial loss; for ``wgan-gp`` the gradient penalty with weight
    ``gp_weight`` and optionally TransGAN's drift term ``drift_weight · E[D(x)²]``; when the
    discriminator returns class logits, ``cls_weight`` times the auxiliary-classifier
    cross-entropies (real and fake in the D step, fake in the G step).

    Families with other loss weightings (e.g. HViTGAN's learned Σ_i e^{-σ_i}L_i + σ_i) subclass this
    and return their extra trainable tensors from ``discriminator_parameters`` /
    ``generator_parameters``; the loop optimises them with D resp. G and checkpoints them.
    """

    def __init__(
        self,
        loss: str = "bce",
        gp_weight: float = 10.0,
        cls_weight: float = 1.0,
        drift_weight: float = 0.0,
        gen_name: str = "<name>",
    ):
        super().__init__()
        self.loss = get_adversarial_loss(loss, gen_name)
        self.gp_weight = float(gp_weight)
        self.cls_weight = float(cls_weight)
        self.drift_weight = float(drift_weight)

    @classmethod
    def from_config(cls, gen_cfg: dict, gen_name: str = "<name>") -> "AdversarialObjective":
        return cls(
            loss=gen_cfg.get("loss", "bce"),
            gp_weight=gen_cfg.get("gp_weight", 10.0),
            cls_weight=gen_cfg.get("cls_weight", 1.0),
            drift_weight=gen_cfg.get("drift_weight", 0.0),
            gen_name=gen_name,
        )

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return []

    def generator_parameters(self) -> list[nn.Parameter]:
        return []

    def discriminator_loss(self, discriminate, real: Tensor, fake: Tensor, labels: Tensor):
        out_real = discriminate(real, labels)
        out_fake = discriminate(fake, labels)
        s_real, s_fake = out_real["source"].float(), out_fake["source"].float()
        adv = self.loss.discriminator(s_real, s_fake)
        terms = {"d_adv": adv.detach()}
        total = adv
        if self.loss.gradient_penalty and self.gp_weight > 0:
            gp = gradient_penalty(lambda x: discriminate(x, labels)["source"], real, fake, self.gp_weight)
            terms["d_gp"] = gp.detach()
            total = total + gp
        if self.drift_weight > 0:
            drift = self.drift_weight * (s_real**2).mean()
            terms["d_drift"] = drift.detach()
            total = total + drift
        if out_real.get("class_logits") is not None and self.cls_weight > 0:
            ce_real = F.cross_entropy(out_real["class_logits"].float(), labels)
            ce_fake = F.cross_entropy(out_fake["class_logits"].float(), labels)
            terms["d_cls_real"], terms["d_cls_fake"] = ce_real.detach(), ce_fake.detach()
            total = total + self.cls_weight * (ce_real + ce_fake)
        terms["d_loss"] = total.detach()
        return total, terms

    def generator_loss(self, discriminate, fake: Tensor, labels: Tensor):
        out = discriminate(fake, labels)
        adv = self.loss.generator(out["source"].float())
        terms = {"g_adv": adv.detach()}
        total = adv
        if out.get("class_logits") is not None and self.cls_weight > 0:
            ce = F.cross_entropy(out["class_logits"].float(), labels)
            terms["g_cls"] = ce.detach()
            total = total + self.cls_weight * ce
        terms["g_loss"] = total.detach()
        return total, terms


# --------------------------------------------------------------------------- VAE


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = -½ Σ_j (1 + log σ_j² - μ_j² - σ_j²), averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def vae_loss(x_hat: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float = 1.0):
    """Negative ELBO: Σ_pixels (x̂ - x)² (Gaussian reconstruction term) + kl_weight · KL, batch mean.

    Returns ``(loss, terms)`` with detached ``recon``, ``kl`` and ``loss`` for logging.
    """
    recon = (x_hat.float() - x.float()).pow(2).flatten(1).sum(dim=1).mean()
    kl = kl_divergence(mu, logvar)
    loss = recon + float(kl_weight) * kl
    return loss, {"recon": recon.detach(), "kl": kl.detach(), "loss": loss.detach()}
