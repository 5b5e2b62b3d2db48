"""Malformed input through the whole DAG, and a three-class folder with converted image modes end to end."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from histaug.attributes import nuclear_density

from test_pipeline import snakemake  # noqa: E402


def make_folder(root: Path, source: Path, n: int, labels=None) -> Path:
    """A Kaggle-layout folder with copies (not links) of the first n shared patches."""
    ids = pd.read_csv(source / "labels.csv")["id"].astype(str).tolist()[:n]
    (root / "images").mkdir(parents=True)
    for i in ids:
        shutil.copy(source / "images" / f"{i}.jpg", root / "images" / f"{i}.jpg")
    labels = (np.arange(n) % 2) if labels is None else labels
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "labels.csv", index=False)
    return root


def set_label(folder: Path, row: int, value) -> str:
    table = pd.read_csv(folder / "labels.csv", dtype=str)
    table.loc[row, "label"] = str(value)
    table.to_csv(folder / "labels.csv", index=False)
    return table.loc[row, "id"]


def run_dag(folder: Path, results: Path, layer: dict | None = None):
    """The e2e DAG on `folder`, with `layer` (a config mapping) layered last."""
    files = ["config/demo.yaml", "tests/e2e.yaml"]
    if layer:
        path = folder.parent / "layer.yaml"
        path.write_text(yaml.safe_dump(layer))
        files.append(str(path))
    return snakemake("--configfile", *files, "--config", f"data_dir={folder}", f"results_dir={results}")


DATA_LABELS = {"labels": {"source": "data", "derived_levels": 4, "classes": 2}}


def _float_tiff(folder, outside, row=9):
    table = pd.read_csv(folder / "labels.csv", dtype=str)
    i = table.loc[row, "id"]
    (folder / "images" / f"{i}.jpg").unlink()
    Image.fromarray(np.full((96, 96), 0.5, np.float32), mode="F").save(folder / "images" / f"{i}.tif")
    return i


def _symlink_out(folder, outside, row=11):
    table = pd.read_csv(folder / "labels.csv", dtype=str)
    i = table.loc[row, "id"]
    target = outside / f"{i}.jpg"
    shutil.move(folder / "images" / f"{i}.jpg", target)
    (folder / "images" / f"{i}.jpg").symlink_to(target)
    return i


CASES = {
    "fractional label": (lambda f, out: set_label(f, 3, "1.5"), ["not integers", "'1.5'"]),
    "negative label": (lambda f, out: set_label(f, 5, "-1"), ["not integers", "'-1'"]),
    "label beyond labels.classes": (lambda f, out: set_label(f, 7, 2), ["labels.classes", ">= 2"]),
    "float image": (_float_tiff, ["cannot be converted safely", "(F:"]),
    "symlink leaving data_dir": (_symlink_out, ["point outside data_dir"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_stops_the_dag_naming_the_ids(case, tmp_path, shared_patches_dir):
    folder = make_folder(tmp_path / "data", shared_patches_dir, 40)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    damage, words = CASES[case]
    bad_id = damage(folder, outside)
    results = tmp_path / "results"
    res = run_dag(folder, results, DATA_LABELS)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    for word in words + [bad_id]:
        assert word in text, (word, text[-3000:])
    # nothing left looking complete
    assert not any((results / "data").glob("*.h5")) and not (results / "report.md").exists()


def test_results_dir_inside_data_dir_and_impossible_subset_are_refused(tmp_path, shared_patches_dir):
    folder = make_folder(tmp_path / "data", shared_patches_dir, 40)
    res = run_dag(folder, folder / "results")
    assert res.returncode != 0 and "lies inside data_dir" in res.stdout + res.stderr
    assert not (folder / "results" / "data").exists()
    res = run_dag(folder, tmp_path / "results",
                  {**DATA_LABELS, "subset": {"fraction": 0.1, "count": 1, "seed": 0, "min_per_class": 1}})
    text = res.stdout + res.stderr
    assert res.returncode != 0 and "subset.min_per_class=1" in text and "subset.count" in text
    assert not (tmp_path / "results" / "data" / "train_subset.csv").exists()


def _convert_some(folder: Path) -> dict[str, str]:
    """Re-save four patches in other Pillow modes (the pipeline must convert them correctly)."""
    ids = pd.read_csv(folder / "labels.csv", dtype=str)["id"].tolist()
    modes = {}
    for i, mode in zip(ids[:4], ("I;16", "RGBA", "P", "CMYK")):
        src = folder / "images" / f"{i}.jpg"
        rgb = Image.open(src).convert("RGB")
        src.unlink()
        if mode == "I;16":
            grey = (np.asarray(rgb.convert("L"), np.uint16) * 257)
            Image.fromarray(grey).save(folder / "images" / f"{i}.png")  # a 16-bit grey PNG
        elif mode == "RGBA":
            rgb.convert("RGBA").save(folder / "images" / f"{i}.png")
        elif mode == "P":
            rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "images" / f"{i}.png")
        else:
            rgb.convert("CMYK").save(folder / "images" / f"{i}.tif")
        modes[i] = mode
    return modes


THREE_CLASS = {
    "labels": {"source": "data", "derived_levels": 4, "classes": ["low density", "mid density", "high density"]},
    "subset": {"fraction": 0.5, "count": None, "seed": 0},
    "run_generators": ["cvae"],
    "downstream": {"archs": ["resnet34"], "seeds": [0], "trainsets": ["real", "real+cvae.selected"],
                   "head_classifiers": [], "head_lr": 0.0001, "image_size": 32, "epochs": 1, "batch_size": 32,
                   "lr": 0.001, "weight_decay": 0.0001, "augment": True, "pretrained": {}},
    "report": {"grid_per_class": 4, "tsne": [{"samples": "cvae", "label": "cVAE"}],
               "tsne_settings": {"points_per_panel": 30, "perplexity": 5}},
}


def test_three_classes_and_converted_modes_run_end_to_end(tmp_path, shared_patches_dir):
    """Three classes (nuclear-density tertiles) from a folder with 16-bit, RGBA, palette and CMYK images."""
    n = 150
    ids = pd.read_csv(shared_patches_dir / "labels.csv")["id"].astype(str).tolist()[:n]
    x = np.stack([np.asarray(Image.open(shared_patches_dir / "images" / f"{i}.jpg").convert("RGB")) for i in ids])
    density = nuclear_density(x)
    labels = np.searchsorted(np.quantile(density, [1 / 3, 2 / 3]), density)
    folder = make_folder(tmp_path / "data", shared_patches_dir, n, labels)
    modes = _convert_some(folder)
    config = tmp_path / "three.yaml"
    config.write_text(yaml.safe_dump(THREE_CLASS))
    results = tmp_path / "results"
    old = os.umask(0o022)
    try:
        res = snakemake("--configfile", "config/demo.yaml", "tests/e2e.yaml", str(config),
                        "--config", f"data_dir={folder}", f"results_dir={results}")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]

    meta = json.loads((results / "data/labels.json").read_text())
    assert meta["num_classes"] == 3 and meta["class_names"] == THREE_CLASS["labels"]["classes"]
    log = (results / "logs/ingest.log").read_text()
    for i, mode in modes.items():
        assert i in log, (mode, log[-2000:])
    assert "16-bit grey scaled to 8 bit" in log and "composited on white" in log
    runs = pd.read_csv(results / "tables/downstream.csv")
    assert {"sensitivity_c0", "sensitivity_c2", "auc_c1"} <= set(runs.columns)
    assert set(pd.read_csv(results / "downstream/resnet34/real/seed0/predictions.csv").columns) >= {"prob_0", "prob_2"}
    per_class = pd.read_csv(results / "tables/downstream_per_class.csv")
    assert sorted(per_class["class"].unique()) == [0, 1, 2]
    assert "### Per class (one-vs-rest)" in (results / "report.md").read_text()
    # generated samples cover the three classes
    gen = pd.read_csv(results / "tables/generation.csv")
    assert gen["n_generated"].iloc[0] > 0
    # outputs honour the umask (group and others may read), none is left 0600
    modes_seen = {stat.S_IMODE(p.stat().st_mode) for p in results.rglob("*") if p.is_file()}
    assert modes_seen <= {0o644, 0o755}, modes_seen
