"""Divergence guard: stop a training job as soon as it produces non-finite numbers.

Every trainer (the generator loops, the classifier loop and what is built on them) feeds its loss
terms and gradient norms to a :class:`DivergenceGuard` after each update with :meth:`observe`.
That costs a few tiny tensor operations and no device synchronisation: the guard remembers, per
term, the first step at which the value was NaN or infinite. At every logging interval and before
every save the loop calls :meth:`check`, which synchronises once, also checks every weight and
floating-point buffer of the networks, and raises :class:`TrainingDiverged` naming the model, the
step, the loss term and the fix. Raising *before* a save means no checkpoint, training state or
sample is ever written from a diverged state; the last good training state stays on disk.

With ``divergence.retries > 0`` in the config, :func:`run_with_retries` catches the error, and the
loop is called again: it resumes from the last good state with every learning rate multiplied by
``divergence.lr_factor`` (per retry), and says so in the log. The reduced rate is stored in the
training state, so a later resume continues at it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, TypeVar

import torch
from torch import nn

from .utils import PipelineError

T = TypeVar("T")
KEY = "divergence"


class TrainingDiverged(PipelineError):
    """A loss term, gradient norm or weight became NaN or infinite."""

    def __init__(self, message: str, model: str, step: int, term: str):
        super().__init__(message)
        self.model, self.step, self.term = model, int(step), term


@dataclass(frozen=True)
class DivergenceSettings:
    """``divergence:`` of the config: how many automatic retries, and the learning-rate factor of each."""

    retries: int = 0
    lr_factor: float = 0.5


def divergence_settings(cfg: Mapping | None) -> DivergenceSettings:
    """Read and check the config's ``divergence`` section (None or absent = no retries)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - {"retries", "lr_factor"})
    if unknown:
        raise PipelineError(f"config {KEY}: unknown key(s) {unknown}; expected retries, lr_factor")
    retries, factor = cfg.get("retries", 0), cfg.get("lr_factor", 0.5)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise PipelineError(f"config {KEY}.retries={retries!r}: expected an integer >= 0")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
        raise PipelineError(f"config {KEY}.lr_factor={factor!r}: expected a number in (0, 1)")
    return DivergenceSettings(int(retries), float(factor))


class DivergenceGuard:
    """Watches one training run. ``model`` names it in messages ("generator 'cvae' (family cvae)");
    ``fix`` says what the user can change ("lower generators.cvae.lr (now 1e6), ...")."""

    def __init__(self, model: str, fix: str):
        self.model, self.fix = model, fix
        self._first: dict[str, torch.Tensor] = {}  # term -> first bad step (-1 = none), on the term's device
        self._value: dict[str, torch.Tensor] = {}  # term -> its value at that step
        self._python: dict[str, tuple[int, float]] = {}  # the same for plain numbers

    def observe(self, step: int, terms: Mapping[str, torch.Tensor | float]) -> None:
        """Record which terms are not finite at ``step`` (no synchronisation)."""
        for name, value in terms.items():
            if not torch.is_tensor(value):
                if not math.isfinite(float(value)) and name not in self._python:
                    self._python[name] = (int(step), float(value))
                continue
            value = value.detach().float().sum()  # a 0-d loss, or any tensor: NaN and inf survive the sum
            first = self._first.get(name)
            if first is None:
                first = self._first[name] = torch.full((), -1, dtype=torch.long, device=value.device)
                self._value[name] = torch.zeros((), dtype=torch.float32, device=value.device)
            newly = (~torch.isfinite(value)) & (first < 0)
            first.masked_fill_(newly, int(step))
            self._value[name] = torch.where(newly, value, self._value[name])

    def check(self, step: int, networks: Mapping[str, nn.Module] | None = None, note: str = "") -> None:
        """Raise :class:`TrainingDiverged` when a term observed since the last check, or a weight or
        buffer of ``networks``, is not finite; ``note`` is appended (what was kept on disk)."""
        bad_terms = [(s, name, v) for name, (s, v) in self._python.items()]
        for name, first in self._first.items():
            s = int(first.item())
            if s >= 0:
                bad_terms.append((s, name, float(self._value[name].item())))
        if bad_terms:
            # the earliest; at one step a loss term before the gradient norms it caused
            s, name, value = min(bad_terms, key=lambda t: (t[0], "grad_norm" in t[1], t[1]))
            self._raise(step, name, f"loss term {name!r} became {value} at step {s}", note)
        for net_name, net in (networks or {}).items():
            bad = nonfinite_tensors(net.named_parameters(), net.named_buffers())
            if bad:
                name, count, total = bad[0]
                what = f"{len(bad)} weight tensor(s) of the {net_name} hold non-finite values (first: {name}, {count} of {total})"
                self._raise(step, f"{net_name}.{name}", what, note)
        self.reset()

    def reset(self) -> None:
        self._first.clear()
        self._value.clear()
        self._python.clear()

    def _raise(self, step: int, term: str, what: str, note: str) -> None:
        message = f"{self.model} diverged by step {step}: {what}. Training stopped."
        if note:
            message += f" {note}"
        message += f" Fix: {self.fix}."
        self.reset()
        raise TrainingDiverged(message, self.model, step, term)


def nonfinite_tensors(*named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """(name, non-finite count, size) of every floating-point tensor that holds NaN or inf.

    One synchronisation when all are finite (the common case), per-tensor counts otherwise."""
    tensors = [(n, t.detach()) for group in named for n, t in group if torch.is_floating_point(t) and t.numel()]
    if not tensors:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors])
    if bool(finite.all()):
        return []
    return [(n, int((~torch.isfinite(t)).sum()), t.numel()) for (n, t), ok in zip(tensors, finite.tolist()) if not ok]


def grad_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The total L2 norm of the gradients (a 0-d tensor, no synchronisation); 0 without gradients."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def run_with_retries(attempt: Callable[[float], T], settings: DivergenceSettings, log: logging.Logger,
                     owner: str) -> tuple[T, list[dict]]:
    """``attempt(lr_scale)``; after a :class:`TrainingDiverged`, call it again with the learning-rate
    scale multiplied by ``settings.lr_factor``, up to ``settings.retries`` times.

    ``attempt`` must resume from the last good training state (the loops do). Returns its result
    and one record per retry ({step, term, lr_scale}).
    """
    scale, retries = 1.0, []
    for n in range(settings.retries + 1):
        try:
            return attempt(scale), retries
        except TrainingDiverged as exc:
            if n == settings.retries:
                if retries:
                    raise TrainingDiverged(f"{exc} ({len(retries)} automatic retries at lower learning rates "
                                           "diverged as well)", exc.model, exc.step, exc.term) from None
                raise
            scale *= settings.lr_factor
            retries.append({"step": exc.step, "term": exc.term, "lr_scale": scale})
            log.warning("%s: %s -- retry %d of %d (config divergence.retries): resuming from the last good "
                        "training state with the learning rate x%g", owner, exc, n + 1, settings.retries, scale)
    raise AssertionError("unreachable")
