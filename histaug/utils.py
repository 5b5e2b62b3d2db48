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
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

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


#: Default of config ``compute.gpu_wait_seconds``: how long a job waits for a GPU no other job holds.
DEFAULT_GPU_WAIT_SECONDS = 3600.0
GPU_WAIT_KEY = "compute.gpu_wait_seconds"

# (index, open lock file or None) of this process's GPU, held until the process exits
_CLAIMED_GPU: tuple[int, object] | None = None


def _gpu_lock_folder(lock_dir: str | os.PathLike | None) -> Path:
    return Path(lock_dir or os.environ.get("HISTAUG_GPU_LOCK_DIR")
                or Path(tempfile.gettempdir()) / f"histaug-gpu-locks-{os.getuid()}")


def _record_gpu(index: int, handle: object | None) -> int:
    global _CLAIMED_GPU
    _CLAIMED_GPU = (index, handle)
    return index


def claim_gpu(count: int, lock_dir: str | os.PathLike | None = None, wait_seconds: float | None = None,
              poll_seconds: float = 2.0) -> int:
    """Index of a GPU no other pipeline process on this machine holds, claimed for this process.

    Snakemake tells a job how many GPUs it may use (`resources: gpu=1`) but not which one, so on a
    machine with several visible GPUs each job takes the first free one: an exclusive, non-blocking
    ``flock`` on ``<lock_dir>/gpu<i>.lock`` (default ``$HISTAUG_GPU_LOCK_DIR`` or a per-user folder
    in the temporary directory). The lock is released when the process ends, also when it is killed.

    When every GPU is held (more GPU jobs than GPUs), the process waits for one to be freed, polling
    every ``poll_seconds`` and saying once in the log that it waits, for up to ``wait_seconds``
    (config ``compute.gpu_wait_seconds``, default :data:`DEFAULT_GPU_WAIT_SECONDS`); then it raises
    a PipelineError. Without a writable lock folder it uses GPU 0 unclaimed (with a warning).
    Whatever it answers is recorded: every later call in the same process returns the same index.
    """
    import fcntl

    if _CLAIMED_GPU is not None:
        return _CLAIMED_GPU[0]
    count = int(count)
    if count < 1:
        raise ValueError(f"claim_gpu needs at least one GPU, got count={count}")
    wait = DEFAULT_GPU_WAIT_SECONDS if wait_seconds is None else float(wait_seconds)
    log = get_logger("histaug.devices")
    folder = _gpu_lock_folder(lock_dir)

    def unclaimed(exc: OSError) -> int:
        log.warning("GPU lock folder %s is not writable (%s): using GPU 0 without claiming it; set "
                    "HISTAUG_GPU_LOCK_DIR to a writable folder so that jobs spread over the GPUs", folder, exc)
        return _record_gpu(0, None)

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return unclaimed(exc)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        for index in range(count):
            try:
                handle = open(folder / f"gpu{index}.lock", "a+")
            except OSError as exc:
                return unclaimed(exc)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            if waiting:
                log.info("GPU %d was freed; this job takes it", index)
            return _record_gpu(index, handle)
        left = deadline - time.monotonic()
        if left <= 0:
            raise PipelineError(
                f"all {count} GPUs are held by other pipeline jobs (lock files gpu0.lock..gpu{count - 1}.lock in "
                f"{folder}) and none was freed within {wait:g} s (config {GPU_WAIT_KEY}); run snakemake with "
                f"--resources gpu={count} (the number of GPUs) so it never starts more GPU jobs than there are "
                f"GPUs, or raise {GPU_WAIT_KEY}"
            )
        if not waiting:
            log.warning("all %d GPUs are held by other pipeline jobs (locks in %s): waiting up to %g s "
                        "(config %s) for one to be freed", count, folder, wait, GPU_WAIT_KEY)
            waiting = True
        time.sleep(max(0.0, min(float(poll_seconds), left)))


def cap_images(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` of ``images``: all of them, or a seeded random subset kept in the original order."""
    if len(images) <= n:
        return images
    return images[np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))]


def get_device(preference: str | Mapping[str, Any] | None = "auto", wait_seconds: float | None = None):
    """`auto` picks CUDA when present, else CPU. `cpu`, `cuda`, `cuda:1`, `mps` are taken as given.

    ``preference`` may also be the whole ``compute`` config section: its ``device`` (default
    `auto`) and ``gpu_wait_seconds`` are used, so ``get_device(compute)`` honours both.

    With several visible GPUs, `auto` gives each process its own (:func:`claim_gpu`), so that
    `snakemake --resources gpu=N` on an N-GPU machine spreads jobs over the GPUs; when all are
    held, the job waits up to ``wait_seconds`` (else ``compute.gpu_wait_seconds``, default 3600 s).
    Under a scheduler that shows each job only its own GPU (Slurm) there is one visible GPU and
    nothing is claimed.
    """
    import torch

    if isinstance(preference, Mapping):
        if wait_seconds is None:
            wait_seconds = preference.get("gpu_wait_seconds")
        preference = preference.get("device", "auto")
    if preference in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device("cuda", claim_gpu(count, wait_seconds=wait_seconds)) if count > 1 else torch.device("cuda")
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
    """Limit intra-op threads to Snakemake's `threads:` so parallel jobs do not oversubscribe.

    torch is limited directly when the job has imported it; otherwise it is not imported here (a rule
    without networks should not pay for it), and the OpenMP/MKL variables make a later import of torch
    start with ``n`` threads. Numerical libraries already loaded (NumPy's BLAS) are limited too.
    """
    if not n:
        return
    n = int(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a declared dependency; without it only torch and later imports are limited
        return
    threadpool_limits(limits=n)


# --------------------------------------------------------------------------- files


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where possible.

    Linux reports it in ``/proc/self/status``. Elsewhere it can only be read by setting it, so it is
    set and restored at once under a lock (files other threads create in that instant are the only
    exposure, and they would get the stricter mask 0o077, never a looser one).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode a file created with ``open()`` gets: ``0o666 & ~umask`` (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash therefore never leaves a half-written file that looks complete. The file gets the
    permissions of a freshly created one (``0o666 & ~umask``) instead of the 0600 of a temporary
    file, whatever wrote it (plain writes, h5py, torch.save, ...), so a lab group can read outputs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # after the block: writers that recreate the file cannot undo it
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
