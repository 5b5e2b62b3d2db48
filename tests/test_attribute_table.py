"""The attribute table from pixels, the authors' annotation file and pathologist reports; attribute error;
sweeps."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from histaug import attribute_measures as am
from histaug.attribute_error import REAL, error_rows, normalised, wide_table
from histaug.attribute_figures import most_frequent_combination, plot_attribute_sweep, sweep_images
from histaug.attribute_table import attribute_names, build_attribute_table, measure_levels, read_attribute_levels
from histaug.attributes import assign_levels, fit_levels
from histaug.classifier_training import attribute_mse, expected_levels
from histaug.io import write_images
from histaug.utils import PipelineError
from models import Condition, build_generator

from conftest import SHARED_DATA, tiny_cvae_cfg  # noqa: E402

AUTHORS_CSV = SHARED_DATA / "attributegan-annotations" / "bladder_attributes.csv"
REPORTS = SHARED_DATA / "bladder-reports" / "reports.json"

PIXELS = {"source": "pixels", "pixels": {"size": None, "seed": 0, "attributes": [
    {"name": "nuclear_density", "measure": "hematoxylin_density", "levels": 4},
    {"name": "nuclear_crowding", "measure": "nuclei_per_tissue_area", "levels": 3},
    {"name": "stroma_fraction", "measure": "eosin_fraction", "levels": 2}]}}


def write_dataset(root, images, ids, fractions=(0.6, 0.2, 0.2)):
    """Split files and a labels.csv (split, index, id) like the rules ingest and labels write."""
    n = len(images)
    bounds = np.cumsum([0] + [int(round(f * n)) for f in fractions[:-1]] + [n - sum(int(round(f * n)) for f in fractions[:-1])])
    rows, files = [], {}
    for split, (a, b) in zip(("train", "valid", "test"), zip(bounds[:-1], bounds[1:])):
        files[split] = root / f"{split}.h5"
        write_images(files[split], images[a:b], np.zeros(b - a, np.int64))
        rows.append(pd.DataFrame({"split": split, "index": np.arange(b - a), "id": ids[a:b], "label": 0}))
    pd.concat(rows).to_csv(root / "labels.csv", index=False)
    return files


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory, real_patches):
    root = tmp_path_factory.mktemp("pixels")
    files = write_dataset(root, real_patches, [f"p{i}" for i in range(len(real_patches))])
    table, meta = build_attribute_table(PIXELS, root / "labels.csv", files, root / "attributes.csv", root / "attributes.json")
    return root, files, table, meta


def test_pixel_levels_are_quantile_bins_fitted_on_the_training_split(pixel_run, real_patches):
    root, files, table, meta = pixel_run
    assert meta["names"] == ["nuclear_density", "nuclear_crowding", "stroma_fraction"] and meta["levels"] == [4, 3, 2]
    written = pd.read_csv(root / "attributes.csv")
    assert list(written.columns[:6]) == ["split", "index", "id", "nuclear_density_level", "nuclear_crowding_level",
                                         "stroma_fraction_level"]
    train = written[written["split"] == "train"]
    params = am.fit_params(real_patches[:len(train)], 96, seed=0)
    values = am.measure(real_patches[:len(train)], ["hematoxylin_density"], params)["hematoxylin_density"]
    edges = fit_levels(values, 4)
    assert np.allclose(meta["attributes"][0]["edges"], edges)
    assert train["nuclear_density_level"].tolist() == assign_levels(values, edges).tolist()
    # levels of other splits use the training edges, not their own
    test = written[written["split"] == "test"]
    assert test["nuclear_density_level"].tolist() == assign_levels(test["nuclear_density"], edges).tolist()
    assert np.bincount(train["nuclear_density_level"]).tolist() == meta["attributes"][0]["train_counts"]


def test_pixel_edges_do_not_depend_on_validation_or_test_images(pixel_run, tmp_path, real_patches):
    _, _, _, meta = pixel_run
    changed = real_patches.copy()
    n_train = int(round(0.6 * len(changed)))
    changed[n_train:] = 255 - changed[n_train:]  # other validation and test images
    files = write_dataset(tmp_path, changed, [f"p{i}" for i in range(len(changed))])
    _, meta2 = build_attribute_table(PIXELS, tmp_path / "labels.csv", files, tmp_path / "a.csv", tmp_path / "a.json")
    assert [a["edges"] for a in meta2["attributes"]] == [a["edges"] for a in meta["attributes"]]
    assert meta2["params"] == meta["params"]


def test_oracle_levels_of_real_images_equal_the_table(pixel_run, real_patches):
    root, files, table, meta = pixel_run
    from histaug.io import read_images

    x, _ = read_images(files["test"])
    assert np.array_equal(measure_levels(x, meta), read_attribute_levels(root / "attributes.csv", "test"))


def test_annotation_file_in_the_authors_format(tmp_path, real_patches):
    authors = pd.read_csv(AUTHORS_CSV)
    stems = [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in authors["path"]]
    n = 50
    images = np.repeat(real_patches[:1], n, axis=0)
    files = write_dataset(tmp_path, images, stems[:n])
    csv = tmp_path / "annotations.csv"
    authors.iloc[:n].to_csv(csv, index=False)
    spec = {"source": "file", "file": {"path": str(csv), "levels": {"cell_crowding": 5, "cell_polarity": 4, "mitosis": 4,
                                                                    "nucleoli": 3, "pleomorphism": 5}}}
    table, meta = build_attribute_table(spec, tmp_path / "labels.csv", files, tmp_path / "a.csv", tmp_path / "a.json")
    assert meta["names"] == ["cell_crowding", "cell_polarity", "mitosis", "nucleoli", "pleomorphism"]
    assert meta["levels"] == [5, 4, 4, 3, 5] and attribute_names(spec) == meta["names"]
    by_id = table.set_index("id")
    for stem, (_, row) in zip(stems[:n], authors.iloc[:n].iterrows()):
        assert by_id.loc[stem, "mitosis_level"] == row["mitosis_level"]
        assert by_id.loc[stem, "pleomorphism_level"] == row["pleomorphism_level"]


@pytest.mark.parametrize("damage, message", [
    (lambda f: pd.concat([f, f.iloc[[0]].assign(path="/x/not_an_image.png")]), "not in the data"),
    (lambda f: f.iloc[1:], "have no row"),
    (lambda f: f.assign(mitosis_level=[-1] + f["mitosis_level"].tolist()[1:]), "below 0"),
    (lambda f: f.assign(nucleoli_level=[9] + f["nucleoli_level"].tolist()[1:]), "beyond the 3 declared levels"),
    (lambda f: f.assign(mitosis_level=[None] + f["mitosis_level"].tolist()[1:]), "missing"),
    (lambda f: pd.concat([f, f.iloc[[2]]]), "duplicate image ids"),
])
def test_bad_annotation_files_name_the_problem(tmp_path, real_patches, damage, message):
    authors = pd.read_csv(AUTHORS_CSV).iloc[:20]
    stems = [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in authors["path"]]
    files = write_dataset(tmp_path, np.repeat(real_patches[:1], 20, axis=0), stems)
    csv = tmp_path / "bad.csv"
    damage(authors).to_csv(csv, index=False)
    spec = {"source": "file", "file": {"path": str(csv), "levels": {"nucleoli": 3}}}
    with pytest.raises(PipelineError, match=message) as exc:
        build_attribute_table(spec, tmp_path / "labels.csv", files, tmp_path / "a.csv", tmp_path / "a.json")
    assert str(csv) in str(exc.value)
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "a.json").exists()


def test_report_levels_combined_per_image(tmp_path, real_patches):
    entries = json.loads(REPORTS.read_text())[:30]
    ids = [e["image_id"] for e in entries]
    files = write_dataset(tmp_path, np.repeat(real_patches[:1], 30, axis=0), ids)
    path = tmp_path / "reports.json"
    path.write_text(json.dumps(entries))
    spec = {"source": "reports", "reports": {"path": str(path), "missing": "normal"}}
    table, meta = build_attribute_table(spec, tmp_path / "labels.csv", files, tmp_path / "a.csv", tmp_path / "a.json")
    assert meta["names"] == ["cell_crowding", "cell_polarity", "mitosis", "nucleoli", "pleomorphism"]
    from histaug.reports import combine_levels, report_rows

    rows = [r for r in report_rows([(ids[0], entries[0]["reports"])])]
    want = combine_levels(rows)
    got = table.set_index("id").loc[ids[0]]
    assert int(got["mitosis_level"]) == (want["mitosis_level"] or 0)
    # without the missing policy, an attribute no report states is an error naming the image
    entries[3] = {"image_id": ids[3], "reports": ["moderate pleomorphism is present high grade"]}
    path.write_text(json.dumps(entries))
    strict = {"source": "reports", "reports": {"path": str(path)}}
    with pytest.raises(PipelineError, match=f"missing: normal.*|{ids[3]}") as exc:
        build_attribute_table(strict, tmp_path / "labels.csv", files, tmp_path / "b.csv", tmp_path / "b.json")
    assert ids[3] in str(exc.value) and "missing: normal" in str(exc.value)


def test_attribute_error_against_a_direct_computation():
    rng = np.random.default_rng(0)
    counts = [4, 3, 2]
    prob = np.concatenate([rng.dirichlet(np.ones(n), 50) for n in counts], axis=1)
    requested = np.stack([rng.integers(0, n, 50) for n in counts], axis=1)
    direct = []
    start = 0
    for a, n in enumerate(counts):
        expected = (prob[:, start:start + n] * np.arange(n)).sum(axis=1) / (n - 1)
        direct.append(np.mean((expected - requested[:, a] / (n - 1)) ** 2))
        start += n
    assert np.allclose(attribute_mse(prob, requested, counts), direct)
    assert np.allclose(expected_levels(prob, counts)[:, 2], prob[:, 8])
    oracle = requested.copy()
    oracle[:10, 0] = 3
    rows = error_rows(REAL, prob, requested, counts, ["a", "b", "c"], oracle_levels=oracle)
    assert [r["attribute"] for r in rows] == ["a", "b", "c"] and rows[0]["error"] == pytest.approx(direct[0])
    assert rows[0]["oracle_error"] == pytest.approx(np.mean((normalised(oracle, counts) - normalised(requested, counts))[:, 0] ** 2))
    assert rows[1]["oracle_error"] == 0
    wide = wide_table(pd.DataFrame(rows))
    assert list(wide.columns) == ["model", "a", "a (oracle)", "b", "b (oracle)", "c", "c (oracle)", "images"]


def test_sweep_changes_only_the_swept_attribute(tmp_path, real_patches):
    cond = Condition.attributes(["a", "b"], [3, 2])
    g = build_generator(tiny_cvae_cfg(), cond, name="g").generator.eval()
    images = sweep_images(g, np.array([1, 0]), attribute=0, n_levels=3, n_columns=4, seed=0)
    assert images.shape == (3, 4, 32, 32, 3)
    levels = np.array([[0, 0], [1, 0], [1, 1], [2, 0]] * 5)
    assert most_frequent_combination(levels).tolist() == [0, 0]
    out = plot_attribute_sweep(g, 0, ["a", "b"], ["low", "mid", "high"], np.array([1, 0]), real_patches[:20], levels,
                               tmp_path / "sweep.png", "test", n_columns=4)
    assert out.stat().st_size > 0
    with torch.no_grad():
        z = torch.randn(2, g.latent_dim)
        assert not torch.allclose(g(z, torch.tensor([[0, 0], [0, 0]])), g(z, torch.tensor([[2, 0], [2, 0]])))


def test_attribute_names_of_each_source():
    assert attribute_names(PIXELS) == ["nuclear_density", "nuclear_crowding", "stroma_fraction"]
    assert attribute_names({"source": "reports", "reports": {"path": "x"}})[:2] == ["cell_crowding", "cell_polarity"]
    assert attribute_names({"source": None}) == []
