"""AttributeGAN's training objective ([A] §2, Eq. 1): hinge loss, the discriminator's reconstruction
loss and the conditional contrastive loss (CCL) on attribute combinations.

The networks are in :mod:`models.attributegan`; the module docstring there says how Eq. 1 is read
(cosine similarities, proxies, which samples are positives).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from histaug.losses import hinge_discriminator_loss, hinge_generator_loss
from histaug.utils import PipelineError

from .conditioning import Condition, as_condition

if TYPE_CHECKING:  # only for annotations: models.attributegan imports this module
    from .attributegan import AttributeGANSettings


def conditional_contrastive_loss(features: torch.Tensor, proxies: torch.Tensor, classes: torch.Tensor,
                                 temperature: float = 1.0, self_positive: bool = True, margin: float = 0.0,
                                 temperature_factor: bool = False) -> torch.Tensor:
    """[A] Eq. 1 averaged over the batch, on cosine similarities (see the module docstring).

    ``features`` f(x_i) and ``proxies`` l(y_i) are (B, d); ``classes`` (B,) contrastive classes (-1:
    none; such a sample is nobody else's positive). ``self_positive`` keeps Eq. 1's k = i term in the
    numerator (the code drops it); ``margin`` is subtracted from every similarity and
    ``temperature_factor`` multiplies the ratio by t (both as in the code). Computed with logsumexp.
    """
    f = F.normalize(features.float(), dim=1)
    proxy = F.normalize(proxies.float(), dim=1)
    n = f.shape[0]
    t = float(temperature)
    data_logits = (f @ f.T - margin) / t                    # f(x_i)^T f(x_k) / t
    proxy_logits = ((f * proxy).sum(dim=1) - margin) / t    # f(x_i)^T l(y_i) / t
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    classes = classes.to(f.device)
    same = (classes[:, None] == classes[None, :]) & (classes[None, :] >= 0)
    positives = (same & ~eye) | (eye if self_positive else torch.zeros_like(eye))
    minus_inf = torch.finfo(data_logits.dtype).min
    log_numerator = torch.logsumexp(torch.cat([proxy_logits[:, None], data_logits.masked_fill(~positives, minus_inf)], 1), 1)
    log_denominator = torch.logsumexp(torch.cat([proxy_logits[:, None], data_logits.masked_fill(eye, minus_inf)], 1), 1)
    loss = log_denominator - log_numerator
    if temperature_factor:
        loss = loss - math.log(t)
    return loss.mean()


class AttributeGANObjective(nn.Module):
    """Loss hooks of the shared adversarial loop: hinge + reconstruction + CCL (D), hinge + CCL (G).

    Terms (detached 0-d tensors): ``d_adv``, ``d_recon`` (with ``recon_weight`` > 0), ``d_ccl`` (with the
    CCL on), ``d_loss``; ``g_adv``, ``g_ccl``, ``g_loss``. No extra trainable tensors.
    """

    def __init__(self, condition: Condition, settings: AttributeGANSettings):
        super().__init__()
        self.condition = as_condition(condition)
        s = settings
        self.ccl_weight = s.ccl_weight if s.uses_contrastive else 0.0
        self.recon_weight = s.recon_weight
        self.temperature, self.self_positive = s.temperature, s.ccl_self_positive
        self.margin, self.temperature_factor = s.ccl_margin, s.ccl_temperature_factor

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return []

    def generator_parameters(self) -> list[nn.Parameter]:
        return []

    def contrastive(self, out: dict, labels: torch.Tensor) -> torch.Tensor:
        if out.get("features") is None:
            raise PipelineError("the AttributeGAN objective has the CCL on, but the discriminator has no contrastive "
                                "heads (built with contrastive: false or ccl_weight: 0?)")
        return conditional_contrastive_loss(out["features"], out["proxy"], self.condition.contrastive_class(labels),
                                            self.temperature, self.self_positive, self.margin, self.temperature_factor)

    @staticmethod
    def reconstruction(out: dict) -> torch.Tensor:
        """MSE of the 8x8 decoder plus MSE of the quadrant decoder (the code's sum)."""
        decoded = out["reconstruct"]()
        pairs = [decoded["full"]] + ([decoded["quadrant"]] if "quadrant" in decoded else [])
        return sum(F.mse_loss(recon.float(), target.float()) for recon, target in pairs)

    @staticmethod
    def _add(total: torch.Tensor, terms: dict, name: str, weight: float, value: torch.Tensor) -> torch.Tensor:
        """``total + weight · value``, logging ``value`` as ``terms[name]``."""
        terms[name] = value.detach()
        return total + weight * value

    def discriminator_loss(self, discriminate, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor):
        out_real = discriminate(real, labels)
        out_fake = discriminate(fake, labels)
        adv = sum(hinge_discriminator_loss(r.float(), f.float()) for r, f in zip(out_real["scores"], out_fake["scores"]))
        total, terms = adv, {"d_adv": adv.detach()}
        if self.recon_weight > 0:
            total = self._add(total, terms, "d_recon", self.recon_weight, self.reconstruction(out_real))
        if self.ccl_weight > 0:
            total = self._add(total, terms, "d_ccl", self.ccl_weight, self.contrastive(out_real, labels))
        terms["d_loss"] = total.detach()
        return total, terms

    def generator_loss(self, discriminate, fake: torch.Tensor, labels: torch.Tensor):
        out = discriminate(fake, labels)
        adv = sum(hinge_generator_loss(sc.float()) for sc in out["scores"])
        total, terms = adv, {"g_adv": adv.detach()}
        if self.ccl_weight > 0:
            total = self._add(total, terms, "g_ccl", self.ccl_weight, self.contrastive(out, labels))
        terms["g_loss"] = total.detach()
        return total, terms

    def extra_repr(self) -> str:
        return (f"ccl_weight={self.ccl_weight}, recon_weight={self.recon_weight}, temperature={self.temperature}, "
                f"self_positive={self.self_positive}, margin={self.margin}, temperature_factor={self.temperature_factor}")
