"""The one classifier training loop: every (architecture, training set, seed) run, the selector and the
feature-space classifier, and the GAN class heads (``<generator>_head``).

:func:`train_classifier` keeps the epoch with the best validation score, writes ``model.pt``
(weights + metadata, read by :func:`histaug.classify.load_classifier`) and ``history.csv``, and can
resume an interrupted run from ``state/last.pt``.

Divergence: each step's loss and gradient norm go to a :class:`histaug.guard.DivergenceGuard`;
after each epoch (the logging interval) the guard also checks every weight and buffer, before
the epoch is validated or saved. A NaN or infinite value stops the job with one message naming
the model, the step, the loss term and the fix; the last good epoch's state stays on disk and
no ``model.pt`` is written. ``divergence.retries`` resumes from that state at a reduced
learning rate instead (see :mod:`histaug.guard`).
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .batches import BatchSampler
from .classify import (
    GAN_MEAN,
    GAN_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AttributePredictor,
    _batched,
    _check_images,
    _precision,
    _softmax_head,
    _timm_spec,
    build_classifier,
    build_head_classifier,
    to_model_input,
)
from .guard import DivergenceGuard, divergence_settings, grad_norm, run_with_retries
from .metrics import SingleClassWarning, macro_auc
from .training_state import clear_state, load_state, remove_orphan_temps, save_state
from .speed import compile_enabled, compiled, pin_memory_enabled
from .utils import PipelineError, autocast, config_hash, get_device, get_logger, progress, seed_everything, write_csv

STATE_FORMAT = 2
SAMPLERS = ("shuffle", "balanced", "auto")
#: ``sampler: auto`` balances the batches when the largest class has more than this many times the smallest's images.
IMBALANCE = 1.5
HISTORY_COLUMNS = ["epoch", "train_loss", "valid_auc", "valid_acc", "seconds"]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over all parameters, using the fused kernel where torch provides one.

    On CPU the fused update is about 4x faster than the per-tensor loop (about 60 ms less per
    step for ResNet34), which matters at small image sizes where the update is a large share.
    """
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    loss_fn=None,
) -> torch.Tensor:
    """One optimisation step under the requested autocast (cross-entropy unless ``loss_fn(logits, y)``
    is given); returns the detached loss. The gradients stay on the parameters until the next step
    (for the gradient norm)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, precision):
        logits = model(x)
    loss = (loss_fn or F.cross_entropy)(logits.float(), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _validation_scores(y: np.ndarray, prob: np.ndarray, selection: str) -> tuple[float, float]:
    """(AUC, accuracy) on the validation set; NaN AUC for one class or non-finite outputs."""
    if not np.all(np.isfinite(prob)):
        return float("nan"), float("nan")
    acc = float(np.mean(prob.argmax(axis=1) == y))
    if selection != "auc":
        return float("nan"), acc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        return macro_auc(y, prob), acc


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR factor per step: linear warm-up from 1/warmup to 1 over ``warmup_steps``, then a cosine decay to 0 at
    ``total_steps`` (the maximum budget; early stopping may end training before)."""
    total_steps, warmup_steps = max(int(total_steps), 1), max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / max(total_steps - warmup_steps, 1)))

    return factor


def multi_head_loss(levels):
    """Sum over attributes of the cross-entropy of each head (logits concatenated, labels (B, A))."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(logits, tuple(levels), dim=1)
        return sum(F.cross_entropy(b, y[:, a]) for a, b in enumerate(blocks))
    return loss


def multi_head_softmax(levels):
    """Softmax within each attribute's block of concatenated logits (for :func:`histaug.classify._batched`)."""
    def head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(model(x).float(), tuple(levels), dim=1)
        return torch.cat([torch.softmax(b, dim=1) for b in blocks], dim=1)
    return head


def expected_levels(prob: np.ndarray, levels) -> np.ndarray:
    """(N, A) expected level of every attribute, normalised to [0, 1] (E[level] / (L - 1)), from the
    per-attribute softmax blocks ``prob`` (N, L_1 + ... + L_A)."""
    out, start = [], 0
    for n in levels:
        block = prob[:, start:start + n]
        out.append(block @ np.arange(n) / max(n - 1, 1))
        start += n
    return np.stack(out, axis=1)


def attribute_mse(prob: np.ndarray, y: np.ndarray, levels) -> np.ndarray:
    """Per attribute, the mean squared error between the expected normalised level and the true one."""
    truth = np.asarray(y, np.float64) / np.maximum(np.asarray(levels, np.float64) - 1, 1)
    return np.mean((expected_levels(prob, levels) - truth) ** 2, axis=0)


def _attribute_scores(y: np.ndarray, prob: np.ndarray, levels) -> tuple[float, float]:
    """(mean attribute MSE, mean per-attribute accuracy) on the validation set; NaN for non-finite outputs."""
    if not np.all(np.isfinite(prob)):
        return float("nan"), float("nan")
    accs, start = [], 0
    for a, n in enumerate(levels):
        accs.append(np.mean(prob[:, start:start + n].argmax(axis=1) == y[:, a]))
        start += n
    return float(np.mean(attribute_mse(prob, y, levels))), float(np.mean(accs))


def _scale_learning_rate(optimizer, scheduler, factor: float) -> None:
    """Multiply the current and the scheduled learning rates by ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


class _ClassifierRun:
    """Settings, model, optimiser and resumable state of one train_classifier call."""

    def __init__(self, arch, train_x, train_y, valid_x, valid_y, cfg, compute, seed, out_dir, log, num_classes, head,
                 lr_scale, heads=None):
        self.arch, self.seed, self.log, self.head = arch, int(seed), log, head
        self.heads = tuple(int(n) for n in heads) if heads else None
        self.timm_name = _timm_spec(arch)[0] if head is None else \
            f"{head['family']} discriminator of generator {head['generator']}"
        if self.heads:
            (self.train_x, _), (self.valid_x, _) = _check_images(train_x, None, "training set"), \
                _check_images(valid_x, None, "validation set")
            self.train_y, self.valid_y = self._attribute_labels(train_y, "training"), self._attribute_labels(valid_y, "validation")
            num_classes = sum(self.heads)
        else:
            self.train_x, self.train_y = _check_images(train_x, train_y, "training set")
            self.valid_x, self.valid_y = _check_images(valid_x, valid_y, "validation set")
        if len(self.train_x) < 2:
            raise PipelineError(f"training set: {len(self.train_x)} images; need at least 2")
        if len(self.valid_x) < 1:
            raise PipelineError("validation set is empty; the best epoch is chosen on it")
        if num_classes is None:
            num_classes = max(2, int(max(self.train_y.max(), self.valid_y.max())) + 1)
        if not self.heads and max(self.train_y.max(), self.valid_y.max()) >= num_classes:
            raise PipelineError(f"labels exceed num_classes={num_classes}")
        self._settings(cfg, compute, num_classes)
        self.balanced = self._balanced()
        out_dir = Path(out_dir)
        self.state_path, self.model_path, self.history_path = out_dir / "state" / "last.pt", out_dir / "model.pt", \
            out_dir / "history.csv"
        if self.heads:
            self.selection = "attribute_error"
        else:
            self.selection = "auc" if len(np.unique(self.valid_y)) >= 2 else "accuracy"
        if self.selection == "accuracy":
            log.warning(f"{arch} seed {seed}: the validation set holds a single class, so AUC is undefined; "
                        "the best epoch is chosen by validation accuracy")
        self.run_hash = config_hash({
            "format": STATE_FORMAT, "arch": arch, "num_classes": self.num_classes, "image_size": self.image_size,
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "augment": self.augment, "pretrained": str(self.pretrained) if self.pretrained else None,
            "warmup_epochs": self.warmup_epochs, "balanced": self.balanced,
            "head": head["digest"] if head is not None else None, "heads": self.heads, "precision": self.precision,
            "channels_last": self.channels_last, "device": self.device.type, "seed": self.seed,
            "data": _fingerprint(self.train_x, self.train_y, self.valid_x, self.valid_y),
            **({"passes_per_epoch": self.passes_per_epoch} if self.passes_per_epoch > 1 else {}),
        })
        self._build(lr_scale)
        self.guard = DivergenceGuard(f"classifier {arch} (seed {seed})", self._fix())

    def _attribute_labels(self, y, what: str) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != len(self.heads) or not np.issubdtype(y.dtype, np.integer):
            raise PipelineError(f"{what} attribute levels: expected integers of shape (N, {len(self.heads)}), got "
                                f"{y.dtype} {y.shape}")
        if len(y) and ((y < 0).any() or (y >= np.asarray(self.heads)).any()):
            raise PipelineError(f"{what} attribute levels outside 0..L-1 for level counts {list(self.heads)}")
        return y.astype(np.int64)

    def _settings(self, cfg: dict, compute: dict, num_classes: int) -> None:
        overrides = (cfg.get("arch_overrides") or {}).get(self.arch) or {}
        cfg = {**cfg, **overrides}
        self.image_size = int(cfg.get("image_size") or self.train_x.shape[1])
        self.epochs, self.batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
        self.warmup_epochs = float(cfg.get("warmup_epochs") or 0)
        self.patience = int(cfg["patience"]) if cfg.get("patience") else None
        self.sampler = cfg.get("sampler", "shuffle")
        if self.sampler not in SAMPLERS:
            raise PipelineError(f"config downstream.sampler={self.sampler!r}: expected one of {list(SAMPLERS)}")
        self.lr, self.weight_decay = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
        self.augment = bool(cfg.get("augment", False))
        self.pretrained = (cfg.get("pretrained") or {}).get(self.arch)
        self.norm = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        self.lr_key = f"downstream.arch_overrides.{self.arch}.lr" if "lr" in overrides else "downstream.lr"
        self.state_every = float(cfg.get("state_every_seconds") or 0)
        n = len(self.train_x)
        # A trailing batch of one image is dropped: BatchNorm cannot train on a single sample.
        self.steps_per_pass = n // self.batch_size + (1 if n % self.batch_size >= 2 else 0)
        # On a training set too small for min_steps_per_epoch batches, an epoch is several passes over it, so the
        # epoch budget, patience, warm-up and validation keep the length they were tuned for.
        self.passes_per_epoch = max(1, -(-int(cfg.get("min_steps_per_epoch") or 0) // max(self.steps_per_pass, 1)))
        self.steps_per_epoch = self.passes_per_epoch * self.steps_per_pass
        head = self.head
        if head is not None:
            self.image_size, self.pretrained = int(head["image_size"]), None
            self.lr = float(cfg.get("head_lr") or self.lr)
            self.lr_key = "downstream.head_lr" if cfg.get("head_lr") else self.lr_key
            self.norm = {"mean": list(GAN_MEAN), "std": list(GAN_STD)}
            if int(head["num_classes"]) != int(num_classes):
                raise PipelineError(f"{self.arch}: the discriminator has {head['num_classes']} classes, the data {num_classes}")
            num_classes = int(head["num_classes"])
        self.num_classes = int(num_classes)
        self.device = get_device(compute)
        self.precision = _precision(compute, "downstream")
        autocast(self.device, self.precision)  # validates the precision name for this device
        self.channels_last = bool(compute.get("channels_last", False))
        self.compile = compile_enabled(compute, "downstream")
        self.pin_memory = pin_memory_enabled(compute, self.device)
        if self.epochs < 1 or self.batch_size < 1:
            raise PipelineError(f"config downstream.epochs={self.epochs} and downstream.batch_size={self.batch_size} "
                                "must be >= 1")

    def _balanced(self) -> bool:
        """Class-balanced batches: ``sampler: balanced``, or ``auto`` when the largest training class has more
        than :data:`IMBALANCE` times the images of the smallest (single-label tasks only)."""
        if self.heads or self.sampler == "shuffle":
            return False
        counts = np.bincount(self.train_y, minlength=self.num_classes)
        counts = counts[counts > 0]
        if self.sampler == "balanced":
            return True
        return bool(len(counts) > 1 and counts.max() > IMBALANCE * counts.min())

    def should_stop(self) -> bool:
        """Early stopping: ``patience`` epochs without a better validation score than the best epoch's."""
        if self.patience is None or self.best["epoch"] is None:
            return False
        return len(self.history) - int(self.best["epoch"]) >= self.patience

    def _fix(self) -> str:
        fix = f"lower {self.lr_key} (now {self.lr:g}" + (f", effective x{self.lr_scale:g})" if self.lr_scale != 1 else ")")
        if self.precision != "fp32":
            fix += f", or set compute.precision.downstream: fp32 (now {self.precision})"
        return fix + ", or set divergence.retries > 0 to resume from the last good epoch at a lower learning rate automatically"

    def _build(self, lr_scale: float) -> None:
        seed_everything(self.seed)
        head = self.head
        if self.heads:
            model = AttributePredictor(self.arch, self.heads, self.pretrained)
        elif head is not None:
            model = build_head_classifier(head)
        else:
            model = build_classifier(self.arch, self.num_classes, self.pretrained)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = compiled(self.model, self.compile)  # the calls; self.model keeps weights and names
        self.optimizer = make_optimizer(self.model, self.lr * lr_scale, self.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.epochs * self.steps_per_epoch, round(self.warmup_epochs * self.steps_per_epoch)))
        self.batches = BatchSampler(self.train_y, self.batch_size, True, self.seed) if self.balanced else None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.generator = torch.Generator().manual_seed(self.seed)
        self.history: list[dict] = []
        self.best = {"metric": -math.inf, "epoch": None, "auc": float("nan"), "acc": float("nan"), "state": None}
        self.lr_scale = lr_scale
        owner = f"classifier {self.arch} seed {self.seed}"
        remove_orphan_temps(self.state_path.parent, self.log, owner)
        remove_orphan_temps(self.model_path.parent, self.log, owner)
        self.start_epoch = self._resume(load_state(self.state_path, self.log, owner), lr_scale)
        self.saved_epoch = self.start_epoch or None
        self.last_state_time = time.perf_counter()

    def _resume(self, state: dict | None, lr_scale: float) -> int:
        """Restore the training state when it belongs to this run; returns the next epoch."""
        if state is None:
            return 0
        if state.get("format") != STATE_FORMAT or state.get("config_hash") != self.run_hash:
            self.log.warning(f"{self.arch} seed {self.seed}: {self.state_path} was written for different data or "
                             f"settings (hash {state.get('config_hash')} != {self.run_hash}); starting from epoch 1")
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.batches is not None:
            self.batches.load_state_dict(state["batches"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history.extend(state["history"])
        self.best.update(state["best"])
        saved_scale = float(state.get("lr_scale", 1.0))
        self.lr_scale = min(lr_scale, saved_scale)
        if self.lr_scale != saved_scale:
            _scale_learning_rate(self.optimizer, self.scheduler, self.lr_scale / saved_scale)
        self.log.info(f"{self.arch} seed {self.seed}: resuming after epoch {state['epoch']} from {self.state_path}"
                      + (f" at x{self.lr_scale:g} the configured learning rate" if self.lr_scale != 1 else ""))
        return int(state["epoch"])

    # ----------------------------------------------------------------- one epoch

    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        n, bs = len(self.train_x), self.batch_size
        images, labels = torch.from_numpy(self.train_x), torch.from_numpy(self.train_y)
        loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
        bar = progress(range(self.steps_per_epoch), desc=f"{self.arch} seed {self.seed} epoch {epoch + 1}/{self.epochs}",
                       unit="batch", leave=False)
        for step in bar:
            within = step % self.steps_per_pass
            if within == 0 and self.batches is None:
                perm = torch.randperm(n, generator=self.generator)  # a new order for every pass over the data
            idx = perm[within * bs: (within + 1) * bs] if self.batches is None else self.batches.next()
            x = to_model_input(images[idx], self.image_size, self.norm["mean"], self.norm["std"], self.device,
                               self.channels_last, augment_generator=self.generator if self.augment else None,
                               pin_memory=self.pin_memory)
            loss = train_step(self.forward, self.optimizer, x, labels[idx].to(self.device), self.precision, self.scaler,
                              multi_head_loss(self.heads) if self.heads else None)
            terms = {"loss": loss} if self.scaler is not None else {"loss": loss, "grad_norm": grad_norm(self.model.parameters())}
            self.guard.observe(epoch * self.steps_per_epoch + step + 1, terms)
            self.scheduler.step()
            loss_sum += loss.double().cpu() * len(idx)
            seen += len(idx)
        bar.close()
        return float(loss_sum / max(seen, 1))

    def _kept_note(self) -> str:
        if self.saved_epoch is None:
            return "No model was written, and no epoch had been completed yet."
        return f"No model was written; the last good training state (epoch {self.saved_epoch}) is kept in {self.state_path}."

    def _state_due(self, epoch: int, force: bool) -> bool:
        """Write the resumable state after this epoch? Always with ``state_every_seconds`` 0 (the default) or
        when the call ends without a model (``force``); otherwise once that many seconds passed since the last
        write (or the start), so short epochs do not spend their time writing optimiser state."""
        if force or self.state_every <= 0:
            return True
        return time.perf_counter() - self.last_state_time >= self.state_every

    def run_epoch(self, epoch: int, force_state: bool = False) -> None:
        t0 = time.perf_counter()
        train_loss = self._train_epoch(epoch)
        self.guard.check((epoch + 1) * self.steps_per_epoch, {"classifier": self.model}, self._kept_note())
        meta = {"image_size": self.image_size, "normalisation": self.norm}
        prob = _batched(self.forward, meta, self.valid_x, max(2 * self.batch_size, 64), self.precision,
                        self.channels_last, multi_head_softmax(self.heads) if self.heads else _softmax_head)
        row = {"epoch": epoch + 1, "train_loss": train_loss}
        if self.heads:
            row["valid_error"], row["valid_acc"] = _attribute_scores(self.valid_y, prob, self.heads)
            row["valid_auc"], metric = float("nan"), -row["valid_error"]
        else:
            row["valid_auc"], row["valid_acc"] = _validation_scores(self.valid_y, prob, self.selection)
            metric = row["valid_auc"] if self.selection == "auc" else row["valid_acc"]
        is_best = math.isfinite(metric) and metric > self.best["metric"]
        if is_best:
            self.best.update(metric=metric, epoch=epoch + 1, auc=row["valid_auc"], acc=row["valid_acc"],
                             state=_cpu_state(self.model))
        row["seconds"] = time.perf_counter() - t0
        self.history.append(row)
        scores = " ".join(f"{k}={row[k]:.4f}" for k in ("valid_auc", "valid_acc", "valid_error") if k in row)
        self.log.info(f"{self.arch} seed {self.seed} epoch {epoch + 1}/{self.epochs}: train_loss={train_loss:.4f} "
                      f"{scores} ({row['seconds']:.1f}s){' best' if is_best else ''}")
        if not self._state_due(epoch, force_state):
            return
        save_state(self.state_path, {
            "format": STATE_FORMAT, "config_hash": self.run_hash, "epoch": epoch + 1, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "best": dict(self.best),
            "history": list(self.history), "lr_scale": self.lr_scale,
            "batches": self.batches.state_dict() if self.batches is not None else None,
        })
        self.saved_epoch = epoch + 1
        self.last_state_time = time.perf_counter()

    # ----------------------------------------------------------------- output

    def write_model(self, keep_state: bool) -> None:
        head = self.head
        meta = {
            "arch": self.arch, "timm_name": self.timm_name, "num_classes": self.num_classes,
            "image_size": self.image_size, "best_epoch": int(self.best["epoch"]), "valid_auc": float(self.best["auc"]),
            "valid_acc": float(self.best["acc"]), "selection_metric": self.selection, "normalisation": self.norm,
            "seed": self.seed, "epochs": self.epochs, "epochs_trained": len(self.history),
            "stopped_early": len(self.history) < self.epochs, "balanced_batches": self.balanced,
            "train_size": int(len(self.train_x)),
            "train_class_counts": None if self.heads else np.bincount(self.train_y, minlength=self.num_classes).tolist(),
            "precision": self.precision, "pretrained": str(self.pretrained) if self.pretrained else None,
            "head": {k: head[k] for k in ("generator", "family", "config", "num_classes", "image_size", "digest")}
            if head else None,
            "lr": self.lr, "lr_scale": self.lr_scale, "config_hash": self.run_hash,
        }
        if self.heads:
            meta.update(heads=list(self.heads), valid_error=-float(self.best["metric"]))
        save_state(self.model_path, {"state_dict": self.best["state"], "meta": meta})
        columns = HISTORY_COLUMNS if not self.heads else HISTORY_COLUMNS[:2] + ["valid_error"] + HISTORY_COLUMNS[2:]
        write_csv(pd.DataFrame(self.history, columns=columns), self.history_path)
        if not keep_state:
            clear_state(self.state_path.parent)
        self.log.info(f"{self.arch} seed {self.seed}: best epoch {meta['best_epoch']} (valid_auc={meta['valid_auc']:.4f}, "
                      f"valid_acc={meta['valid_acc']:.4f}) -> {self.model_path}")


def train_classifier(
    arch: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    cfg: dict,
    compute: dict,
    seed: int,
    out_dir: str | Path,
    log=None,
    *,
    num_classes: int | None = None,
    stop_after: int | None = None,
    keep_state: bool = False,
    head: dict | None = None,
    divergence: dict | None = None,
    heads=None,
) -> dict:
    """Train one classifier and keep the epoch with the best validation score.

    cfg (config `downstream:`): image_size, epochs, batch_size, lr, weight_decay, augment,
    pretrained (arch -> local weights file), arch_overrides (arch -> settings over these). compute (config `compute:`): device,
    channels_last, precision.downstream (fp32 | bf16 | fp16). divergence (config `divergence:`):
    automatic retries after a divergence (:mod:`histaug.guard`).

    The validation score is AUC (macro one-vs-rest for more than two classes), or accuracy when
    the validation set holds a single class; ties keep the earlier epoch. Writes
    out_dir/model.pt and out_dir/history.csv atomically. out_dir/state/last.pt is refreshed
    after every epoch (or at most every ``state_every_seconds``); a rerun with the same data and
    settings continues from it. It is removed
    once model.pt is written unless `keep_state`. `stop_after` ends the call after that many
    completed epochs without writing model.pt (time-boxed jobs); call again to continue.

    `head` (from :func:`histaug.classify.head_source`) trains a GAN discriminator's class head
    instead of a timm network (arch ``<generator>_head``): it starts from the GAN-trained weights,
    sees images in [-1, 1] at the generator's resolution and uses ``cfg["head_lr"]`` (default ``lr``).

    `heads` (level counts L_1..L_A) trains an attribute predictor instead
    (:class:`histaug.classify.AttributePredictor`: one classification head per attribute, summed
    cross-entropies; labels (N, A)); the best epoch is the one with the lowest mean attribute error
    (MSE of the expected normalised level, ``valid_error`` in history.csv).

    Returns a summary dict: finished, best_epoch, valid_auc, valid_acc, selection_metric,
    epochs_completed, resumed_from_epoch, model_path, history_path, seconds, lr_scale,
    divergence_retries.
    """
    log = log or get_logger()
    t_run = time.perf_counter()

    def attempt(lr_scale: float) -> dict:
        run = _ClassifierRun(arch, train_x, train_y, valid_x, valid_y, cfg, compute, seed, out_dir, log, num_classes,
                             head, lr_scale, heads)
        resumed_from = run.start_epoch
        for epoch in range(run.start_epoch, run.epochs):
            if run.should_stop() or (stop_after is not None and epoch >= stop_after):
                break
            run.run_epoch(epoch, force_state=stop_after is not None and epoch + 1 >= stop_after)
        completed = len(run.history)
        stopped_early = completed < run.epochs and run.should_stop()
        if stopped_early:
            log.info(f"{arch} seed {seed}: early stop after epoch {completed}: no better validation "
                     f"{run.selection} for {run.patience} epochs (best epoch {run.best['epoch']})")
        summary = {"arch": arch, "seed": int(seed), "finished": completed >= run.epochs or stopped_early,
                   "epochs_completed": completed, "stopped_early": stopped_early,
                   "resumed_from_epoch": resumed_from, "best_epoch": run.best["epoch"], "valid_auc": run.best["auc"],
                   "valid_acc": run.best["acc"], "selection_metric": run.selection, "model_path": str(run.model_path),
                   "history_path": str(run.history_path), "lr_scale": run.lr_scale}
        if not summary["finished"]:
            log.info(f"{arch} seed {seed}: stopped after epoch {completed}/{run.epochs}; rerun to continue from "
                     f"{run.state_path}")
            return summary
        if run.best["state"] is None:
            raise PipelineError(
                f"{arch} seed {seed}: no epoch gave a finite validation {run.selection} (training diverged); "
                "lower config downstream.lr or use compute.precision.downstream: fp32"
            )
        run.write_model(keep_state)
        return summary

    summary, retries = run_with_retries(attempt, divergence_settings(divergence), log, f"classifier {arch} seed {seed}")
    return {**summary, "divergence_retries": retries, "seconds": time.perf_counter() - t_run}
