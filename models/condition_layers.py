"""Layers that read a :class:`~models.conditioning.Condition`."""
from __future__ import annotations

import torch
from torch import nn

from .conditioning import Condition, as_condition


class ConditionEmbedding(nn.Embedding):
    """One learned vector per level of every attribute; a label row maps to the sum of its attributes'
    vectors, i.e. a linear map of the concatenated one-hot blocks. For a class condition it is a plain
    class embedding (one row per class), so a projection discriminator's ⟨e_c, φ(x)⟩ generalises to
    Σ_a ⟨e_{a, level_a}, φ(x)⟩."""

    def __init__(self, condition: Condition | int, dim: int):
        condition = as_condition(condition)
        super().__init__(condition.dim, dim)
        self.condition = condition
        self.register_buffer("offsets", torch.tensor(condition.offsets, dtype=torch.long), persistent=False)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        rows = self.condition.as_rows(labels).to(self.offsets.device)
        return super().forward(rows + self.offsets).sum(dim=1)
