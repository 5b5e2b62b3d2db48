"""Small shared helpers: errors, seeding, devices, precision, atomic files, logging, progress."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


class PipelineError(RuntimeError):
    """An error caused by the user's input or configuration.

    The message must name the offending file or config key and say how to fix it.
    Rule scripts turn it into one clean message and a non-zero exit.
    """


# --------------------------------------------------------------------------- seeding / devices


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


_CLAIMED_GPU: tuple[int, object] | None = None  # (index, open lock file) held until the process exits


def claim_gpu(count: int, lock_dir: str | os.PathLike | None = None) -> int:
    """Index of a GPU no other pipeline process on this machine holds, claimed for this process.

    Snakemake tells a job how many GPUs it may use (`resources: gpu=1`) but not which one, so on a
    machine with several visible GPUs each job takes the first free one: an exclusive, non-blocking
    ``flock`` on ``<lock_dir>/gpu<i>.lock`` (default ``$HISTAUG_GPU_LOCK_DIR`` or a per-user folder
    in the temporary directory; without a writable folder it returns 0). The lock is released when the process ends, also when it is killed. When every GPU is
    held (more jobs than ``--resources gpu=N`` allows), GPU 0 is shared. Calling it again in the same
    process returns the same index.
    """
    import fcntl

    global _CLAIMED_GPU
    if _CLAIMED_GPU is not None:
        return _CLAIMED_GPU[0]
    folder = Path(lock_dir or os.environ.get("HISTAUG_GPU_LOCK_DIR")
                  or Path(tempfile.gettempdir()) / f"histaug-gpu-locks-{os.getuid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return 0  # no writable lock folder: behave like a single-GPU setup
    for index in range(int(count)):
        try:
            handle = open(folder / f"gpu{index}.lock", "a+")
        except OSError:
            return 0
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _CLAIMED_GPU = (index, handle)
        return index
    return 0


def cap_images(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` of ``images``: all of them, or a seeded random subset kept in the original order."""
    if len(images) <= n:
        return images
    return images[np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))]


def get_device(preference: str = "auto"):
    """`auto` picks CUDA when present, else CPU. `cpu`, `cuda`, `cuda:1`, `mps` are taken as given.

    With several visible GPUs, `auto` gives each process its own (:func:`claim_gpu`), so that
    `snakemake --resources gpu=N` on an N-GPU machine spreads jobs over the GPUs. Under a scheduler
    that shows each job only its own GPU (Slurm) there is one visible GPU and nothing is claimed.
    """
    import torch

    if preference in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device("cuda", claim_gpu(count)) if count > 1 else torch.device("cuda")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"config compute.device={preference!r} but no CUDA device is visible; use 'auto' or 'cpu'")
    return dev


def autocast(device, precision: str = "fp32"):
    """Mixed-precision context: `fp32` (off), `bf16`, `fp16` (CUDA only)."""
    import torch

    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise PipelineError("config compute.precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise PipelineError(f"config compute.precision={precision!r}: expected fp32, bf16 or fp16")


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (Snakemake's `threads:`) so parallel jobs do not oversubscribe."""
    import torch

    if n:
        torch.set_num_threads(int(n))


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash therefore never leaves a half-written file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df, path: str | os.PathLike, **kwargs) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def file_digest(path: str | os.PathLike, algorithm: str = "sha1", chunk: int = 1 << 22) -> str:
    """Hex digest of a file (md5, sha1, ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Stable short hash of a config slice (used to decide whether a checkpoint may be resumed)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


# --------------------------------------------------------------------------- logging / progress


def get_logger(name: str = "histaug", log_file: str | os.PathLike | None = None) -> logging.Logger:
    """Logger writing to stderr and, when given, to the rule's log file."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_histaug", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        h._histaug = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def progress(iterable: Iterable | None = None, **kwargs):
    """tqdm progress bar on stderr (ends up in the rule's log). Quiet when HISTAUG_NO_PROGRESS is set."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("disable", bool(os.environ.get("HISTAUG_NO_PROGRESS")))
    return tqdm(iterable, **kwargs)
