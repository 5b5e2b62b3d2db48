"""Writers of the canonical split files results_dir/data/{train,valid,test}.h5, in bounded memory.

Every split file holds x uint8 (N,96,96,3), y int64 (N,) and id (N,) strings (histaug.io reads them).
Three ways to make one:
  link_split      x is an HDF5 external link to the `x` dataset of a source file (a whole PCam split):
                  nothing is copied, readers see the source's pixels through the link, and the file
                  is only as large as y and id. The source must stay where it is.
  copy_rows       x copied from chosen rows of a source dataset, `chunk` rows at a time (a PCam sample).
  split_writers   empty x datasets filled block by block by the caller (decoded folder images).
"""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path

import h5py
import numpy as np

from .io import take_rows
from .pcam import PATCH_SHAPE
from .utils import atomic_path

CHUNK = 2048  # rows per block when copying or decoding: 2048 x 27 KiB = 57 MiB of pixels
STORAGE_ROWS = 256  # HDF5 chunk height of the x datasets the pipeline writes
CACHE_BYTES = 32 << 20  # per-file chunk cache while filling: a block's partial HDF5 chunks stay in memory


def _write_labels_and_ids(f: h5py.File, y, ids) -> None:
    f.create_dataset("y", data=np.asarray(y, np.int64).reshape(-1))
    f.create_dataset("id", data=np.asarray(list(ids), dtype=object), dtype=h5py.string_dtype())


def _create_x(f: h5py.File, n: int) -> h5py.Dataset:
    chunks = (min(n, STORAGE_ROWS),) + PATCH_SHAPE if n else None
    return f.create_dataset("x", shape=(n,) + PATCH_SHAPE, dtype=np.uint8, chunks=chunks)


def link_split(path: str | os.PathLike, source: str | os.PathLike, y, ids, dataset: str = "x") -> None:
    """A split file whose x is an external link to `source`:`dataset` (absolute path, so the link
    holds from any working directory)."""
    source = Path(source).resolve()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f["x"] = h5py.ExternalLink(str(source), dataset)
            _write_labels_and_ids(f, y, ids)
            f.attrs["x_source"] = f"{source}:{dataset}"


def copy_rows(path: str | os.PathLike, x_source: h5py.Dataset, rows, y, ids, chunk: int = CHUNK, bar=None) -> None:
    """A split file with x = x_source[rows] (rows increasing), copied `chunk` rows at a time."""
    rows = np.asarray(rows, np.int64)
    if len(rows) > 1 and not np.all(np.diff(rows) > 0):
        raise ValueError("copy_rows needs strictly increasing source rows")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            dx = _create_x(f, len(rows))
            for start in range(0, len(rows), chunk):
                sel = rows[start:start + chunk]
                dx[start:start + len(sel)] = take_rows(x_source, sel)
                if bar is not None:
                    bar.update(len(sel))
            _write_labels_and_ids(f, y, ids)


@contextmanager
def split_writers(paths: dict, labels: dict, ids: dict):
    """Open one new split file per name in `paths` with y and id written and an empty x of the
    right length; yields {name: x dataset}. The files replace their paths only when the block ends
    without an error: a failure part-way leaves none of them behind."""
    with ExitStack() as stack:
        out = {}
        for name, path in paths.items():
            tmp = stack.enter_context(atomic_path(path))
            f = stack.enter_context(h5py.File(tmp, "w", rdcc_nbytes=CACHE_BYTES))
            out[name] = _create_x(f, len(labels[name]))
            _write_labels_and_ids(f, labels[name], ids[name])
        yield out
