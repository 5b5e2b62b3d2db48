"""What a generator is conditioned on: one class label, or a vector of attribute levels.

A :class:`Condition` describes the condition space of one trained generator:

* ``class``: one label in 0..K-1 (the downstream class, or one attribute's level for a
  single-attribute model such as the per-attribute BigGAN runs). Labels are a (B,) long tensor.
* ``attributes``: A attributes with L_1, ..., L_A ordered levels each (AttributeGAN's five
  cellular attributes; the pixel attributes of the demo). Labels are a (B, A) long tensor.

Networks see a condition as one one-hot block per attribute, concatenated (:meth:`Condition.one_hot`:
width L_1 + ... + L_A; for a class, K). A projection discriminator's ⟨e_c, φ(x)⟩ becomes the sum of one
embedding per attribute, which is the same as a linear map of that multi-hot vector
(:class:`ConditionEmbedding`).

For the conditional contrastive loss, every attribute combination has a *contrastive class*
(kept combinations one each; with the ``merge`` rule, all rare ones share one; dropped ones have
none). ``contrastive`` holds them as a table over all combinations in mixed-radix order
(:meth:`Condition.combination_index`), -1 where a combination has no class.

A condition is stored in generator checkpoints as plain data (:meth:`to_dict` / :func:`as_condition`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

KINDS = ("class", "attributes")


@dataclass(frozen=True)
class Condition:
    kind: str
    levels: tuple[int, ...]
    names: tuple[str, ...] = ("class",)
    contrastive: tuple[int, ...] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"condition kind must be one of {KINDS}, got {self.kind!r}")
        if not self.levels or any(int(n) < 1 for n in self.levels):
            raise ValueError(f"every attribute needs at least one level, got {self.levels}")
        if self.kind == "class" and len(self.levels) != 1:
            raise ValueError("a class condition has exactly one label")
        if len(self.names) != len(self.levels):
            raise ValueError(f"{len(self.names)} names for {len(self.levels)} attributes")
        if self.contrastive is not None and len(self.contrastive) != self.n_combinations:
            raise ValueError(f"contrastive table has {len(self.contrastive)} entries, expected {self.n_combinations}")

    # ----------------------------------------------------------------- construction

    @classmethod
    def classes(cls, k: int) -> "Condition":
        return cls("class", (int(k),))

    @classmethod
    def attributes(cls, names: Sequence[str], levels: Sequence[int], contrastive: Sequence[int] | None = None):
        return cls("attributes", tuple(int(n) for n in levels), tuple(str(n) for n in names),
                   tuple(int(c) for c in contrastive) if contrastive is not None else None)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "levels": list(self.levels), "names": list(self.names),
                "contrastive": list(self.contrastive) if self.contrastive is not None else None}

    # ----------------------------------------------------------------- sizes

    @property
    def dim(self) -> int:
        """Width of the one-hot encoding: K for a class, L_1 + ... + L_A for attributes."""
        return int(sum(self.levels))

    @property
    def num_attributes(self) -> int:
        return len(self.levels)

    @property
    def num_classes(self) -> int:
        """K for a class condition (the generator attribute ``num_classes``); the encoding width otherwise."""
        return self.levels[0] if self.kind == "class" else self.dim

    @property
    def n_combinations(self) -> int:
        return int(np.prod(self.levels))

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each attribute's block in the one-hot encoding."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.levels)[:-1]]))

    # ----------------------------------------------------------------- labels

    def as_rows(self, labels):
        """(B, A) long tensor of levels from (B,) class labels or (B, A) attribute levels."""
        import torch

        labels = torch.as_tensor(labels).long()
        if labels.dim() == 1:
            labels = labels[:, None]
        if labels.dim() != 2 or labels.shape[1] != self.num_attributes:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not fit a condition with "
                             f"{self.num_attributes} attribute(s)")
        return labels

    def one_hot(self, labels, dtype=None):
        """(B, dim) float: one one-hot block per attribute, concatenated."""
        import torch
        import torch.nn.functional as F

        rows = self.as_rows(labels)
        blocks = [F.one_hot(rows[:, a], n) for a, n in enumerate(self.levels)]
        out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return out.to(dtype or torch.float32)

    def combination_index(self, labels):
        """Mixed-radix index of each label row's combination, in 0..n_combinations-1 ((B,) long)."""
        rows = self.as_rows(labels)
        index = rows[:, 0].clone()
        for a in range(1, self.num_attributes):
            index = index * self.levels[a] + rows[:, a]
        return index

    def contrastive_class(self, labels):
        """Contrastive class of each row ((B,) long; -1 for a combination without one). Without a
        table, every distinct combination is its own class (its mixed-radix index)."""
        import torch

        index = self.combination_index(labels)
        if self.contrastive is None:
            return index
        table = torch.as_tensor(self.contrastive, dtype=torch.long, device=index.device)
        return table[index]

    def check(self, labels: np.ndarray, what: str = "labels") -> np.ndarray:
        """Validate numpy labels against this condition; returns them as int64 (N,) or (N, A)."""
        labels = np.asarray(labels).astype(np.int64)
        rows = labels[:, None] if labels.ndim == 1 else labels
        if rows.ndim != 2 or rows.shape[1] != self.num_attributes:
            raise ValueError(f"{what}: shape {labels.shape} does not fit {self.num_attributes} attribute(s)")
        for a, (name, n) in enumerate(zip(self.names, self.levels)):
            col = rows[:, a]
            if len(col) and (col.min() < 0 or col.max() >= n):
                raise ValueError(f"{what}: {name} levels must lie in [0, {n}), got {col.min()}..{col.max()}")
        return labels


def as_condition(value: Any) -> Condition:
    """A Condition from itself, a class count (int) or its :meth:`Condition.to_dict` form."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, (int, np.integer)):
        return Condition.classes(int(value))
    if isinstance(value, Mapping):
        contrastive = value.get("contrastive")
        return Condition(str(value["kind"]), tuple(int(n) for n in value["levels"]),
                         tuple(str(n) for n in value.get("names") or ("class",)),
                         tuple(int(c) for c in contrastive) if contrastive is not None else None)
    raise TypeError(f"cannot make a condition from {type(value).__name__}")
