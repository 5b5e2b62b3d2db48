"""PatchCamelyon source files: download, checksums and validation.

PCam comes as six HDF5 files, camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (`x` uint8
(N,96,96,3), `y` (N,1,1,1)). Zenodo publishes the MD5 of each gzipped file only. The download
checks that MD5 while the bytes arrive, unpacks the file, records the MD5 of the unpacked file in
``<name>.md5`` beside it (md5sum format, so `md5sum -c` works too) and removes the .gz. Ingest
streams every file that has such a record through MD5 again before using it, so a file changed or
truncated after the download is caught; files without a record (copied in by hand) are checked
for shapes and dtypes only.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from .utils import PipelineError, atomic_path, file_digest, progress

PATCH_SHAPE = (96, 96, 3)
READ_BLOCK = 1 << 23  # 8 MiB per read when hashing or unpacking

# MD5 of the gzipped files on Zenodo record 2546921 (basveeling/pcam README).
PCAM_MD5 = {
    "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_valid_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
    "camelyonpatch_level_2_split_test_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_test_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
}
PCAM_RECORD = "Zenodo record 2546921 (https://zenodo.org/record/2546921)"


def pcam_filename(split: str, kind: str) -> str:
    return f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def md5sum(path: str | os.PathLike) -> str:
    return file_digest(path, "md5", chunk=READ_BLOCK)


# --------------------------------------------------------------------------- download


def download_pcam_file(split: str, kind: str, url_template: str, dest_dir: str | os.PathLike, log=None) -> Path:
    """Download one gzipped PCam file, check its MD5, and unpack it to dest_dir/<name>.h5.

    The MD5 of the unpacked file goes to dest_dir/<name>.h5.md5; the .gz is removed once unpacked.
    Fails with a message saying what to fetch and where to put it when there is no network.
    """
    name = pcam_filename(split, kind)
    gz_name = name + ".gz"
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / name
    url = url_template.format(name=gz_name)
    manual = (
        f"Fetch {gz_name} from {PCAM_RECORD} (or the mirrors listed in the PCam README), check its MD5 "
        f"({PCAM_MD5[gz_name]}), gunzip it and put {name} into {dest_dir}/ ; or point `data_dir` at a folder "
        "that already holds the six camelyonpatch_level_2_split_*_{x,y}.h5 files."
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{gz_name}.", suffix=".part", dir=dest_dir)
    os.close(fd)
    tmp_gz = Path(tmp)
    try:  # the archive only lives while it is unpacked
        try:
            got = _fetch(url, tmp_gz, gz_name)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise PipelineError(f"Could not download {url}: {exc}.\n{manual}") from exc
        if got != PCAM_MD5[gz_name]:
            raise PipelineError(f"{gz_name}: MD5 {got} does not match the published {PCAM_MD5[gz_name]}; "
                                f"the download is corrupt and was removed; rerun the rule.\n{manual}")
        if log:
            log.info("downloaded %s (MD5 ok), unpacking", gz_name)
        with atomic_path(out) as tmp_h5:
            unpacked = _gunzip(tmp_gz, tmp_h5)
            write_checksum_record(out, unpacked)
    finally:
        tmp_gz.unlink(missing_ok=True)
    if log:
        log.info("unpacked %s (MD5 %s, recorded in %s)", name, unpacked, checksum_record_path(out).name)
    return out


def _fetch(url: str, dest: Path, label: str) -> str:
    """Stream `url` into `dest`; returns the MD5 of the bytes received."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as fh:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = progress(total=total, unit="B", unit_scale=True, desc=f"download {label}")
        for block in iter(lambda: resp.read(1 << 20), b""):
            fh.write(block)
            digest.update(block)
            bar.update(len(block))
        bar.close()
    return digest.hexdigest()


def _gunzip(src: Path, dest: Path) -> str:
    """Unpack gzip `src` into `dest` in blocks; returns the MD5 of the unpacked bytes."""
    digest = hashlib.md5()
    with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
        for block in iter(lambda: fin.read(READ_BLOCK), b""):
            fout.write(block)
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- checksum records


def checksum_record_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.md5")


def write_checksum_record(path: str | os.PathLike, md5: str) -> Path:
    """Write `<path>.md5` ("<md5>  <file name>", md5sum's format) for a file the pipeline unpacked."""
    record = checksum_record_path(path)
    with atomic_path(record) as tmp:
        tmp.write_text(f"{md5}  {Path(path).name}\n")
    return record


def read_checksum_record(path: str | os.PathLike) -> str | None:
    """The MD5 recorded for `path`, or None when it has no record."""
    record = checksum_record_path(path)
    if not record.exists():
        return None
    fields = record.read_text().split()
    digest = fields[0].lower() if fields else ""
    if len(fields) != 2 or fields[1].lstrip("*") != Path(path).name or len(digest) != 32 \
            or any(c not in "0123456789abcdef" for c in digest):
        raise PipelineError(f"{record}: expected one line '<32 hex digits>  {Path(path).name}' (md5sum format), "
                            f"found {record.read_text()[:120]!r}. Delete {record} and {path} and rerun the "
                            "download_pcam rule, or write the record with `md5sum <file> > <file>.md5`.")
    return digest


def verify_checksums(paths, threads: int = 1, log=None) -> dict[str, str | None]:
    """Stream every file with a `.md5` record through MD5 (in blocks, `threads` files at a time).

    Returns {path: verified MD5, or None for files without a record}; a mismatch stops with the
    file named and how to get a good copy.
    """
    paths = [Path(p) for p in paths]
    expected = {p: read_checksum_record(p) for p in paths}
    to_check = [p for p in paths if expected[p] is not None]
    to_check.sort(key=lambda p: -p.stat().st_size)  # the largest first: best overlap across threads
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        got = dict(zip(to_check, pool.map(md5sum, to_check)))
    bad = [p for p in to_check if got[p] != expected[p]]
    if bad:
        shown = "; ".join(f"{p}: MD5 {got[p]}, recorded {expected[p]}" for p in bad)
        raise PipelineError(f"{len(bad)} PCam file(s) differ from what was downloaded and checked against "
                            f"{PCAM_RECORD}: {shown}. The file changed or was truncated after the download: delete it "
                            "and its .md5 record and rerun (the download_pcam rule fetches it again).")
    if log:
        for p in paths:
            if expected[p] is None:
                log.info("%s: no %s record (not downloaded by the pipeline); shapes and dtypes checked only",
                         p, checksum_record_path(p).name)
            else:
                log.info("%s: MD5 %s matches its record", p, got[p])
    return {str(p): got.get(p) for p in paths}


# --------------------------------------------------------------------------- reading


def open_pcam_split(data_dir: str | os.PathLike, split: str) -> tuple[h5py.Dataset, np.ndarray, h5py.File]:
    """Open and validate one PCam split; returns (x dataset, y array, open x file)."""
    data_dir = Path(data_dir)
    px, py = data_dir / pcam_filename(split, "x"), data_dir / pcam_filename(split, "y")
    for p in (px, py):
        if not p.exists():
            raise PipelineError(f"{p}: PCam file not found. Put the unpacked PCam HDF5 files there "
                                f"(from {PCAM_RECORD}) or set data_dir to their folder.")
    fx = h5py.File(px, "r")
    try:
        with h5py.File(py, "r") as fy:
            validate_pcam_pair(fx, fy, px, py)
            y = fy["y"][()].reshape(-1).astype(np.int64)
    except BaseException:
        fx.close()
        raise
    return fx["x"], y, fx


def validate_pcam_pair(fx, fy, px, py) -> None:
    if "x" not in fx:
        raise PipelineError(f"{px}: no dataset 'x' (found {list(fx.keys())}); expected PCam's uint8 (N,96,96,3) images")
    x = fx["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != PATCH_SHAPE:
        raise PipelineError(f"{px}: dataset 'x' is {x.dtype} {x.shape}; expected uint8 (N,96,96,3). "
                            "Use the unmodified PCam files.")
    if "y" not in fy:
        raise PipelineError(f"{py}: no dataset 'y' (found {list(fy.keys())}); expected PCam's labels (N,1,1,1)")
    y = fy["y"]
    if y.shape[0] != x.shape[0] or int(np.prod(y.shape[1:])) != 1 or not np.issubdtype(y.dtype, np.integer):
        raise PipelineError(f"{py}: dataset 'y' is {y.dtype} {y.shape}; expected integer (N,1,1,1) with N={x.shape[0]} "
                            f"matching {px}.")
