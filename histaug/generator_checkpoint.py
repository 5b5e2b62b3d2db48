"""Reading the final generator checkpoints written by :func:`histaug.train_generator.train_generator`.

``checkpoint.pt`` holds the family, the entry's config, ``num_classes``, ``image_size``,
``latent_dim``, the generator weights (EMA weights when EMA is on), for adversarial families the
discriminator and loss-hook states, the step the networks are from and the training summary. It is
read with ``weights_only=True``: tensors and plain containers only, never code.

A checkpoint whose networks hold NaN or infinite weights is refused with an error that says
training diverged (sampling from it would give black images, and FID, selection and the
classifiers would go on with them). The training loop never writes one; this guards checkpoints
from elsewhere or from older versions.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.conditioning import Condition, as_condition
from models.registry import build_generator

from .guard import nonfinite_tensors
from .utils import PipelineError

REQUIRED = ("config", "num_classes", "generator_state")


def read_checkpoint(path: str | Path) -> dict:
    """Load a final generator checkpoint, with a clear error when it is missing or not one."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: generator checkpoint not found (was the train_generator rule run?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt or foreign file
        raise PipelineError(f"{path}: cannot be read as a generator checkpoint ({type(exc).__name__}: {exc}); "
                            "rerun the train_generator rule for it") from exc
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise PipelineError(f"{path}: not a generator checkpoint (missing {missing})")
    return ckpt


def checkpoint_condition(ckpt: dict) -> Condition:
    """The condition a checkpoint's generator was trained on (older checkpoints: their number of classes)."""
    return as_condition(ckpt.get("condition") or int(ckpt["num_classes"]))


def require_finite(ckpt: dict, path: str | Path, keys: tuple[str, ...] = ("generator_state",)) -> None:
    """Refuse a checkpoint whose saved networks (``keys``) hold NaN or infinite weights."""
    for key in keys:
        state = ckpt.get(key)
        if state is None:
            continue
        bad = nonfinite_tensors(state.items())
        if bad:
            count = sum(c for _, c, _ in bad)
            name = ckpt.get("name", "<generator>")
            raise PipelineError(
                f"{path}: {count} non-finite weight(s) in {key} ({len(bad)} tensor(s), first {bad[0][0]}): generator "
                f"{name!r} diverged during training. Retrain it with a lower generators.{name}.lr or "
                f"compute.precision.generators: fp32 (or set divergence.retries); refusing to use this checkpoint"
            )


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
    """Rebuild the saved generator (EMA weights when EMA was on), in eval mode; refuses non-finite weights."""
    path = Path(checkpoint_path)
    ckpt = read_checkpoint(path)
    require_finite(ckpt, path)
    parts = build_generator(ckpt["config"], checkpoint_condition(ckpt), name=ckpt.get("name", "<name>"))
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
    ckpt = read_checkpoint(path)
    if "discriminator_state" not in ckpt:
        raise PipelineError(
            f"{path}: holds no discriminator weights (family {ckpt.get('family')!r} has no discriminator, "
            "or the checkpoint was written before discriminators were saved; retrain it)"
        )
    require_finite(ckpt, path, ("discriminator_state",))
    parts = build_generator(ckpt["config"], checkpoint_condition(ckpt), name=ckpt.get("name", "<name>"))
    if parts.discriminator is None:
        raise PipelineError(f"{path}: family {parts.family!r} builds no discriminator")
    discriminator = parts.discriminator
    discriminator.load_state_dict(ckpt["discriminator_state"])
    return discriminator.to(device).eval()
