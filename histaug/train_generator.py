"""Generator training: one loop per family type, chosen by the family registry.

``train_generator`` is the single entry point. It seeds everything from ``gen_cfg["seed"]``, builds
the family's networks (:func:`models.build_generator`) and hands them to the loop the family
registered with:

* :func:`train_adversarial` -- per step, ``n_critic`` discriminator updates (each on a fresh real
  batch, fakes drawn for the same labels) then one generator update, with the family's loss hooks
  (default :class:`histaug.losses.AdversarialObjective`: bce | wgan-gp | hinge, gradient penalty,
  auxiliary-classifier terms when D has a class head). Adam for G and D, EMA of G's weights.
* :func:`train_vae` -- per step, one Adam update on reconstruction + kl_weight · KL.

Both share :func:`_run_loop`: images are resized once (area averaging, i.e. antialiased) to
``image_size`` and kept as uint8 on the device, each batch is scaled to [-1, 1]; batches are
class-balanced (``sampler: balanced``, default) or plainly shuffled (``sampler: shuffle``) without
replacement within each pass; progress bar, a log line and a history row every ``log_every``
steps; a resumable checkpoint every ``checkpoint_every`` steps and at the end.

Resuming: ``state_dir/last.pt`` holds model, optimiser, EMA and loss-hook states, the step, the
python/numpy/torch RNG states, the data-order generator state and hashes of the config (without
``steps`` and the logging keys, so a run can be extended) and of the training data. A matching
state is resumed and continues bit-identically to an uninterrupted run on CPU; a state from another
config or other data is ignored (logged) and training starts fresh.

The final checkpoint (``out_path``) holds the generator (EMA weights when EMA is on), its config
and the summary; for adversarial families also the discriminator and the loss-hook states
(``discriminator_state``, ``objective_state``), so that a discriminator's class head can be
reused after training (:func:`load_discriminator`).

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
(``selection_hash``). One limit: extending ``steps`` of a finished run keeps the score its old last
step received, which an uninterrupted longer run would not have computed.

One *step* is one generator update. ``images_per_s`` counts real training images fed to the model
(``n_critic · batch_size`` per adversarial step, ``batch_size`` per VAE step).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models.registry import GANParts, build_generator, require

from .losses import AdversarialObjective, vae_loss
from .model_selection import KEY as SELECTION_KEY
from .model_selection import FIDScorer, is_better, selection_settings
from .utils import (
    PipelineError,
    atomic_path,
    autocast,
    cap_images,
    config_hash,
    get_device,
    get_logger,
    progress,
    seed_everything,
    write_csv,
)

STATE_FILE = "last.pt"
HISTORY_FILE = "history.csv"
# Keys that do not change what a training step does: a state saved under other values may be resumed.
NON_STATE_KEYS = frozenset({"steps", "log_every", "checkpoint_every"})
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


def state_hash(gen_cfg: dict, num_classes: int) -> str:
    """config_hash of the training-relevant part of ``gen_cfg`` (without ``steps`` and logging keys).

    ``model_selection`` counts (see the module docstring); ``model_selection: null`` hashes as if absent.
    """
    relevant = {k: v for k, v in gen_cfg.items()
                if k not in NON_STATE_KEYS and not (k == SELECTION_KEY and v is None)}
    return config_hash({"config": relevant, "num_classes": num_classes})


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


# --------------------------------------------------------------------------- RNG state


def get_rng_state() -> dict:
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    s = state["numpy"]
    np.random.set_state((s["name"], np.asarray(s["key"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a network's weights: θ_ema ← β θ_ema + (1 - β) θ (buffers copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def _make_ema(gen_cfg: dict, model: nn.Module, gen_name: str) -> EMA | None:
    decay = gen_cfg.get("ema_decay")
    if decay in (None, 0, 0.0):
        return None
    if not 0.0 < float(decay) < 1.0:
        raise PipelineError(f"config key generators.{gen_name}.ema_decay={decay!r}: expected a number in (0, 1) or null")
    return EMA(model, float(decay))


def _betas(gen_cfg: dict, gen_name: str, default: tuple[float, float]) -> tuple[float, float]:
    betas = gen_cfg.get("betas", default)
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise PipelineError(f"config key generators.{gen_name}.betas={betas!r}: expected two numbers, e.g. [0.0, 0.9]")
    return float(betas[0]), float(betas[1])


# --------------------------------------------------------------------------- per-family steps


class AdversarialTrainer:
    """One adversarial step: ``n_critic`` D updates, one G update, EMA update."""

    kind = "adversarial"

    def __init__(self, gen_name: str, gen_cfg: dict, parts: GANParts, device, precision: str, channels_last: bool):
        self.device, self.precision = torch.device(device), precision
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.G = parts.generator.to(device=self.device, memory_format=fmt).train()
        self.D = parts.discriminator.to(device=self.device, memory_format=fmt).train()
        self.objective = (parts.objective or AdversarialObjective.from_config(gen_cfg, gen_name)).to(self.device)
        self.augment = parts.augment
        self.n_critic = int(gen_cfg.get("n_critic", 1))
        if self.n_critic < 1:
            raise PipelineError(f"config key generators.{gen_name}.n_critic={self.n_critic}: must be >= 1")
        self.batch_size = int(gen_cfg["batch_size"])
        lr = float(require(gen_cfg, "lr", gen_name, (int, float)))
        betas = _betas(gen_cfg, gen_name, (0.0, 0.9))
        self.opt_g = torch.optim.Adam(
            list(self.G.parameters()) + list(self.objective.generator_parameters()),
            lr=float(gen_cfg.get("g_lr", lr)),
            betas=betas,
        )
        self.opt_d = torch.optim.Adam(
            list(self.D.parameters()) + list(self.objective.discriminator_parameters()),
            lr=float(gen_cfg.get("d_lr", lr)),
            betas=betas,
        )
        scaler_on = precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.ema = _make_ema(gen_cfg, self.G, gen_name)
        self.images_per_step = self.n_critic * self.batch_size

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        if self.augment is not None:
            x = self.augment(x)
        return self.D(x, labels)

    def _latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.G.latent_dim, device=self.device)

    def step(self, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> dict:
        d_terms: dict[str, torch.Tensor] = {}
        for _ in range(self.n_critic):
            real, labels = next_batch()
            with torch.no_grad(), autocast(self.device, self.precision):
                fake = self.G(self._latent(real.shape[0]), labels)
            with autocast(self.device, self.precision):
                d_loss, terms = self.objective.discriminator_loss(self.discriminate, real, fake.float(), labels)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_loss).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            for k, v in terms.items():
                d_terms[k] = d_terms.get(k, 0.0) + v / self.n_critic

        self.D.requires_grad_(False)
        try:
            with autocast(self.device, self.precision):
                fake = self.G(self._latent(labels.shape[0]), labels)
                g_loss, g_terms = self.objective.generator_loss(self.discriminate, fake, labels)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(g_loss).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.G)
        return {**d_terms, **g_terms}

    def export_generator(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.G

    def state_dict(self) -> dict:
        state = {
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "objective": self.objective.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.objective.load_state_dict(state["objective"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


class VAETrainer:
    """One VAE step: Adam on Σ(x̂ - x)² + kl_weight · KL."""

    kind = "vae"

    def __init__(self, gen_name: str, gen_cfg: dict, parts: GANParts, device, precision: str, channels_last: bool):
        self.device, self.precision = torch.device(device), precision
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = parts.generator.to(device=self.device, memory_format=fmt).train()
        if not hasattr(self.model, "reconstruct"):
            raise TypeError(f"family {parts.family!r}: the VAE loop needs a model with reconstruct(x, labels)")
        self.kl_weight = float(gen_cfg.get("kl_weight", 1.0))
        self.batch_size = int(gen_cfg["batch_size"])
        lr = float(require(gen_cfg, "lr", gen_name, (int, float)))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=_betas(gen_cfg, gen_name, (0.9, 0.999)))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.ema = _make_ema(gen_cfg, self.model, gen_name)
        self.images_per_step = self.batch_size

    def step(self, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> dict:
        real, labels = next_batch()
        with autocast(self.device, self.precision):
            x_hat, mu, logvar = self.model.reconstruct(real, labels)
            loss, terms = vae_loss(x_hat, real, mu, logvar, self.kl_weight)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return terms

    def export_generator(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


TRAINER_CLASSES = {"adversarial": AdversarialTrainer, "vae": VAETrainer}


def build_trainer(gen_name: str, gen_cfg: dict, parts: GANParts, compute: dict | None = None):
    """The step object of ``parts.trainer`` on the device/precision/memory format from ``compute``."""
    device, precision, channels_last = compute_settings(compute or {})
    return TRAINER_CLASSES[parts.trainer](gen_name, gen_cfg, parts, device, precision, channels_last)


def compute_settings(compute: dict) -> tuple[torch.device, str, bool]:
    """(device, generator precision, channels_last) from the config's ``compute`` section."""
    device = get_device(compute.get("device", "auto"))
    precision = compute.get("precision", "fp32")
    if isinstance(precision, dict):
        precision = precision.get("generators", "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise PipelineError(f"config key compute.precision.generators={precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise PipelineError("config key compute.precision.generators='fp16' needs a CUDA device; use bf16 or fp32")
    return device, precision, bool(compute.get("channels_last", False))


# --------------------------------------------------------------------------- the shared loop


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, log: logging.Logger) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: start over rather than fail
        log.warning("%s: cannot read saved training state (%s); starting fresh", path, exc)
        return None


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


def _run_loop(
    kind: str,
    gen_name: str,
    gen_cfg: dict,
    parts: GANParts,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    out_path: str | Path,
    state_dir: str | Path,
    compute: dict,
    log: logging.Logger | None,
    scorer: Callable[[nn.Module], float] | None = None,
) -> dict:
    log = log or get_logger()
    if parts.trainer != kind:
        raise TypeError(f"family {parts.family!r} is trained by the {parts.trainer!r} loop, not {kind!r}")
    out_path, state_dir = Path(out_path), Path(state_dir)
    steps = require(gen_cfg, "steps", gen_name, int, minimum=1)
    batch_size = require(gen_cfg, "batch_size", gen_name, int, minimum=1)
    image_size = require(gen_cfg, "image_size", gen_name, int, minimum=8)
    log_every = require({"log_every": 100, **gen_cfg}, "log_every", gen_name, int, minimum=1)
    checkpoint_every = require({"checkpoint_every": 1000, **gen_cfg}, "checkpoint_every", gen_name, int, minimum=1)
    sampler_kind = gen_cfg.get("sampler", "balanced")
    if sampler_kind not in SAMPLERS:
        raise PipelineError(f"config key generators.{gen_name}.sampler={sampler_kind!r}: expected one of {SAMPLERS}")
    seed = int(gen_cfg.get("seed", 0))
    selection = selection_settings(gen_cfg, gen_name)
    if selection is not None and scorer is None:
        raise PipelineError(f"config key generators.{gen_name}.{SELECTION_KEY} is set, but the training loop got no "
                            "scorer (validation images and a feature function; see train_generator)")

    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise PipelineError(f"generator {gen_name!r}: training images must be uint8 (N,H,W,3), got {images.dtype} {images.shape}")
    if len(images) != len(labels) or len(images) == 0:
        raise PipelineError(f"generator {gen_name!r}: {len(images)} training images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise PipelineError(f"generator {gen_name!r}: labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    absent = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if absent:
        log.warning("%s: classes %s have no training images; the generator cannot learn them", gen_name, absent)

    trainer = build_trainer(gen_name, gen_cfg, parts, compute)
    device = trainer.device
    fmt = torch.channels_last if compute.get("channels_last", False) else torch.contiguous_format
    data = prepare_images(images, image_size, device)
    label_t = torch.from_numpy(labels).to(device)
    sampler = BatchSampler(labels, batch_size, sampler_kind == "balanced", seed)

    def next_batch():
        idx = sampler.next().to(device)
        return to_model_range(data[idx]).contiguous(memory_format=fmt), label_t[idx]

    cfg_hash = state_hash(gen_cfg, num_classes)
    data_hash = data_fingerprint(images, labels)
    selection_hash = getattr(scorer, "fingerprint", None) if selection is not None else None
    state_path = state_dir / STATE_FILE
    start_step, history, prior_seconds = 0, [], 0.0
    best: dict | None = None  # model selection: {"step", "fid_valid", "networks"} of the lowest FID so far
    if state_path.exists():
        state = _load_state(state_path, log)
        if state is None:
            pass
        elif state.get("config_hash") != cfg_hash:
            log.info("%s: ignoring %s, saved for another config (hash %s, now %s); starting fresh",
                     gen_name, state_path, state.get("config_hash"), cfg_hash)
        elif state.get("data_hash") != data_hash:
            log.info("%s: ignoring %s, saved for other training data; starting fresh", gen_name, state_path)
        elif state.get("selection_hash") != selection_hash:
            log.info("%s: ignoring %s, saved for other model-selection data (validation images or feature "
                     "extractor); starting fresh", gen_name, state_path)
        elif state["step"] > steps:
            log.info("%s: ignoring %s, it is at step %d beyond steps=%d; starting fresh", gen_name, state_path, state["step"], steps)
        else:
            trainer.load_state_dict(state["trainer"])
            sampler.load_state_dict(state["sampler"])
            set_rng_state(state["rng"])
            start_step, history = int(state["step"]), list(state["history"])
            prior_seconds = float(state.get("seconds", 0.0))
            best = state.get("best")
            log.info("%s: resuming from %s at step %d/%d", gen_name, state_path, start_step, steps)
            if best is not None:
                log.info("%s: best so far is step %d (fid_valid %.4g)", gen_name, best["step"], best["fid_valid"])

    def save(step: int, seconds: float) -> None:
        _save_state(
            state_path,
            {
                "config_hash": cfg_hash,
                "data_hash": data_hash,
                "step": step,
                "trainer": trainer.state_dict(),
                "sampler": sampler.state_dict(),
                "rng": get_rng_state(),
                "history": history,
                "seconds": seconds,
                "selection_hash": selection_hash,
                "best": best,
            },
        )

    log.info(
        "%s: training %s (%s loop) for %d steps on %d images at %dpx, batch %d, device %s, precision %s",
        gen_name, parts.family, kind, steps, len(images), image_size, batch_size, device, trainer.precision,
    )
    sums: dict[str, torch.Tensor] = {}
    n_sum = 0
    t0 = time.perf_counter()
    t_log, step_log = t0, start_step
    bar = progress(total=steps, initial=start_step, desc=gen_name, unit="step")
    try:
        for step in range(start_step + 1, steps + 1):
            terms = trainer.step(next_batch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1
            evaluate = selection is not None and (step % selection["every"] == 0 or step == steps)
            if step % log_every == 0 or step == steps or evaluate:
                row = {"step": step, **{k: float(v) / n_sum for k, v in sums.items()}}
                if evaluate:
                    t_eval = time.perf_counter()
                    row["fid_valid"] = _score(scorer, trainer)
                    if is_better(row["fid_valid"], best["fid_valid"] if best else None):
                        best = {"step": step, "fid_valid": row["fid_valid"], "networks": _final_networks(trainer)}
                    log.info("%s step %d: fid_valid=%.4g (%.1f s); best so far step %d (fid_valid %.4g)", gen_name,
                             step, row["fid_valid"], time.perf_counter() - t_eval, best["step"], best["fid_valid"])
                history.append(row)
                now = time.perf_counter()
                rate = (step - step_log) * trainer.images_per_step / max(now - t_log, 1e-9)
                log.info("%s step %d/%d %s | %.1f img/s", gen_name, step, steps,
                         " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"), rate)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
                sums, n_sum, t_log, step_log = {}, 0, now, step
            if step % checkpoint_every == 0 and step < steps:
                save(step, prior_seconds + time.perf_counter() - t0)
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    steps_run = steps - start_step
    save(steps, prior_seconds + seconds)

    summary = {
        "steps": steps,
        "steps_run": steps_run,
        "resumed_from": start_step,
        "seconds": seconds,
        "total_seconds": prior_seconds + seconds,
        "images_per_s": steps_run * trainer.images_per_step / seconds if steps_run and seconds > 0 else None,
        "steps_per_s": steps_run / seconds if steps_run and seconds > 0 else None,
        "final_losses": {k: v for k, v in history[-1].items() if k not in ("step", "fid_valid")} if history else {},
        SELECTION_KEY: selection,
        "best_step": best["step"] if best else None,
        "best_fid_valid": best["fid_valid"] if best else None,
        "final_fid_valid": history[-1].get("fid_valid") if selection is not None and history else None,
    }
    write_csv(pd.DataFrame(history), out_path.parent / HISTORY_FILE)
    generator = trainer.export_generator()
    # With model selection the checkpoint holds the best step's networks, else the last step's.
    networks = best["networks"] if best is not None else _final_networks(trainer)
    with atomic_path(out_path) as tmp:
        torch.save(
            {
                "family": parts.family,
                "name": gen_name,
                "config": dict(gen_cfg),
                "num_classes": int(num_classes),
                "image_size": int(generator.image_size),
                "latent_dim": int(generator.latent_dim),
                **networks,
                "step": best["step"] if best is not None else steps,  # the step the networks are from
                SELECTION_KEY: selection,
                "best_step": summary["best_step"],
                "best_fid_valid": summary["best_fid_valid"],
                "summary": summary,
            },
            tmp,
        )
    log.info("%s: wrote %s (%d steps, %.1f s this run)", gen_name, out_path, steps, seconds)
    if best is not None:
        log.info("%s: model selection %s: the checkpoint holds the best step, %d of %d (fid_valid %.4g; last step %.4g)",
                 gen_name, selection, best["step"], steps, best["fid_valid"], summary["final_fid_valid"])
    return summary


def train_adversarial(gen_name, gen_cfg, parts, images, labels, num_classes, out_path, state_dir, compute, log=None,
                      scorer=None) -> dict:
    """The adversarial loop (any family registered with trainer="adversarial")."""
    return _run_loop("adversarial", gen_name, gen_cfg, parts, images, labels, num_classes, out_path, state_dir, compute,
                     log, scorer)


def train_vae(gen_name, gen_cfg, parts, images, labels, num_classes, out_path, state_dir, compute, log=None,
              scorer=None) -> dict:
    """The VAE loop (any family registered with trainer="vae")."""
    return _run_loop("vae", gen_name, gen_cfg, parts, images, labels, num_classes, out_path, state_dir, compute, log,
                     scorer)


LOOPS = {"adversarial": train_adversarial, "vae": train_vae}


def train_generator(
    gen_name: str,
    gen_cfg: dict,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    out_path: str | Path,
    state_dir: str | Path,
    compute: dict,
    log: logging.Logger | None = None,
    selection_images: np.ndarray | None = None,
    feature_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Train generator ``gen_name`` (one entry of the config's ``generators:``) and write ``out_path``.

    With ``model_selection`` in ``gen_cfg``, ``selection_images`` (the real validation images, uint8
    NHWC at any size) and ``feature_fn`` (uint8 (B, H, W, 3) -> (B, D) features, the FID Inception
    network in the pipeline) are required. They are ignored otherwise.

    Returns the summary dict (steps, final losses, seconds, images/s, best step). See the module docstring.
    """
    seed_everything(int(gen_cfg.get("seed", 0)))
    parts = build_generator(gen_cfg, num_classes, name=gen_name)
    scorer = selection_scorer(gen_name, gen_cfg, num_classes, selection_images, feature_fn)
    return LOOPS[parts.trainer](gen_name, gen_cfg, parts, images, labels, num_classes, out_path, state_dir, compute or {},
                                log, scorer)


def selection_scorer(gen_name: str, gen_cfg: dict, num_classes: int, real_images: np.ndarray | None,
                     feature_fn: Callable | None) -> FIDScorer | None:
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
    return FIDScorer(real, feature_fn, settings["n_images"], num_classes)


def _read_checkpoint(path: Path) -> dict:
    """Load a final generator checkpoint, with a clear error when it is missing or not one."""
    if not path.exists():
        raise PipelineError(f"{path}: generator checkpoint not found (was the train_generator rule run?)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("config", "num_classes", "generator_state") if k not in ckpt]
    if missing:
        raise PipelineError(f"{path}: not a generator checkpoint (missing {missing})")
    return ckpt


def checkpoint_step(checkpoint_path: str | Path) -> dict:
    """Which training step a final checkpoint holds: {"step", "steps", "best_fid_valid"}.

    ``step`` is the best step by validation FID when the generator had ``model_selection``, else
    the last one; ``steps`` is the configured number of steps. Reads no weights into memory.
    """
    ckpt = torch.load(Path(checkpoint_path), map_location="cpu", weights_only=True, mmap=True)
    summary = ckpt.get("summary") or {}
    return {"step": ckpt.get("step"), "steps": summary.get("steps", ckpt.get("step")),
            "best_fid_valid": ckpt.get("best_fid_valid")}


def load_generator(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the generator saved by :func:`train_generator` (EMA weights when EMA was on), in eval mode."""
    path = Path(checkpoint_path)
    ckpt = _read_checkpoint(path)
    parts = build_generator(ckpt["config"], ckpt["num_classes"], name=ckpt.get("name", "<name>"))
    generator = parts.generator
    generator.load_state_dict(ckpt["generator_state"])
    return generator.to(device).eval()


def load_discriminator(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the discriminator saved with an adversarial family's generator, in eval mode.

    The networks are rebuilt through the family registry from the checkpoint's config, and the
    saved discriminator weights (``discriminator_state``: the last step's, or with
    ``model_selection`` the best step's, matching the generator) are loaded. ``forward(x, labels)``
    returns ``{"source": (B,), "class_logits": (B, K) or None}`` for images in [-1, 1] at the
    generator's ``image_size``.
    """
    path = Path(checkpoint_path)
    ckpt = _read_checkpoint(path)
    if "discriminator_state" not in ckpt:
        raise PipelineError(
            f"{path}: holds no discriminator weights (family {ckpt.get('family')!r} has no discriminator, "
            "or the checkpoint was written before discriminators were saved; retrain it)"
        )
    parts = build_generator(ckpt["config"], ckpt["num_classes"], name=ckpt.get("name", "<name>"))
    if parts.discriminator is None:
        raise PipelineError(f"{path}: family {parts.family!r} builds no discriminator")
    discriminator = parts.discriminator
    discriminator.load_state_dict(ckpt["discriminator_state"])
    return discriminator.to(device).eval()
