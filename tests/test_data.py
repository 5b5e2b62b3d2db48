"""Ingest, splitting and subsetting on real patches and on deliberately broken inputs."""
from __future__ import annotations

import json
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


def test_subset_min_count_is_a_floor_under_the_fraction_for_small_folders():
    cfg = {"fraction": 0.25, "count": None, "min_count": 256, "seed": 0}
    assert data.subset_count(327, cfg) == 256     # 25% would be 82 images
    assert data.subset_count(200, cfg) == 200     # fewer than the floor: all of them
    assert data.subset_count(1182, cfg) is None   # 25% = 296 >= 256: the fraction as it is
    assert data.subset_count(327, {**cfg, "min_count": None}) is None
    assert data.subset_count(327, {**cfg, "count": 50}) == 50  # an explicit count wins
    y = np.array([0] * 200 + [1] * 127)
    s = data.stratified_subset(y, 0.25, data.subset_count(len(y), cfg), seed=0)
    assert len(s) == 256 and abs((y[s] == 1).sum() - 256 * 127 / 327) <= 1


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


# --------------------------------------------------------------------------- labels, subset minimum, paths


def folder_cfg(src: Path, **labels) -> dict:
    return {"data_dir": str(src), "pcam_dir": "unused", "pcam": {}, "split": SPLIT_CFG, "labels": labels or None}


def set_labels(src: Path, labels) -> list[str]:
    """Overwrite the label column of labels.csv with arbitrary text; returns the ids in row order."""
    t = pd.read_csv(src / "labels.csv", dtype=str)
    t["label"] = [str(v) for v in labels]
    t.to_csv(src / "labels.csv", index=False)
    return t["id"].tolist()


@pytest.mark.parametrize("bad", ["1.5", "-1", "abc", ""])
def test_labels_must_be_integers(tmp_path, shared_patches_dir, bad):
    src = make_folder(tmp_path / "in", shared_patches_dir, 12)
    ids = set_labels(src, ["0", "1"] * 4 + [bad, "1", bad, "0"])
    with pytest.raises(PipelineError, match=rf"labels\.csv: 2 label\(s\) are not integers 0\.\.K-1: {ids[8]} .*{ids[10]}"):
        data.scan_folder(src)
    with pytest.raises(PipelineError, match=ids[8]):
        data.ingest(folder_cfg(src), tmp_path / "out")
    assert not (tmp_path / "out" / "source_labels.csv").exists()


def test_integral_labels_are_read_as_int64(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "in", shared_patches_dir, 4)
    set_labels(src, ["0", "1.0", " 2", "1"])
    assert data.scan_folder(src)["label"].tolist() == [0, 1, 2, 1]
    assert data.scan_folder(src)["label"].dtype == np.int64


def test_label_beyond_declared_classes_is_rejected(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "in", shared_patches_dir, 30)
    ids = set_labels(src, [0, 1] * 13 + [2, 0, 2, 1])
    with pytest.raises(PipelineError, match=rf"2 label\(s\) >= 2, ids \['{ids[26]}', '{ids[28]}'\].*labels\.classes=2"):
        data.ingest(folder_cfg(src, source="data", classes=2), tmp_path / "out")
    with pytest.raises(PipelineError, match=r"labels\.classes=\['normal', 'tumour'\] declares 2"):
        data.ingest(folder_cfg(src, source="data", classes=["normal", "tumour"]), tmp_path / "out")


def test_missing_class_is_named(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "in", shared_patches_dir, 30)
    set_labels(src, [0, 2] * 15)  # K inferred 3, class 1 has no images
    with pytest.raises(PipelineError, match=r"K=3, the largest label \+ 1.*but class 1: no images"):
        data.ingest(folder_cfg(src, source="data"), tmp_path / "out")


def test_class_too_small_for_the_splits_is_named(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "in", shared_patches_dir, 30)
    ids = set_labels(src, [0] * 28 + [1, 1])
    named = rf"at least 3 image\(s\).*class 1: 2 image\(s\) \(ids \['{ids[28]}', '{ids[29]}'\]\)"
    with pytest.raises(PipelineError, match=named):
        data.ingest(folder_cfg(src, source="data"), tmp_path / "out")
    # three images are enough: one lands in every split
    ids = set_labels(src, [0] * 27 + [1, 1, 1])
    table = data.ingest(folder_cfg(src, source="data"), tmp_path / "out")
    assert table.groupby("split")["source_label"].apply(lambda s: (s == 1).sum()).to_dict() == {"test": 1, "train": 1,
                                                                                              "valid": 1}
    # with derived labels the data's classes are not used: no class check
    set_labels(src, [0] * 28 + [1, 1])
    data.ingest(folder_cfg(src, source="derived"), tmp_path / "out2")


def test_three_classes_pass_ingest_labels_and_subset(tmp_path, shared_patches_dir):
    from histaug.labels import build_label_table, load_split_labels

    src = make_folder(tmp_path / "in", shared_patches_dir, 45)
    set_labels(src, [0, 1, 2] * 15)
    out = tmp_path / "out"
    cfg = {"source": "data", "classes": ["stroma", "tumour", "lymphocytes"]}
    table = data.ingest(folder_cfg(src, **cfg), out)
    assert sorted(table["source_label"].unique()) == [0, 1, 2]
    splits = {s: out / f"{s}.h5" for s in data.SPLITS}
    build_label_table(out / "source_labels.csv", splits, cfg, out / "labels.csv", out / "labels.json")
    meta = json.loads((out / "labels.json").read_text())
    assert meta["class_names"] == ["stroma", "tumour", "lymphocytes"] and meta["num_classes"] == 3
    y = load_split_labels(out / "labels.csv", "train")
    rows = data.stratified_subset(y, 0.34, None, seed=0)
    assert len(y) == 27 and np.bincount(y[rows]).tolist() == [3, 3, 3]
    # unnamed: K from labels.classes, generic names; PCam's names stay the default for two classes
    build_label_table(out / "source_labels.csv", splits, {"source": "data", "classes": 3}, out / "l3.csv", out / "l3.json")
    assert json.loads((out / "l3.json").read_text())["class_names"] == ["class 0", "class 1", "class 2"]
    with pytest.raises(PipelineError, match=r"label\(s\) >= 2"):
        build_label_table(out / "source_labels.csv", splits, {"source": "data", "classes": 2}, out / "l2.csv", out / "l2.json")


def test_pcam_labels_are_checked(tmp_path, real_patches):
    x = real_patches[:40]
    pcam = tmp_path / "pcam"
    y = np.array([0, 1] * 20, np.int8)
    y[[5, 7]] = -1
    pcam.mkdir()
    with h5py.File(pcam / data.pcam_filename("valid", "x"), "w") as f:
        f["x"] = x
    with h5py.File(pcam / data.pcam_filename("valid", "y"), "w") as f:
        f["y"] = y.reshape(-1, 1, 1, 1)
    cfg = {"data_dir": None, "pcam_dir": str(pcam), "pcam": {"sample": {"split": "valid", "n": 20, "seed": 0}},
           "split": SPLIT_CFG, "labels": {"source": "data", "classes": 2}}
    with pytest.raises(PipelineError, match=r"valid_y\.h5: 2 negative label\(s\), ids \['pcam_valid_5', 'pcam_valid_7'\]"):
        data.ingest(cfg, tmp_path / "out")
    y[[5, 7]] = 2
    with h5py.File(pcam / data.pcam_filename("valid", "y"), "w") as f:
        f["y"] = y.reshape(-1, 1, 1, 1)
    with pytest.raises(PipelineError, match=r"label\(s\) >= 2, ids \['pcam_valid_5', 'pcam_valid_7'\]"):
        data.ingest(cfg, tmp_path / "out")


@pytest.mark.parametrize("counts", [(95, 5), (99, 1)])
def test_subset_keeps_every_class(counts):
    y = np.repeat([0, 1], counts)
    s = data.stratified_subset(y, 0.1, None, seed=0)
    assert len(s) == 10 and np.bincount(y[s]).tolist() == [9, 1]
    assert np.array_equal(s, data.stratified_subset(y, 0.1, None, seed=0))
    if counts[1] >= 3:
        s3 = data.stratified_subset(y, 0.1, None, seed=0, min_per_class=3)
        assert np.bincount(y[s3]).tolist() == [7, 3]


def test_subset_minimum_leaves_normal_allocation_unchanged():
    y = np.array([0] * 700 + [1] * 300)
    rng = np.random.default_rng(0)  # the pre-minimum algorithm, verbatim
    want = data._allocate(100, np.array([700, 300]) / 1000)
    old = np.sort(np.concatenate([np.sort(rng.choice(np.flatnonzero(y == c), size=k, replace=False))
                                  for c, k in zip([0, 1], want)]))
    assert np.array_equal(data.stratified_subset(y, 0.1, None, seed=0), old)


def test_subset_minimum_impossible_is_an_error():
    y = np.repeat([0, 1, 2], [50, 40, 2])
    with pytest.raises(PipelineError, match=r"subset\.min_per_class=3: .*class 2 has 2.*Lower subset\.min_per_class to 2"):
        data.stratified_subset(y, 0.5, None, seed=0, min_per_class=3, ids=[f"i{k}" for k in range(len(y))])
    with pytest.raises(PipelineError, match=r"ids \['i90', 'i91'\]"):
        data.stratified_subset(y, 0.5, None, seed=0, min_per_class=3, ids=[f"i{k}" for k in range(len(y))])
    with pytest.raises(PipelineError, match=r"subset\.count=5 selects 5 of 92.*3 classes x subset\.min_per_class=2 = 6"):
        data.stratified_subset(y, None, 5, seed=0, min_per_class=2)
    with pytest.raises(PipelineError, match=r"subset\.fraction=0\.02 selects 2 .*subset\.fraction to at least 0\.0326"):
        data.stratified_subset(y, 0.02, None, seed=0)


def test_symlink_out_of_data_dir_is_rejected_inside_accepted(tmp_path, shared_patches_dir):
    src = make_folder(tmp_path / "in", shared_patches_dir, 10)
    ids = pd.read_csv(src / "labels.csv")["id"].tolist()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(src / "images" / f"{ids[3]}.jpg", elsewhere / f"{ids[3]}.jpg")
    (src / "images" / f"{ids[3]}.jpg").symlink_to(elsewhere / f"{ids[3]}.jpg")
    with pytest.raises(PipelineError, match=rf"1 file\(s\) are symlinks that point outside data_dir.*{ids[3]}.*copy the files"):
        data.scan_folder(src)
    # a symlink whose target is inside data_dir is fine
    (src / "store").mkdir()
    (src / "images" / f"{ids[3]}.jpg").unlink()
    shutil.move(elsewhere / f"{ids[3]}.jpg", src / "store" / f"{ids[3]}.jpg")
    (src / "images" / f"{ids[3]}.jpg").symlink_to(src / "store" / f"{ids[3]}.jpg")
    assert len(data.scan_folder(src)) == 10
    # labels.csv linked from outside
    shutil.move(src / "labels.csv", elsewhere / "labels.csv")
    (src / "labels.csv").symlink_to(elsewhere / "labels.csv")
    with pytest.raises(PipelineError, match=r"labels\.csv -> "):
        data.scan_folder(src)


def test_pcam_symlinks_out_of_data_dir_are_rejected(tmp_path, real_patches):
    real = tmp_path / "real"
    for split in data.SPLITS:
        write_pcam_files(real, split, real_patches[:20], np.array([0, 1] * 10))
    linked = tmp_path / "linked"
    linked.mkdir()
    for p in real.iterdir():
        (linked / p.name).symlink_to(p)
    cfg = {"data_dir": str(linked), "pcam_dir": "unused", "pcam": {}, "split": SPLIT_CFG}
    with pytest.raises(PipelineError, match=r"6 file\(s\) are symlinks.*camelyonpatch.*point data_dir at the folder"):
        data.ingest(cfg, tmp_path / "out")
    table = data.ingest({**cfg, "data_dir": str(real)}, tmp_path / "out")
    assert len(table) == 60


def test_results_dir_inside_data_dir_is_rejected(tmp_path):
    from histaug.config import load_config, validate_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "config" / "config.yaml")
    (tmp_path / "data").mkdir()
    cfg["data_dir"] = str(tmp_path / "data")
    for inside in (tmp_path / "data" / "results", tmp_path / "data", tmp_path / "data" / ".." / "data" / "r"):
        cfg["results_dir"] = str(inside)
        with pytest.raises(PipelineError, match=r"results_dir=.* lies inside data_dir="):
            validate_config(cfg)
    cfg["results_dir"] = str(tmp_path / "results")
    validate_config(cfg)
    cfg["labels"]["classes"] = ["normal", "tumour", "other"]
    cfg["subset"]["min_per_class"] = 5
    validate_config(cfg)
    cfg["labels"]["classes"] = "3"  # what `--config labels='{classes: 3}'` passes
    validate_config(cfg)
    assert data.declared_classes("3") == (3, None) and data.declared_classes(["a", "b"]) == (2, ["a", "b"])
    for key, value in (("classes", 1), ("classes", ["only"]), ("classes", "two")):
        cfg["labels"][key] = value
        with pytest.raises(PipelineError, match=r"labels\.classes"):
            validate_config(cfg)
