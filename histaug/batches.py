"""Batches of indices drawn without replacement within each pass, optionally balanced over groups
(classes, or contrastive classes of attribute combinations). Shared by the generator loop and the
classifier loop; the full state is checkpointed so that a resumed run draws the same batches."""
from __future__ import annotations

import numpy as np
import torch


class BatchSampler:
    """Index batches without replacement within each pass over a group, from a private torch.Generator.

    ``balanced``: one group per class present in ``labels``; each batch takes ⌊B/G⌋ indices from
    every group and the remaining B mod G from randomly chosen groups. ``shuffle``: one group holding
    everything. Each group is cycled through fresh random permutations, so batch_size may exceed the
    data set. The full state (generator, permutations, positions) is checkpointed.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, balanced: bool, seed: int):
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        labels = np.asarray(labels)
        if balanced:
            self.groups = [torch.from_numpy(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        else:
            self.groups = [torch.arange(len(labels))]
        self.perms: list[torch.Tensor | None] = [None] * len(self.groups)
        self.pos = [0] * len(self.groups)

    def _take(self, g: int, k: int) -> torch.Tensor:
        taken = []
        while k > 0:
            perm = self.perms[g]
            if perm is None or self.pos[g] >= len(perm):
                perm = self.groups[g][torch.randperm(len(self.groups[g]), generator=self.generator)]
                self.perms[g], self.pos[g] = perm, 0
            n = min(k, len(perm) - self.pos[g])
            taken.append(perm[self.pos[g] : self.pos[g] + n])
            self.pos[g] += n
            k -= n
        return torch.cat(taken)

    def next(self) -> torch.Tensor:
        n_groups = len(self.groups)
        counts = [self.batch_size // n_groups] * n_groups
        for g in torch.randperm(n_groups, generator=self.generator)[: self.batch_size % n_groups].tolist():
            counts[g] += 1
        idx = torch.cat([self._take(g, k) for g, k in enumerate(counts) if k > 0])
        return idx[torch.randperm(len(idx), generator=self.generator)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perms": list(self.perms), "pos": list(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perms, self.pos = list(state["perms"]), list(state["pos"])
