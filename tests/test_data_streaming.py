"""The data stage in bounded memory: chunked ingest/labels/subset equal the one-shot results, and
whole PCam splits are linked into results/data, not copied."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histaug import attributes, data, labels, pcam
from histaug.io import read_images
from histaug.utils import PipelineError

SPLIT_CFG = {"fractions": {"train": 0.6, "valid": 0.2, "test": 0.2}, "seed": 3}
SUBSET_CFG = {"fraction": 0.3, "count": None, "seed": 1, "min_per_class": 1}
TABLES = ("source_labels.csv", "labels.csv", "labels.json", "train_subset.csv")


def run_stage(cfg: dict, out: Path, chunk: int, workers: int) -> None:
    """ingest -> labels -> subset, as the three rules run them, with the given slab size."""
    data.ingest(cfg, out, chunk=chunk, threads=workers)
    files = {s: out / f"{s}.h5" for s in data.SPLITS}
    labels.build_label_table(out / "source_labels.csv", files, cfg["labels"], out / "labels.csv", out / "labels.json",
                             chunk=chunk, workers=workers)
    data.write_train_subset(out / "labels.csv", SUBSET_CFG, out / "train_subset.csv")


def assert_same_stage_outputs(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for split in data.SPLITS:
        xa, ya, ea = read_images(a / f"{split}.h5", with_extra=True)
        xb, yb, eb = read_images(b / f"{split}.h5", with_extra=True)
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and np.array_equal(ea["id"], eb["id"])


def assert_density_is_one_shot(out: Path) -> None:
    """labels.csv's nuclear density equals attributes.nuclear_density on each whole split, bit for bit."""
    table = pd.read_csv(out / "labels.csv", dtype={"id": str})
    for split in data.SPLITS:
        x, _ = read_images(out / f"{split}.h5")
        rows = table[table["split"] == split].sort_values("index")
        np.testing.assert_array_equal(rows["nuclear_density"].to_numpy(), attributes.nuclear_density(x))


def test_folder_stage_in_tiny_chunks_equals_one_shot(tmp_path, shared_patches_dir):
    cfg = {"data_dir": str(shared_patches_dir), "pcam_dir": "unused", "pcam": {}, "split": SPLIT_CFG,
           "labels": {"source": "auto", "derived_levels": 4}}
    run_stage(cfg, tmp_path / "chunked", chunk=7, workers=2)
    run_stage(cfg, tmp_path / "one_shot", chunk=100_000, workers=1)
    assert_same_stage_outputs(tmp_path / "chunked", tmp_path / "one_shot")
    assert_density_is_one_shot(tmp_path / "chunked")
    # the pixels are the decoded JPEGs, each in the row source_labels.csv gives it
    table = pd.read_csv(tmp_path / "chunked" / "source_labels.csv", dtype={"id": str})
    x, _ = read_images(tmp_path / "chunked" / "valid.h5")
    for _, row in table[table["split"] == "valid"].iloc[::97].iterrows():
        ref = np.asarray(Image.open(shared_patches_dir / "images" / f"{row['id']}.jpg").convert("RGB"))
        assert np.array_equal(x[row["index"]], ref), row["id"]
    assert len(table) == len(pd.read_csv(shared_patches_dir / "labels.csv")) and table["id"].is_unique


def test_folder_problem_in_a_late_block_writes_nothing(tmp_path, shared_patches_dir):
    src = tmp_path / "in"
    (src / "images").mkdir(parents=True)
    table = pd.read_csv(shared_patches_dir / "labels.csv").head(30)
    for i in table["id"]:
        shutil.copy(shared_patches_dir / "images" / f"{i}.jpg", src / "images" / f"{i}.jpg")
    table.to_csv(src / "labels.csv", index=False)
    last = table["id"].iloc[-1]
    (src / "images" / f"{last}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    cfg = {"data_dir": str(src), "pcam_dir": "unused", "pcam": {}, "split": SPLIT_CFG}
    with pytest.raises(PipelineError, match=rf"1 file\(s\) in .*images cannot be read as images, e\.g\. \[.{last}\.jpg"):
        data.ingest(cfg, out, chunk=4)
    assert not out.exists() or not any(out.iterdir())  # no split file half made


def write_pcam(folder: Path, images: np.ndarray, sizes: dict, record: bool = True) -> dict:
    """PCam-layout x/y files (PCam's (N,1,1,1) uint8 labels) cut from `images`; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays, start = {}, 0
    for split, n in sizes.items():
        x = images[np.arange(start, start + n) % len(images)]
        y = (np.arange(n) % 2).astype(np.uint8)
        start += n
        with h5py.File(folder / data.pcam_filename(split, "x"), "w") as f:
            f["x"] = x
        with h5py.File(folder / data.pcam_filename(split, "y"), "w") as f:
            f["y"] = y.reshape(-1, 1, 1, 1)
        arrays[split] = (x, y)
        if record:
            for kind in "xy":
                p = folder / data.pcam_filename(split, kind)
                pcam.write_checksum_record(p, hashlib.md5(p.read_bytes()).hexdigest())
    return arrays


def test_pcam_splits_are_linked_and_read_like_the_source(tmp_path, real_patches):
    sizes = {"train": 96, "valid": 40, "test": 40}
    arrays = write_pcam(tmp_path / "pcam", real_patches, sizes)
    cfg = {"data_dir": None, "pcam_dir": str(tmp_path / "pcam"), "pcam": {}, "split": SPLIT_CFG,
           "labels": {"source": "data", "derived_levels": 3}}
    run_stage(cfg, tmp_path / "chunked", chunk=5, workers=2)
    run_stage(cfg, tmp_path / "one_shot", chunk=10_000, workers=1)
    assert_same_stage_outputs(tmp_path / "chunked", tmp_path / "one_shot")
    assert_density_is_one_shot(tmp_path / "chunked")
    out = tmp_path / "chunked"
    for split, (x, y) in arrays.items():
        path = out / f"{split}.h5"
        with h5py.File(path, "r") as f:
            link = f.get("x", getlink=True)
            assert isinstance(link, h5py.ExternalLink)
            assert Path(link.filename) == (tmp_path / "pcam" / data.pcam_filename(split, "x")).resolve()
        assert path.stat().st_size < x.nbytes / 4  # y and ids only
        rx, ry = read_images(path)
        assert np.array_equal(rx, x) and np.array_equal(ry, y)
        rows = np.array([7, 3, 3, len(x) - 1])
        assert np.array_equal(read_images(path, indices=rows)[0], x[rows])
    # the source moved away: a clear message instead of HDF5's
    shutil.move(tmp_path / "pcam", tmp_path / "moved")
    with pytest.raises(PipelineError, match=r"train\.h5: its images are read from .*train_x\.h5.*no longer exists"):
        read_images(out / "train.h5")


def test_pcam_checksums_are_verified(tmp_path, real_patches):
    folder = tmp_path / "pcam"
    write_pcam(folder, real_patches, {"train": 16, "valid": 8, "test": 8})
    cfg = {"data_dir": None, "pcam_dir": str(folder), "pcam": {}, "split": SPLIT_CFG}
    target = folder / data.pcam_filename("valid", "x")
    with h5py.File(target, "r+") as f:  # one pixel changed after the "download"
        f["x"][3, 5, 5, 0] = (int(f["x"][3, 5, 5, 0]) + 1) % 256
    with pytest.raises(PipelineError, match=r"1 PCam file\(s\) differ.*valid_x\.h5: MD5 [0-9a-f]{32}, recorded.*delete it"):
        data.ingest(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "train.h5").exists()
    pcam.checksum_record_path(target).write_text("abc  wrong.h5\n")
    with pytest.raises(PipelineError, match=r"valid_x\.h5\.md5: expected one line"):
        data.ingest(cfg, tmp_path / "out")
    pcam.checksum_record_path(target).unlink()  # without a record: shapes and dtypes only
    assert len(data.ingest(cfg, tmp_path / "out")) == 32


def test_pcam_sample_copied_in_chunks_equals_one_shot(tmp_path, real_patches):
    write_pcam(tmp_path / "pcam", real_patches, {"valid": 120}, record=False)
    cfg = {"data_dir": None, "pcam_dir": str(tmp_path / "pcam"), "split": SPLIT_CFG, "labels": {"source": "data"},
           "pcam": {"sample": {"split": "valid", "n": 50, "seed": 2}}}
    run_stage(cfg, tmp_path / "chunked", chunk=3, workers=2)
    run_stage(cfg, tmp_path / "one_shot", chunk=10_000, workers=1)
    assert_same_stage_outputs(tmp_path / "chunked", tmp_path / "one_shot")
    table = pd.read_csv(tmp_path / "chunked" / "source_labels.csv")
    x, _ = read_images(tmp_path / "chunked" / "train.h5")
    src_rows = [int(i.rsplit("_", 1)[1]) for i in table[table["split"] == "train"].sort_values("index")["id"]]
    assert np.array_equal(x, real_patches[np.array(src_rows) % len(real_patches)])
    with h5py.File(tmp_path / "chunked" / "train.h5", "r") as f:
        assert isinstance(f.get("x", getlink=True), h5py.HardLink)  # a sample is a real copy


def test_download_unpacks_records_md5_and_drops_the_archive(tmp_path, real_patches, monkeypatch):
    served = tmp_path / "served"
    write_pcam(served, real_patches, {"valid": 12}, record=False)
    name = data.pcam_filename("valid", "x")
    raw = (served / name).read_bytes()
    (served / f"{name}.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setitem(pcam.PCAM_MD5, f"{name}.gz", hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest())
    dest = tmp_path / "resources"
    out = data.download_pcam_file("valid", "x", served.as_uri() + "/{name}", dest)
    assert out.read_bytes() == raw
    assert pcam.read_checksum_record(out) == hashlib.md5(raw).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == [name, f"{name}.md5"]  # the .gz is gone
    monkeypatch.setitem(pcam.PCAM_MD5, f"{name}.gz", "0" * 32)
    with pytest.raises(PipelineError, match=r"MD5 [0-9a-f]{32} does not match the published 0{32}"):
        data.download_pcam_file("valid", "x", served.as_uri() + "/{name}", tmp_path / "again")
    assert not (tmp_path / "again" / name).exists()
