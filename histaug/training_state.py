"""Resumable training state on disk, shared by the generator and classifier loops.

A training job keeps one state file (``state/last.pt``) that it refreshes at its checkpoints and
removes once its final output is written. This module holds what both loops do with it:

* :func:`save_state` writes it atomically (temporary file, then rename), so a kill during a save
  leaves the previous state intact plus an orphan temporary file;
* :func:`load_state` reads it with ``weights_only=True``. A file that cannot be read (truncated by
  a full disk, corrupt, foreign) is moved aside to ``last.pt.corrupt-<time>`` with a warning that
  names both paths, and training starts fresh; it is never silently deleted;
* :func:`remove_orphan_temps` deletes the temporary files a killed save left behind
  (``.<name>.<random>.tmp``, the pattern of :func:`histaug.utils.atomic_path`);
* :func:`clear_state` removes the state of a finished run, so that a forced rerun trains afresh
  instead of "resuming" a run that already ended (a state moved aside as corrupt is kept);
* :func:`get_rng_state` / :func:`set_rng_state` capture and restore python, numpy, torch (and
  CUDA) random states, so that a resumed run continues bit-identically on CPU.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from .utils import atomic_path

STATE_FILE = "last.pt"
#: Temporary files of :func:`histaug.utils.atomic_path`: ``.<target name>.<random>.tmp``.
TEMP_GLOB = ".*.tmp"


def save_state(path: str | Path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path, log: logging.Logger, owner: str) -> dict | None:
    """The state saved at ``path``, or None when there is none or it cannot be read.

    An unreadable file is moved aside (``<name>.corrupt-<YYYYmmdd-HHMMSS>``) with a warning naming
    ``owner`` (e.g. "generator 'cgan'") and both paths, so that training starts fresh and the
    broken file stays available for inspection.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a training state")
        return state
    except Exception as exc:  # truncated zip, foreign pickle, wrong type
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        log.warning("%s: cannot read the saved training state %s (%s: %s); moved it to %s and starting fresh",
                    owner, path, type(exc).__name__, exc, aside)
        return None


def remove_orphan_temps(folder: str | Path, log: logging.Logger, owner: str) -> list[Path]:
    """Delete temporary files that a killed atomic save left in ``folder``; returns what was removed.

    Only one job writes a given output folder at a time (Snakemake locks its outputs), so a
    temporary file present when the job starts belongs to a save that never finished.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in sorted(folder.glob(TEMP_GLOB)):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    if removed:
        log.warning("%s: removed %d temporary file(s) left by an interrupted save: %s", owner, len(removed),
                    ", ".join(p.name for p in removed[:5]))
    return removed


def clear_state(folder: str | Path) -> None:
    """Remove a finished run's state (nothing to resume once the final output exists): the state file
    and temporary files; the folder too unless it holds a state moved aside as corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in [folder / STATE_FILE, *folder.glob(TEMP_GLOB)]:
        path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


# --------------------------------------------------------------------------- random states


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
