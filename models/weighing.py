"""Multi-loss weighing of the classification losses ([H] §2.4).

HViTGAN trains an auxiliary class head (AC-GAN) next to the WGAN-GP critic. Its three
classification losses, all cross-entropies, are weighed with trainable scalars:

* L1: generated images, in the generator step;
* L2: real images, in the discriminator step;
* L3: generated images, in the discriminator step.

The WGAN-GP loss itself is not weighted; [H] §3.3 found that weighting it hurt.

Modes:
    ``"hvitgan"`` (Eq. 9)   Σ_i exp(−σ_i)·L_i + σ_i. σ_i ∈ ℝ is trainable and starts at 0
                            (weight 1). ∂/∂σ_i = −exp(−σ_i)·L_i + 1, so σ_i settles where
                            exp(−σ_i) = 1/L_i.
    ``"kendall"`` (Eq. 4)   Σ_i L_i/(2γ_i²) + log γ_i (Kendall et al.). γ_i > 0 is stored as
                            s_i = log γ_i, which starts at 0 (γ = 1, weight 1/2), so the
                            term is L_i/(2·exp(2 s_i)) + s_i.
    ``"none"``              Σ_i L_i (Fig. 3a, no weighting).

The generator and discriminator steps use different losses. ``forward(losses, indices)``
therefore takes the indices of the σ's the given losses belong to. For example, with
``MultiLossWeighing(3)`` the generator step calls ``weighing([L1], indices=[0])`` and the
discriminator step calls ``weighing([L2, L3], indices=[1, 2])``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from histaug.utils import PipelineError

MODES = ("hvitgan", "kendall", "none")


class MultiLossWeighing(nn.Module):
    """Weighted sum of ``n`` classification losses with trainable per-loss scalars."""

    def __init__(self, n: int, mode: str = "hvitgan"):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PipelineError(f"multi-loss weighing needs a positive number of losses, got {n!r}")
        if mode not in MODES:
            raise PipelineError(f"loss weighing mode {mode!r} is unknown; choose one of {list(MODES)}")
        self.n = n
        self.mode = mode
        if mode == "hvitgan":
            self.sigma = nn.Parameter(torch.zeros(n))
        elif mode == "kendall":
            self.log_gamma = nn.Parameter(torch.zeros(n))

    def weight_and_regulariser(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-loss multiplicative weight and additive regulariser, each of shape (n,)."""
        if self.mode == "hvitgan":
            return torch.exp(-self.sigma), self.sigma
        if self.mode == "kendall":
            return 0.5 * torch.exp(-2.0 * self.log_gamma), self.log_gamma
        ones = torch.ones(self.n)
        return ones, torch.zeros(self.n)

    def forward(self, losses: Sequence[torch.Tensor], indices: Sequence[int] | None = None) -> torch.Tensor:
        losses = list(losses)
        if indices is None:
            if len(losses) != self.n:
                raise PipelineError(f"expected {self.n} losses (or explicit indices), got {len(losses)}")
            indices = range(self.n)
        indices = list(indices)
        if len(indices) != len(losses) or not losses:
            raise PipelineError(f"got {len(losses)} losses for indices {indices}")
        if len(set(indices)) != len(indices) or any(not 0 <= i < self.n for i in indices):
            raise PipelineError(f"loss indices {indices} must be distinct and lie in [0, {self.n - 1}]")
        stacked = torch.stack([torch.as_tensor(loss).reshape(()) for loss in losses])
        weight, regulariser = self.weight_and_regulariser()
        idx = torch.tensor(indices, device=stacked.device)
        weight, regulariser = weight.to(stacked)[idx], regulariser.to(stacked)[idx]
        return (weight * stacked + regulariser).sum()

    @torch.no_grad()
    def weights(self) -> list[float]:
        """Current effective weight of each loss: exp(−σ_i), 1/(2γ_i²) or 1."""
        return [float(w) for w in self.weight_and_regulariser()[0]]

    @torch.no_grad()
    def log_dict(self, prefix: str = "cls") -> dict[str, float]:
        """Weights (and σ_i or log γ_i) as a flat dict for logging."""
        out = {f"{prefix}_weight_{i}": w for i, w in enumerate(self.weights())}
        if self.mode == "hvitgan":
            out.update({f"{prefix}_sigma_{i}": float(s) for i, s in enumerate(self.sigma)})
        elif self.mode == "kendall":
            out.update({f"{prefix}_log_gamma_{i}": float(s) for i, s in enumerate(self.log_gamma)})
        return out

    def extra_repr(self) -> str:
        return f"n={self.n}, mode={self.mode!r}"
