"""Ingest, splitting and subsetting on real patches and on deliberately broken inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histaug import data
from histaug.io import read_images
from histaug.utils import PipelineError

SPLIT_CFG = {"fractions": {"train": 0.6, "valid": 0.2, "test": 0.2}, "seed": 3}


def make_folder(root: Path, src: Path, n: int, labels=None) -> Path:
    """A Kaggle-layout folder with the first n shared real patches (copied, the source stays untouched)."""
    table = pd.read_csv(src / "labels.csv").head(n).copy()
    if labels is not None:
        table["label"] = labels
    (root / "images").mkdir(parents=True)
    for i in table["id"]:
        shutil.copy(src / "images" / f"{i}.jpg", root / "images" / f"{i}.jpg")
    table.to_csv(root / "labels.csv", index=False)
    return root


def test_stratified_split_keeps_ratio_and_is_deterministic():
    y = np.array([0] * 700 + [1] * 300)
    a = data.stratified_split(y, SPLIT_CFG["fractions"], seed=1)
    b = data.stratified_split(y, SPLIT_CFG["fractions"], seed=1)
    c = data.stratified_split(y, SPLIT_CFG["fractions"], seed=2)
    allidx = np.concatenate(list(a.values()))
    assert len(allidx) == 1000 and len(np.unique(allidx)) == 1000  # a partition
    assert {k: len(v) for k, v in a.items()} == {"train": 600, "valid": 200, "test": 200}
    for part in a.values():
        assert y[part].mean() == pytest.approx(0.3, abs=0.01)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_stratified_subset_fraction_count_and_determinism():
    y = np.array([0] * 900 + [1] * 100)
    s = data.stratified_subset(y, 0.1, None, seed=0)
    assert len(s) == 100 and (y[s] == 1).sum() == 10
    assert np.array_equal(s, data.stratified_subset(y, 0.1, None, seed=0))
    assert not np.array_equal(s, data.stratified_subset(y, 0.1, None, seed=1))
    c = data.stratified_subset(y, 0.1, 250, seed=0)  # count wins over fraction
    assert len(c) == 250 and (y[c] == 1).sum() == 25
    with pytest.raises(PipelineError, match="subset.count"):
        data.stratified_subset(y, None, 5000, seed=0)


def test_ingest_kaggle_folder_real_patches(tmp_path, shared_patches_dir):
    labels = [0, 1] * 30
    src = make_folder(tmp_path / "in", shared_patches_dir, 60, labels)
    before = sorted(p.name for p in src.rglob("*"))
    out = tmp_path / "out"
    table = data.ingest({"data_dir": str(src), "pcam_dir": "unused", "pcam": {}, "split": SPLIT_CFG}, out)
    assert sorted(p.name for p in src.rglob("*")) == before  # nothing written inside data_dir
    assert table.groupby("split").size().to_dict() == {"test": 12, "train": 36, "valid": 12}
    x, y = read_images(out / "train.h5")
    assert x.dtype == np.uint8 and x.shape == (36, 96, 96, 3) and y.mean() == pytest.approx(0.5)
    # pixels are the real image bytes, in the order of the table
    row = table[table["split"] == "train"].iloc[5]
    ref = np.asarray(Image.open(src / "images" / f"{row['id']}.jpg").convert("RGB"))
    assert np.array_equal(x[row["index"]], ref)
    with h5py.File(out / "train.h5") as f:
        assert f["id"][row["index"]].decode() == row["id"]


def test_ingest_errors_name_file_and_ids(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "a", shared_patches_dir, 10)
    t = pd.read_csv(src / "labels.csv")
    pd.concat([t, pd.DataFrame({"id": ["ghost1", "ghost2"], "label": [0, 1]})]).to_csv(src / "labels.csv", index=False)
    with pytest.raises(PipelineError, match=r"2 row\(s\) have no image.*ghost1"):
        data.scan_folder(src)

    src = make_folder(tmp_path / "b", shared_patches_dir, 10)
    Image.new("RGB", (96, 96)).save(src / "images" / "orphan.png")
    with pytest.raises(PipelineError, match=r"no row in .*orphan"):
        data.scan_folder(src)

    src = make_folder(tmp_path / "c", shared_patches_dir, 10)
    first = pd.read_csv(src / "labels.csv")["id"][0]
    Image.new("RGB", (128, 100)).save(src / "images" / f"{first}.jpg")
    out = tmp_path / "out_c"
    with pytest.raises(PipelineError, match=rf"not 96x96.*{first[:10]}"):
        data.ingest({"data_dir": str(src), "pcam_dir": "x", "pcam": {}, "split": SPLIT_CFG}, out)
    assert not out.exists() or not any(out.glob("*.h5")) and not (out / "source_labels.csv").exists()

    with pytest.raises(PipelineError, match="does not exist"):
        data.detect_format(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="found neither labels.csv"):
        data.detect_format(tmp_path / "empty")


def write_pcam_files(d: Path, split: str, x: np.ndarray, y: np.ndarray):
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(d / data.pcam_filename(split, "x"), "w") as f:
        f["x"] = x
    with h5py.File(d / data.pcam_filename(split, "y"), "w") as f:
        f["y"] = y.reshape(-1, 1, 1, 1).astype(np.uint8)


def test_ingest_pcam_hdf5_sample_and_shape_errors(tmp_path, real_patches):
    x = real_patches[:80]
    y = np.array([0, 1] * 40)
    pcam = tmp_path / "pcam"
    write_pcam_files(pcam, "valid", x, y)
    out = tmp_path / "out"
    cfg = {"data_dir": None, "pcam_dir": str(pcam), "pcam": {"sample": {"split": "valid", "n": 40, "seed": 0}},
           "split": SPLIT_CFG}
    table = data.ingest(cfg, out)
    assert len(table) == 40 and table["source_label"].mean() == pytest.approx(0.5)
    xt, _ = read_images(out / "test.h5")
    src_rows = [int(i.rsplit("_", 1)[1]) for i in table[table["split"] == "test"].sort_values("index")["id"]]
    assert np.array_equal(xt, x[src_rows])

    write_pcam_files(pcam, "test", x[:, :64, :64], y)
    with pytest.raises(PipelineError, match=r"test_x\.h5.*expected uint8 \(N,96,96,3\)"):
        data.open_pcam_split(pcam, "test")
    write_pcam_files(pcam, "train", x, y[:10])
    with pytest.raises(PipelineError, match=r"train_y\.h5"):
        data.open_pcam_split(pcam, "train")


def test_download_without_network_says_what_to_fetch(tmp_path):
    with pytest.raises(PipelineError, match=r"camelyonpatch_level_2_split_valid_y\.h5\.gz.*2546921"):
        data.download_pcam_file("valid", "y", "http://127.0.0.1:9/{name}", tmp_path)
    assert not (tmp_path / "camelyonpatch_level_2_split_valid_y.h5").exists()
    assert not list(tmp_path.glob("*.gz"))
