"""HViTGAN's training objective ([H] §2.4): WGAN-GP critic loss plus the weighed class losses.

:class:`HViTGANObjective` is used by :mod:`models.hvitgan`'s families (HViTGAN and MedViTGAN);
the multi-loss weighing itself lives in :mod:`models.weighing`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from histaug.losses import gradient_penalty, wgan_discriminator_loss, wgan_generator_loss
from histaug.utils import PipelineError

from .weighing import MultiLossWeighing

WEIGHING_MODES = ("hvitgan", "kendall", "none", "all")


def _scalar(value: torch.Tensor) -> float:
    """A loss term as a plain float for logging."""
    return float(value.detach())


class HViTGANObjective(nn.Module):
    """HViTGAN's losses: the WGAN-GP critic loss and the weighed classification losses ([H] §2.4).

    Source (critic) head, [H] Eq. 2, "Wasserstein loss with gradient penalty":

        L_S = E[D_s(G(c, z))] − E[D_s(x)] + λ·E[(‖∇_x̂ D_s(x̂)‖₂ − 1)²]   (+ drift)

    with λ = ``gp_weight``. The optional drift term ``drift_weight``·(E[D_s(x)])² is TransGAN's
    ``wgangp-eps`` loss (it uses 1e-3); [H] does not mention it, so it is off by default. The
    generator's adversarial loss is −E[D_s(G(c, z))]. "The critic head does not involve
    conditioned information": D_s sees only the image.

    Auxiliary classification head (AC-GAN, [H] Eq. 3 and 8), three cross-entropies:

        L1 = CE(D_c(G(c, z)), c)  in the generator step,
        L2 = CE(D_c(x), c)        on real images in the discriminator step,
        L3 = CE(D_c(G(c, z)), c)  on generated images in the discriminator step.

    They are combined by the multi-loss weighing function (:class:`MultiLossWeighing`), chosen
    by ``weighing``:

    * ``"hvitgan"`` -- [H] Eq. 9, Σ_i e^{−σ_i}·L_i + σ_i with trainable σ_i ∈ ℝ (start 0).
    * ``"kendall"`` -- [H] Eq. 4 (Kendall et al.), Σ_i L_i/(2γ_i²) + log γ_i.
    * ``"none"``    -- the plain sum Σ_i L_i ([H] Fig. 3a).
    * ``"all"``     -- [H] Fig. 3b, "weighting function applied to all losses": Eq. 9 is applied
      to five terms, L1, L2, L3, the critic loss L_S (gradient penalty and drift included)
      and the generator's adversarial loss. [H] §3.3 reports that the "WGAN-GP loss was
      significantly scaled-down after applying weight to it which resulted in inferior
      performance". (The critic loss and the adversarial loss can be negative; then
      e^{−σ}·L + σ decreases without bound as σ → −∞, which is one way this goes wrong.)

    In every other mode the WGAN-GP loss is not weighted ("we omitted the weight applied to
    WGAN-GP loss"), so the two updates minimise

        discriminator: L_S + w(L2) + w(L3)          generator: −E[D_s(G(c, z))] + w(L1)

    where w(L_i) is the weighed term of the chosen mode. [H] does not say which optimiser
    updates the σ's. Each σ belongs to the update whose loss it weighs: σ1 (and, in mode
    ``all``, the σ of the adversarial loss) is returned by :meth:`generator_parameters` and
    trained with G; σ2 and σ3 (and the σ of L_S) by :meth:`discriminator_parameters` and
    trained with D. Eq. 9's σ's are therefore held by two :class:`MultiLossWeighing` modules,
    ``generator_weighing`` (losses [L1] or [L1, L_G]) and ``discriminator_weighing`` (losses
    [L2, L3] or [L2, L3, L_S]); their sum is Eq. 9.

    ``discriminate(x, labels)`` is the training loop's discriminator call (DiffAug included)
    and must return ``{"source": (B,), "class_logits": (B, K)}``. Both loss methods return
    ``(loss, terms)``, where ``terms`` holds floats for logging: the loss terms and the current
    weight (and σ or log γ) of every weighed loss.
    """

    #: Names of the weighed losses, in the order the two weighing modules hold them.
    GENERATOR_LOSSES = ("L1", "L_G")
    DISCRIMINATOR_LOSSES = ("L2", "L3", "L_S")

    def __init__(
        self,
        weighing: str = "hvitgan",
        gp_weight: float = 10.0,
        drift_weight: float = 0.0,
        gen_name: str = "<name>",
    ):
        super().__init__()
        if weighing not in WEIGHING_MODES:
            raise PipelineError(
                f"config key generators.{gen_name}.weighing={weighing!r}: unknown multi-loss weighing; "
                f"expected one of {list(WEIGHING_MODES)}"
            )
        for key, value in (("gp_weight", gp_weight), ("drift_weight", drift_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PipelineError(f"config key generators.{gen_name}.{key}={value!r} must be a number >= 0")
        self.weighing = weighing
        self.gp_weight = float(gp_weight)
        self.drift_weight = float(drift_weight)
        self.weigh_adversarial = weighing == "all"
        mode = "hvitgan" if self.weigh_adversarial else weighing
        n_g, n_d = (2, 3) if self.weigh_adversarial else (1, 2)
        self.generator_weighing = MultiLossWeighing(n_g, mode)
        self.discriminator_weighing = MultiLossWeighing(n_d, mode)

    @classmethod
    def from_config(cls, gen_cfg: dict, gen_name: str = "<name>", default_weighing: str = "hvitgan") -> "HViTGANObjective":
        """Read ``weighing``, ``gp_weight`` (default 10) and ``drift_weight`` (default 0) from ``gen_cfg``."""
        loss = gen_cfg.get("loss", "wgan-gp")
        if loss != "wgan-gp":
            raise PipelineError(
                f"config key generators.{gen_name}.loss={loss!r}: family {gen_cfg.get('family')!r} is trained "
                "with the WGAN-GP loss of [H] Eq. 2; remove the key or set it to 'wgan-gp'"
            )
        return cls(
            weighing=gen_cfg.get("weighing", default_weighing),
            gp_weight=gen_cfg.get("gp_weight", 10.0),
            drift_weight=gen_cfg.get("drift_weight", 0.0),
            gen_name=gen_name,
        )

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """σ2, σ3 (and σ of L_S in mode ``all``): optimised with the discriminator."""
        return list(self.discriminator_weighing.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """σ1 (and σ of the adversarial loss in mode ``all``): optimised with the generator."""
        return list(self.generator_weighing.parameters())

    @staticmethod
    def _class_logits(out: dict) -> torch.Tensor:
        logits = out.get("class_logits")
        if logits is None:
            raise PipelineError(
                "the HViTGAN objective needs a discriminator with an auxiliary classification head "
                "(its forward must return 'class_logits')"
            )
        return logits.float()

    @staticmethod
    def _weight_terms(weighing: MultiLossWeighing, names: Sequence[str]) -> dict[str, float]:
        """Current weight (and σ or log γ) of each loss weighed by ``weighing``, for logging."""
        terms = {f"w_{name}": w for name, w in zip(names, weighing.weights())}
        if weighing.mode == "hvitgan":
            terms.update({f"sigma_{name}": s for name, s in zip(names, weighing.sigma.detach().tolist())})
        elif weighing.mode == "kendall":
            terms.update({f"log_gamma_{name}": s for name, s in zip(names, weighing.log_gamma.detach().tolist())})
        return terms

    def discriminator_loss(self, discriminate, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor):
        """L_S + weighed (L2, L3), or, in mode ``all``, the weighed (L2, L3, L_S)."""
        names = self.DISCRIMINATOR_LOSSES[: self.discriminator_weighing.n]
        weights = self._weight_terms(self.discriminator_weighing, names)
        out_real = discriminate(real, labels)
        out_fake = discriminate(fake, labels)
        s_real, s_fake = out_real["source"].float(), out_fake["source"].float()
        critic = wgan_discriminator_loss(s_real, s_fake)
        loss_s = critic
        terms = {"d_adv": _scalar(critic)}
        if self.gp_weight > 0:
            gp = gradient_penalty(lambda x: discriminate(x, labels)["source"], real, fake, self.gp_weight)
            loss_s = loss_s + gp
            terms["d_gp"] = _scalar(gp)
        if self.drift_weight > 0:
            drift = self.drift_weight * s_real.mean() ** 2
            loss_s = loss_s + drift
            terms["d_drift"] = _scalar(drift)
        loss_2 = F.cross_entropy(self._class_logits(out_real), labels)
        loss_3 = F.cross_entropy(self._class_logits(out_fake), labels)
        if self.weigh_adversarial:
            total = self.discriminator_weighing([loss_2, loss_3, loss_s])
        else:
            total = loss_s + self.discriminator_weighing([loss_2, loss_3])
        terms.update({"d_L_S": _scalar(loss_s), "d_cls_real": _scalar(loss_2), "d_cls_fake": _scalar(loss_3)})
        terms.update({f"d_{k}": v for k, v in weights.items()})
        terms["d_loss"] = _scalar(total)
        return total, terms

    def generator_loss(self, discriminate, fake: torch.Tensor, labels: torch.Tensor):
        """−E[D_s(G(c, z))] + weighed L1, or, in mode ``all``, the weighed (L1, −E[D_s(G(c, z))])."""
        names = self.GENERATOR_LOSSES[: self.generator_weighing.n]
        weights = self._weight_terms(self.generator_weighing, names)
        out = discriminate(fake, labels)
        adversarial = wgan_generator_loss(out["source"].float())
        loss_1 = F.cross_entropy(self._class_logits(out), labels)
        if self.weigh_adversarial:
            total = self.generator_weighing([loss_1, adversarial])
        else:
            total = adversarial + self.generator_weighing([loss_1])
        terms = {"g_adv": _scalar(adversarial), "g_cls": _scalar(loss_1)}
        terms.update({f"g_{k}": v for k, v in weights.items()})
        terms["g_loss"] = _scalar(total)
        return total, terms

    def extra_repr(self) -> str:
        return f"weighing={self.weighing!r}, gp_weight={self.gp_weight}, drift_weight={self.drift_weight}"


