"""Generator training: the shared loop that drives every family, chosen by the family registry.

``train_generator`` is the single entry point. It seeds everything from ``gen_cfg["seed"]``, builds
the family's networks (:func:`models.build_generator`) and hands them to the loop the family
registered with: ``adversarial`` (per step ``n_critic`` discriminator updates, then one generator
update, with the family's loss hooks) or ``vae`` (one update on reconstruction + KL). The steps
themselves live in :mod:`histaug.gan_trainers`; both loop types share :func:`_run_loop`.

:func:`_run_loop`: images are resized once (area averaging, i.e. antialiased) to ``image_size``
and kept as uint8 on the device, each batch is scaled to [-1, 1]; batches are class-balanced
(``sampler: balanced``, default) or plainly shuffled (``sampler: shuffle``) without replacement
within each pass; progress bar, a log line and a history row every ``log_every`` steps; a
resumable training state every ``checkpoint_every`` steps; the final checkpoint at the end.

Divergence: every step's loss terms and gradient norms go to a :class:`histaug.guard.DivergenceGuard`.
At every logging step and before every save the guard also checks every weight; a NaN or infinite
value stops the job with one message naming the generator, the step, the loss term and the fix.
Nothing is written from the diverged state: no checkpoint, no history row, no training state, so
the last good state (the last ``checkpoint_every`` step) stays on disk. With ``divergence.retries``
in the config, the job resumes from that state with the learning rates multiplied by
``divergence.lr_factor`` (logged; the scale is kept in the state and in the checkpoint summary).

Resuming: ``state_dir/last.pt`` holds model, optimiser, EMA and loss-hook states, the step, the
python/numpy/torch RNG states, the data-order generator state and hashes of the config (without
``steps`` and the logging keys, so an interrupted run can be extended) and of the training data. A
matching state of an unfinished run is resumed and continues bit-identically to an uninterrupted
run on CPU; a state from another config or other data is ignored (logged) and training starts
fresh. An unreadable state is moved aside with a warning; temporary files of a save that was
killed are removed. Once the final checkpoint is written the state folder is removed, so a forced
rerun trains afresh; with ``keep_state: true`` in the entry it is kept, and a later run with more
``steps`` continues from it (a state at or beyond ``steps`` is never resumed).

The final checkpoint (``out_path``) holds the generator (EMA weights when EMA is on), its config
and the summary; for adversarial families also the discriminator and the loss-hook states
(``discriminator_state``, ``objective_state``), so that a discriminator's class head can be
reused after training (:mod:`histaug.generator_checkpoint` reads it).

Model selection (``model_selection: {every, n_images}``, off when null or absent; see
:mod:`histaug.model_selection`): every ``every`` steps and at the last step, the loop scores the
exported generator by its FID against the validation split. The score goes into that step's
history row as ``fid_valid`` (a history row is also written at every evaluation step). The loop
keeps copies of the networks of the lowest FID so far. The final checkpoint then holds the *best*
step's generator, discriminator and loss-hook states, with ``best_step``, ``best_fid_valid`` and
``model_selection`` in the checkpoint and its summary. The best step and its networks are part of
``last.pt``. Keeping them in the one atomically written state file means the saved best always
belongs to the saved step, so an interrupted and resumed run keeps the same best as an
uninterrupted one. An evaluation restores the RNG states and the generator's train/eval mode
afterwards, so it does not change the training trajectory. ``model_selection`` is part of the config
hash on purpose. ``every`` and ``n_images`` do not change a training step, but they decide which
steps are scored and how, so a best found under other settings cannot be compared with new scores.
Resuming under changed settings would mix two selection rules, so it starts fresh instead. null and
absent hash alike. The validation images and the feature space are checked the same way
(``selection_hash``). One limit: extending ``steps`` of a kept state keeps the score its old last
step received, which an uninterrupted longer run would not have computed.

One *step* is one generator update. ``images_per_s`` counts real training images fed to the model
(``n_critic · batch_size`` per adversarial step, ``batch_size`` per VAE step).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import Condition, as_condition
from models.registry import GANParts, build_generator, require

from . import distributed
from .batches import BatchSampler
from .gan_trainers import AdversarialTrainer, build_trainer
from .guard import DivergenceGuard, divergence_settings, run_with_retries
from .model_selection import KEY as SELECTION_KEY
from .model_selection import FIDScorer, is_better, selection_settings
from .training_state import (
    clear_state,
    get_rng_state,
    load_state,
    remove_orphan_temps,
    save_state,
    set_rng_state,
)
from .utils import (
    PipelineError,
    atomic_path,
    cap_images,
    config_hash,
    get_logger,
    progress,
    seed_everything,
    write_csv,
)

STATE_FILE = "last.pt"
HISTORY_FILE = "history.csv"
# Keys that do not change what a training step does: a state saved under other values may be resumed.
NON_STATE_KEYS = frozenset({"steps", "log_every", "checkpoint_every", "keep_state", "label", distributed.GPUS_KEY})
SAMPLERS = ("balanced", "shuffle")


# --------------------------------------------------------------------------- data


def prepare_images(images: np.ndarray, image_size: int, device, chunk: int = 512) -> torch.Tensor:
    """uint8 NHWC -> uint8 NCHW tensor on ``device`` at ``image_size``.

    Downscaling uses area averaging (every source pixel contributes, so no aliasing); upscaling
    uses antialiased bicubic interpolation. Resized values are rounded back to uint8 to keep the
    training set compact on the device (≤ 0.5/255 error).
    """
    n, h, w, _ = images.shape
    out = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8, device=device)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).to(device).permute(0, 3, 1, 2)
        if (h, w) != (image_size, image_size):
            x = x.float()
            if h >= image_size and w >= image_size:
                x = F.interpolate(x, size=(image_size, image_size), mode="area")
            else:
                x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        out[start : start + chunk] = x
    return out


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-1 of the training images and labels (decides, with the config hash, whether a state may be resumed)."""
    h = hashlib.sha1()
    h.update(repr((images.shape, str(images.dtype))).encode())
    h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def state_hash(gen_cfg: dict, condition: int | Condition) -> str:
    """config_hash of the training-relevant part of ``gen_cfg`` (without ``steps`` and logging keys) and
    of the condition (number of classes, or attribute levels and contrastive classes).

    ``model_selection`` counts (see the module docstring); ``model_selection: null`` hashes as if absent.
    """
    condition = as_condition(condition)
    relevant = {k: v for k, v in gen_cfg.items()
                if k not in NON_STATE_KEYS and not (k == SELECTION_KEY and v is None)}
    if condition.kind == "class":
        return config_hash({"config": relevant, "num_classes": condition.num_classes})
    return config_hash({"config": relevant, "condition": condition.to_dict()})


# --------------------------------------------------------------------------- the shared loop


def _final_networks(trainer) -> dict:
    """Copies (on the CPU, never aliasing the live weights) of what the final checkpoint stores: the
    exported generator, and for adversarial families the discriminator and the loss-hook states."""

    def copy_of(state: dict) -> dict:
        return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state.items()}

    networks = {"generator_state": copy_of(trainer.export_generator().state_dict())}
    if isinstance(trainer, AdversarialTrainer):
        networks["discriminator_state"] = copy_of(trainer.D.state_dict())
        networks["objective_state"] = copy_of(trainer.objective.state_dict())
    return networks


def _score(scorer: Callable[[nn.Module], float], trainer) -> float:
    """``scorer(exported generator)``, leaving the RNG states and the networks' train/eval mode as they were."""
    rng = get_rng_state()
    generator = trainer.export_generator()
    was_training = generator.training
    try:
        return float(scorer(generator))
    finally:
        generator.train(was_training)
        set_rng_state(rng)


def _checked_data(gen_name: str, images, labels, condition: Condition, log) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 NHWC and labels as (N,) classes or (N, A) attribute levels, checked against ``condition``."""
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    if condition.kind == "class":
        labels = labels.reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise PipelineError(f"generator {gen_name!r}: training images must be uint8 (N,H,W,3), got {images.dtype} {images.shape}")
    if len(images) != len(labels) or len(images) == 0:
        raise PipelineError(f"generator {gen_name!r}: {len(images)} training images but {len(labels)} labels")
    try:
        condition.check(labels, f"generator {gen_name!r}: training labels")
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    if condition.kind == "class":
        absent = sorted(set(range(condition.num_classes)) - set(np.unique(labels).tolist()))
        if absent:
            log.warning("%s: classes %s have no training images; the generator cannot learn them", gen_name, absent)
    return images, labels


def sampler_groups(labels: np.ndarray, condition: Condition) -> np.ndarray:
    """What ``sampler: balanced`` balances: the classes, or for attributes the contrastive classes
    (every kept combination; the merged rare ones together)."""
    if condition.kind == "class":
        return labels
    return condition.contrastive_class(torch.from_numpy(labels)).numpy()


def divergence_fix(gen_name: str, gen_cfg: dict, trainer) -> str:
    """What a user can change when generator ``gen_name`` diverges."""
    fix = f"lower generators.{gen_name}.lr (now {gen_cfg.get('lr')}"
    fix += f", effective x{trainer.lr_scale:g})" if trainer.lr_scale != 1 else ")"
    if trainer.precision != "fp32":
        fix += f", or set compute.precision.generators: fp32 (now {trainer.precision})"
    return fix + ", or set divergence.retries > 0 to resume from the last good state at a lower learning rate automatically"


class _GeneratorRun:
    """One call of the shared loop: settings, the trainer, the batch sampler and the resumable state."""

    def __init__(self, kind, gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute,
                 log, scorer, lr_scale):
        if parts.trainer != kind:
            raise TypeError(f"family {parts.family!r} is trained by the {parts.trainer!r} loop, not {kind!r}")
        self.name, self.cfg, self.parts, self.kind, self.log = gen_name, gen_cfg, parts, kind, log
        self.out_path, self.state_dir = Path(out_path), Path(state_dir)
        self.state_path = self.state_dir / STATE_FILE
        self.steps = require(gen_cfg, "steps", gen_name, int, minimum=1)
        self.batch_size = require(gen_cfg, "batch_size", gen_name, int, minimum=1)
        self.image_size = require(gen_cfg, "image_size", gen_name, int, minimum=8)
        self.log_every = require({"log_every": 100, **gen_cfg}, "log_every", gen_name, int, minimum=1)
        self.checkpoint_every = require({"checkpoint_every": 1000, **gen_cfg}, "checkpoint_every", gen_name, int, minimum=1)
        sampler_kind = gen_cfg.get("sampler", "balanced")
        if sampler_kind not in SAMPLERS:
            raise PipelineError(f"config key generators.{gen_name}.sampler={sampler_kind!r}: expected one of {SAMPLERS}")
        self.selection = selection_settings(gen_cfg, gen_name)
        if self.selection is not None and scorer is None:
            raise PipelineError(f"config key generators.{gen_name}.{SELECTION_KEY} is set, but the training loop got no "
                                "scorer (validation images and a feature function; see train_generator)")
        self.scorer, self.condition = scorer, as_condition(condition)
        self.images, self.labels = _checked_data(gen_name, images, labels, self.condition, log)

        self.trainer = build_trainer(gen_name, gen_cfg, parts, compute)
        device = self.trainer.device
        fmt = torch.channels_last if compute.get("channels_last", False) else torch.contiguous_format
        data = prepare_images(self.images, self.image_size, device)
        label_t = torch.from_numpy(self.labels).to(device)
        self.sampler = BatchSampler(sampler_groups(self.labels, self.condition), self.batch_size,
                                    sampler_kind == "balanced", int(gen_cfg.get("seed", 0)))

        self.dist = distributed.current()
        rows = self.dist.rows(self.batch_size)  # this process's slice of the global batch (all of it in one process)

        def next_batch():
            idx = self.sampler.next()[rows].to(device)
            return to_model_range(data[idx]).contiguous(memory_format=fmt), label_t[idx]

        self.next_batch = next_batch
        self.hashes = {"config_hash": state_hash(gen_cfg, self.condition),
                       "data_hash": data_fingerprint(self.images, self.labels),
                       "selection_hash": getattr(scorer, "fingerprint", None) if self.selection is not None else None}
        self.start_step, self.history, self.prior_seconds = 0, [], 0.0
        self.best: dict | None = None  # model selection: {"step", "fid_valid", "networks"} of the lowest FID so far
        self.saved_step: int | None = None  # the step of the training state on disk
        self.owner = f"generator {gen_name!r}"
        self._resume(lr_scale)
        self.guard = DivergenceGuard(f"generator {gen_name!r} (family {parts.family})",
                                     divergence_fix(gen_name, gen_cfg, self.trainer))

    # ----------------------------------------------------------------- state

    def _stale_reason(self, state: dict) -> str | None:
        if state.get("config_hash") != self.hashes["config_hash"]:
            return f"saved for another config (hash {state.get('config_hash')}, now {self.hashes['config_hash']})"
        if state.get("data_hash") != self.hashes["data_hash"]:
            return "saved for other training data"
        if state.get("selection_hash") != self.hashes["selection_hash"]:
            return "saved for other model-selection data (validation images or feature extractor)"
        if int(state.get("step", 0)) >= self.steps:
            return (f"it is the state of a finished run (step {state.get('step')}, steps={self.steps}); a rerun trains "
                    "afresh")
        return None

    def _resume(self, lr_scale: float) -> None:
        if self.dist.is_main:
            remove_orphan_temps(self.state_dir, self.log, self.owner)
            remove_orphan_temps(self.out_path.parent, self.log, self.owner)
        self.dist.barrier()  # every process reads the state rank 0 left
        state = load_state(self.state_path, self.log, self.owner)
        reason = self._stale_reason(state) if state is not None else None
        if reason:
            self.log.info("%s: ignoring %s, %s; starting fresh", self.name, self.state_path, reason)
        elif state is not None:
            self.trainer.load_state_dict(state["trainer"])
            self.sampler.load_state_dict(state["sampler"])
            set_rng_state(state["rng"])
            self.start_step, self.history = int(state["step"]), list(state["history"])
            self.prior_seconds, self.best = float(state.get("seconds", 0.0)), state.get("best")
            self.saved_step = self.start_step
            lr_scale = min(lr_scale, float(state.get("lr_scale", 1.0)))
            self.log.info("%s: resuming from %s at step %d/%d", self.name, self.state_path, self.start_step, self.steps)
            if self.best is not None:
                self.log.info("%s: best so far is step %d (fid_valid %.4g)", self.name, self.best["step"],
                              self.best["fid_valid"])
        self.trainer.set_lr_scale(lr_scale)
        if lr_scale != 1:
            self.log.warning("%s: learning rates at x%g of the configured ones (divergence retries): %s", self.name,
                             lr_scale, ", ".join(f"{lr:.3g}" for lr in self.trainer.learning_rates()))

    def _kept_note(self) -> str:
        if self.saved_step is None:
            return (f"No checkpoint was written, and no training state had been saved yet "
                    f"(generators.{self.name}.checkpoint_every={self.checkpoint_every}).")
        return f"No checkpoint was written; the last good training state (step {self.saved_step}) is kept in {self.state_path}."

    def check(self, step: int) -> None:
        """The divergence guard over the terms since the last check and over every weight."""
        self.guard.check(step, self.trainer.networks(), self._kept_note())

    def save(self, step: int, seconds: float) -> None:
        self.check(step)  # never save a diverged state
        self.saved_step = step
        if not self.dist.is_main:  # one writer: every process holds the same state
            return
        save_state(self.state_path, {**self.hashes, "step": step, "trainer": self.trainer.state_dict(),
                                     "sampler": self.sampler.state_dict(), "rng": get_rng_state(),
                                     "history": self.history, "seconds": seconds, "best": self.best,
                                     "lr_scale": self.trainer.lr_scale})

    # ----------------------------------------------------------------- training

    def _log_row(self, step: int, sums: dict, n_sum: int, evaluate: bool) -> dict:
        self.check(step)
        row = {"step": step, **{k: float(v) / n_sum for k, v in sums.items()}}
        if evaluate and self.dist.is_main:  # one scorer; the score changes no process's training
            t_eval = time.perf_counter()
            row["fid_valid"] = _score(self.scorer, self.trainer)
            if is_better(row["fid_valid"], self.best["fid_valid"] if self.best else None):
                self.best = {"step": step, "fid_valid": row["fid_valid"], "networks": _final_networks(self.trainer)}
            self.log.info("%s step %d: fid_valid=%.4g (%.1f s); best so far step %d (fid_valid %.4g)", self.name, step,
                          row["fid_valid"], time.perf_counter() - t_eval, self.best["step"], self.best["fid_valid"])
        self.history.append(row)
        return row

    def train(self) -> float:
        """Run the remaining steps; returns the seconds this call spent."""
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        n_sum, t_log, step_log = 0, t0, self.start_step
        bar = progress(total=self.steps, initial=self.start_step, desc=self.name, unit="step",
                       **({} if self.dist.is_main else {"disable": True}))
        try:
            for step in range(self.start_step + 1, self.steps + 1):
                terms = distributed.average_terms(self.trainer.step(self.next_batch))
                self.guard.observe(step, terms)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_sum += 1
                evaluate = self.selection is not None and (step % self.selection["every"] == 0 or step == self.steps)
                if step % self.log_every == 0 or step == self.steps or evaluate:
                    row = self._log_row(step, sums, n_sum, evaluate)
                    now = time.perf_counter()
                    rate = (step - step_log) * self.trainer.images_per_step / max(now - t_log, 1e-9)
                    log_step = self.log.info if self.dist.is_main else self.log.debug
                    log_step("%s step %d/%d %s | %.1f img/s", self.name, step, self.steps,
                                  " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"), rate)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
                    sums, n_sum, t_log, step_log = {}, 0, now, step
                if step % self.checkpoint_every == 0 and step < self.steps:
                    self.save(step, self.prior_seconds + time.perf_counter() - t0)
                bar.update(1)
        finally:
            bar.close()
        return time.perf_counter() - t0

    def finish(self, seconds: float) -> dict:
        """Write history.csv and the final checkpoint; then remove (or, with keep_state, keep) the state."""
        steps, best, trainer = self.steps, self.best, self.trainer
        steps_run = steps - self.start_step
        summary = {
            "steps": steps, "steps_run": steps_run, "resumed_from": self.start_step, "seconds": seconds,
            "total_seconds": self.prior_seconds + seconds,
            "images_per_s": steps_run * trainer.images_per_step / seconds if steps_run and seconds > 0 else None,
            "steps_per_s": steps_run / seconds if steps_run and seconds > 0 else None,
            "final_losses": {k: v for k, v in self.history[-1].items() if k not in ("step", "fid_valid")} if self.history else {},
            SELECTION_KEY: self.selection,
            "best_step": best["step"] if best else None,
            "best_fid_valid": best["fid_valid"] if best else None,
            "final_fid_valid": self.history[-1].get("fid_valid") if self.selection is not None and self.history else None,
            "lr_scale": trainer.lr_scale,
        }
        if not self.dist.is_main:  # rank 0 writes the files; the others wait until they exist
            self.dist.barrier()
            return summary
        write_csv(pd.DataFrame(self.history), self.out_path.parent / HISTORY_FILE)
        generator = trainer.export_generator()
        # With model selection the checkpoint holds the best step's networks, else the last step's.
        networks = best["networks"] if best is not None else _final_networks(trainer)
        with atomic_path(self.out_path) as tmp:
            torch.save({"family": self.parts.family, "name": self.name, "config": dict(self.cfg),
                        "num_classes": int(self.condition.num_classes), "condition": self.condition.to_dict(),
                        "image_size": int(generator.image_size),
                        "latent_dim": int(generator.latent_dim), **networks,
                        "step": best["step"] if best is not None else steps,  # the step the networks are from
                        SELECTION_KEY: self.selection, "best_step": summary["best_step"],
                        "best_fid_valid": summary["best_fid_valid"], "summary": summary}, tmp)
        if self.cfg.get("keep_state"):
            self.save(steps, self.prior_seconds + seconds)  # extendable by a later run with more steps
        else:
            clear_state(self.state_dir)
        self.log.info("%s: wrote %s (%d steps, %.1f s this run)", self.name, self.out_path, steps, seconds)
        if best is not None:
            self.log.info("%s: model selection %s: the checkpoint holds the best step, %d of %d (fid_valid %.4g; last "
                          "step %.4g)", self.name, self.selection, best["step"], steps, best["fid_valid"],
                          summary["final_fid_valid"])
        self.dist.barrier()
        return summary


def _run_loop(kind: str, gen_name: str, gen_cfg: dict, parts: GANParts, images: np.ndarray, labels: np.ndarray,
              condition: int | Condition, out_path: str | Path, state_dir: str | Path, compute: dict,
              log: logging.Logger | None, scorer: Callable[[nn.Module], float] | None = None,
              lr_scale: float = 1.0) -> dict:
    log = log or get_logger()
    run = _GeneratorRun(kind, gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute or {},
                        log, scorer, lr_scale)
    log.info("%s: training %s (%s loop) for %d steps on %d images at %dpx, batch %d, device %s, precision %s",
             gen_name, parts.family, kind, run.steps, len(run.images), run.image_size, run.batch_size,
             run.trainer.device, run.trainer.precision)
    return run.finish(run.train())


def train_adversarial(gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute, log=None,
                      scorer=None, lr_scale: float = 1.0) -> dict:
    """The adversarial loop (any family registered with trainer="adversarial")."""
    return _run_loop("adversarial", gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute,
                     log, scorer, lr_scale)


def train_vae(gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute, log=None,
              scorer=None, lr_scale: float = 1.0) -> dict:
    """The VAE loop (any family registered with trainer="vae")."""
    return _run_loop("vae", gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir, compute, log,
                     scorer, lr_scale)


LOOPS = {"adversarial": train_adversarial, "vae": train_vae}


def train_generator(
    gen_name: str,
    gen_cfg: dict,
    images: np.ndarray,
    labels: np.ndarray,
    condition: int | Condition,
    out_path: str | Path,
    state_dir: str | Path,
    compute: dict,
    log: logging.Logger | None = None,
    selection_images: np.ndarray | None = None,
    feature_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    divergence: dict | None = None,
) -> dict:
    """Train generator ``gen_name`` (one entry of the config's ``generators:``) and write ``out_path``.

    ``condition`` is the number of classes (``labels``: (N,) classes) or a
    :class:`~models.conditioning.Condition` (for attributes, ``labels``: (N, A) levels).

    With ``model_selection`` in ``gen_cfg``, ``selection_images`` (the real validation images, uint8
    NHWC at any size) and ``feature_fn`` (uint8 (B, H, W, 3) -> (B, D) features, the FID Inception
    network in the pipeline) are required. They are ignored otherwise. ``divergence`` is the
    config's ``divergence`` section (automatic retries; see :mod:`histaug.guard`).

    Returns the summary dict (steps, final losses, seconds, images/s, best step, lr_scale,
    divergence_retries). See the module docstring.
    """
    log = log or get_logger()
    settings = divergence_settings(divergence)
    condition = as_condition(condition)
    scorer = selection_scorer(gen_name, gen_cfg, condition, selection_images, feature_fn,
                              label_rows=labels if condition.kind == "attributes" else None)

    def attempt(lr_scale: float) -> dict:
        seed_everything(int(gen_cfg.get("seed", 0)))
        parts = build_generator(gen_cfg, condition, name=gen_name)
        return LOOPS[parts.trainer](gen_name, gen_cfg, parts, images, labels, condition, out_path, state_dir,
                                    compute or {}, log, scorer, lr_scale)

    summary, retries = run_with_retries(attempt, settings, log, f"generator {gen_name!r}")
    return {**summary, "divergence_retries": retries}


def selection_scorer(gen_name: str, gen_cfg: dict, condition: int | Condition, real_images: np.ndarray | None,
                     feature_fn: Callable | None, label_rows: np.ndarray | None = None) -> FIDScorer | None:
    """The validation-FID scorer of ``model_selection``, or None when it is off.

    At most ``n_images`` real images (a seeded subset) are resized to ``image_size`` as the training
    images are (:func:`prepare_images`), so that real and generated images meet at the same resolution.
    """
    settings = selection_settings(gen_cfg, gen_name)
    if settings is None:
        return None
    if real_images is None or feature_fn is None:
        raise PipelineError(f"config key generators.{gen_name}.{SELECTION_KEY} needs the real validation images and a "
                            "feature function (train_generator(..., selection_images=..., feature_fn=...))")
    real_images = np.asarray(real_images)
    if real_images.dtype != np.uint8 or real_images.ndim != 4 or real_images.shape[-1] != 3:
        raise PipelineError(f"generator {gen_name!r}: validation images must be uint8 (N,H,W,3), got "
                            f"{real_images.dtype} {real_images.shape}")
    image_size = require(gen_cfg, "image_size", gen_name, int, minimum=8)
    real = cap_images(real_images, settings["n_images"])
    real = prepare_images(real, image_size, "cpu").permute(0, 2, 3, 1).numpy()
    return FIDScorer(real, feature_fn, settings["n_images"], as_condition(condition).num_classes, label_rows=label_rows)
