"""Canonical image storage: one HDF5 file per split / sample set.

Layout of every image file the pipeline writes:
  x : uint8 (N, H, W, 3)   RGB pixels
  y : int64 (N,)           class label (the label the file was made for; for splits it is the
                           *source* label, the label used downstream is in data/labels.csv)
  optional extra 1-d datasets of length N (e.g. `confidence`, `index`).
In the split files of a whole PCam split, x is an HDF5 external link to the source file (read
through transparently; histaug.splitfiles).
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .utils import PipelineError, atomic_path


def write_images(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, attrs: dict | None = None, **extra) -> None:
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N,H,W,3), got {x.dtype} {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            chunks = (min(max(len(x), 1), 256),) + x.shape[1:] if len(x) else None
            f.create_dataset("x", data=x, chunks=chunks)
            f.create_dataset("y", data=y)
            for k, v in extra.items():
                v = np.asarray(v)
                if len(v) != len(x):
                    raise ValueError(f"extra dataset {k!r} has {len(v)} rows, expected {len(x)}")
                f.create_dataset(k, data=v)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v


def take_rows(dataset, rows: np.ndarray, block: int | None = None) -> np.ndarray:
    """``dataset[rows]`` for sorted, unique ``rows``, read as contiguous slabs of ``block`` rows (the dataset's
    chunk height by default) and picked in memory: h5py's point selection costs about a millisecond per row,
    a slab read costs what its bytes cost, and at most one slab is held beyond the result."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + dataset.shape[1:], dtype=dataset.dtype)
    if not len(rows):
        return out
    block = int(block or (dataset.chunks[0] if dataset.chunks else 1024))
    starts = rows // block
    for b in np.unique(starts):
        pick = np.flatnonzero(starts == b)
        lo = int(b) * block
        slab = dataset[lo: min(lo + block, int(rows[pick[-1]]) + 1)]
        out[pick] = slab[rows[pick] - lo]
    return out


def read_images(path: str | os.PathLike, indices=None, with_extra: bool = False):
    """Return (x, y) or (x, y, extra) from a pipeline image file; `indices` selects rows."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: image file not found (was the rule that makes it run?)")
    with h5py.File(path, "r") as f:
        if "x" not in f or "y" not in f:
            raise PipelineError(f"{path}: expected datasets 'x' and 'y', found {list(f.keys())}")
        check_linked_source(f, path)
        if indices is None:
            x = f["x"][()]
            y = f["y"][()]
            extra = {k: f[k][()] for k in f.keys() if k not in ("x", "y")} if with_extra else None
        else:
            idx = np.asarray(indices, dtype=np.int64)
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            uniq, first = np.unique(sorted_idx, return_inverse=True)
            x = take_rows(f["x"], uniq)[first][inv]
            y = take_rows(f["y"], uniq)[first][inv]
            extra = {k: take_rows(f[k], uniq)[first][inv] for k in f.keys() if k not in ("x", "y")} if with_extra else None
    if with_extra:
        return x, y.astype(np.int64), extra
    return x, y.astype(np.int64)


def check_linked_source(f: h5py.File, path) -> None:
    """A split file's x may be an external link to a source file (PCam's splits are linked, not
    copied); stop with a clear message when that source is gone."""
    link = f.get("x", getlink=True)
    if isinstance(link, h5py.ExternalLink) and not Path(link.filename).is_file():
        raise PipelineError(f"{path}: its images are read from {link.filename} (dataset {link.path!r}), which no longer "
                            "exists. Put the PCam source files back where they were, or rerun the ingest rule "
                            "(delete the results_dir/data folder) to link the files where they are now.")


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """The labels ``y`` of a pipeline image file, without reading the images."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: image file not found (was the rule that makes it run?)")
    with h5py.File(path, "r") as f:
        if "y" not in f:
            raise PipelineError(f"{path}: expected a dataset 'y', found {list(f.keys())}")
        return f["y"][()].astype(np.int64)


def count_images(path: str | os.PathLike) -> int:
    with h5py.File(path, "r") as f:
        return int(f["y"].shape[0])


def resize_images(x: np.ndarray, size: int, batch: int = 1024) -> np.ndarray:
    """Resize uint8 (N,H,W,3) images to (N,size,size,3): antialiased bilinear down, bicubic up."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(x)
    if x.shape[1] == size and x.shape[2] == size:
        return x
    mode = "bilinear" if size < x.shape[1] else "bicubic"
    out = np.empty((len(x), size, size, 3), np.uint8)
    for s in range(0, len(x), batch):
        t = torch.from_numpy(x[s:s + batch]).permute(0, 3, 1, 2).float()
        r = F.interpolate(t, size=(size, size), mode=mode, antialias=mode == "bilinear", align_corners=False)
        out[s:s + batch] = r.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out
