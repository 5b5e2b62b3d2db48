"""t-SNE panels per loss scenario (HViTGAN Fig. 3): subsampling, separation scores, figure, CSVs, config."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import silhouette_score

from histaug.config import load_config, validate_config
from histaug.embedding import (
    COORD_COLUMNS,
    SCORE_COLUMNS,
    balanced_subsample,
    compute_tsne,
    draw_tsne_figure,
    feature_extractor,
    knn_agreement,
    parse_panels,
    report_section,
    separation_scores,
    silhouette,
    tsne_settings,
    write_tsne,
)
from histaug.io import write_images
from histaug.utils import PipelineError

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["low density", "high density"]


def colour_features(images: np.ndarray) -> np.ndarray:
    """Per-channel mean and std: a cheap, deterministic feature function."""
    x = images.astype(np.float64) / 255
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def load_layers(*names):
    return load_config(*(REPO / n for n in names))


# --------------------------------------------------------------------------- scores


def test_silhouette_is_sklearns():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(120, 16))
    labels = rng.integers(0, 2, 120)
    feats[labels == 1] += 0.7
    assert silhouette(feats, labels) == pytest.approx(silhouette_score(feats, labels), abs=1e-12)


def test_scores_high_for_separable_and_about_zero_for_identical_classes():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 8))
    labels = np.repeat([0, 1], 100)
    separable = base.copy()
    separable[labels == 1] += 12.0
    high = separation_scores(separable, labels, k=10)
    assert high["silhouette"] > 0.8 and high["knn_agreement"] == 1.0
    # identical class distributions: the labels carry no information about the features
    same = separation_scores(base, rng.permutation(labels), k=10)
    assert abs(same["silhouette"]) < 0.05 and abs(same["knn_agreement"] - 0.5) < 0.1
    # undefined with one class
    one = separation_scores(base, np.zeros(200, int))
    assert np.isnan(one["silhouette"]) and np.isnan(one["knn_agreement"])


def test_knn_agreement_matches_brute_force():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(40, 3))
    labels = rng.integers(0, 3, 40)
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :5]
    assert knn_agreement(feats, labels, k=5) == pytest.approx((labels[nn] == labels[:, None]).mean())
    # k above n - 1 is lowered, duplicates do not break the self-exclusion
    dup = np.repeat(feats[:3], 2, axis=0)
    assert 0 <= knn_agreement(dup, np.array([0, 0, 1, 1, 0, 1]), k=50) <= 1


# --------------------------------------------------------------------------- subsampling


def test_balanced_subsample_is_balanced_and_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    idx = balanced_subsample(labels, 400, num_classes=2, seed=0)
    assert (np.bincount(labels[idx]) == [200, 200]).all()
    assert (np.diff(idx) > 0).all()  # sorted, no repeats
    assert np.array_equal(idx, balanced_subsample(labels, 400, 2, seed=0))
    assert not np.array_equal(idx, balanced_subsample(labels, 400, 2, seed=1))
    # a class with fewer rows than its share is taken whole; the other keeps its share
    few = balanced_subsample(labels, 800, 2, seed=0)
    assert list(np.bincount(labels[few])) == [400, 300]
    # a missing class still counts: half of n per class
    assert len(balanced_subsample(np.zeros(50, int), 40, 2, seed=0)) == 20


# --------------------------------------------------------------------------- panels on real patches


@pytest.fixture(scope="module")
def panel_files(real_patches, tmp_path_factory):
    """Three generated-image stand-ins from real patches: labels that follow brightness (separable in
    colour features), random labels (not separable) and a set too small to embed."""
    out = tmp_path_factory.mktemp("tsne")
    x = real_patches[:160]
    brightness = x.reshape(len(x), -1).mean(axis=1)
    y_sep = (brightness > np.median(brightness)).astype(int)
    y_rand = np.random.default_rng(0).permutation(y_sep)
    files = {"cgan": out / "samples/cgan/normal.h5", "cvae.selected": out / "samples/cvae/selected.h5",
             "hvitgan.selected": out / "samples/hvitgan/selected.h5"}
    write_images(files["cgan"], x, y_sep)
    write_images(files["cvae.selected"], x, y_rand)
    write_images(files["hvitgan.selected"], x[:3], y_sep[:3])
    panels = parse_panels([{"samples": "cgan", "label": "(a) brightness"}, {"samples": "cvae.selected", "label": "(b) random"},
                           {"samples": "hvitgan.selected"}])
    return out, panels, [files[p.samples] for p in panels]


def test_panels_read_their_samples_file(panel_files):
    out, panels, files = panel_files
    assert [p.samples_file(str(out)) for p in panels] == [str(f) for f in files]
    assert panels[2].label == "hvitgan.selected" and panels[1].source == "selected"


def test_write_tsne_figure_and_tables(panel_files, tmp_path):
    _, panels, files = panel_files
    settings = {"points_per_panel": 120, "perplexity": 30, "seed": 0}
    res = write_tsne(panels, files, colour_features, CLASS_NAMES, settings, tmp_path / "figures/tsne.png",
                     tmp_path / "tables/tsne_scores.csv", tmp_path / "tables/tsne_coordinates.csv",
                     tmp_path / "tables/tsne_scores.md")
    with Image.open(tmp_path / "figures/tsne.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert res["n_axes"] == len(panels) == 3

    scores = pd.read_csv(tmp_path / "tables/tsne_scores.csv")
    assert list(scores.columns) == SCORE_COLUMNS and len(scores) == 3
    assert scores["n_points"].tolist() == [120, 120, 3]
    assert scores["n_per_class"].tolist()[:2] == ["60/60", "60/60"]
    assert scores.loc[0, "silhouette"] > scores.loc[1, "silhouette"] + 0.1
    assert scores.loc[0, "knn_agreement"] > 0.8 and abs(scores.loc[1, "knn_agreement"] - 0.5) < 0.15
    assert np.isnan(scores.loc[2, "silhouette"])  # 3 images, one class: no score, no embedding

    coords = pd.read_csv(tmp_path / "tables/tsne_coordinates.csv")
    assert list(coords.columns) == COORD_COLUMNS
    assert len(coords) == 240 and coords.groupby("panel").size().to_dict() == {1: 120, 2: 120}
    assert set(coords["class_name"]) == set(CLASS_NAMES)
    assert np.isfinite(coords[["x", "y"]].to_numpy()).all()
    # the score comes from the features of exactly the plotted images
    first = coords[coords["panel"] == 1]
    from histaug.io import read_images

    x, y = read_images(files[0], indices=first["index"].to_numpy())
    assert (y == first["class"].to_numpy()).all()
    assert scores.loc[0, "silhouette"] == pytest.approx(silhouette_score(colour_features(x), y), rel=1e-5)

    md = (tmp_path / "tables/tsne_scores.md").read_text()
    assert "| (a) brightness |" in md and "n/a" in md and "**" in md

    # same seed, same points and map
    again, coords_again = compute_tsne(panels, files, colour_features, CLASS_NAMES, settings)
    assert np.allclose(coords_again[["x", "y"]].to_numpy(), coords[["x", "y"]].to_numpy(), atol=1e-4)


def test_joint_embedding_shares_one_map(panel_files):
    _, panels, files = panel_files
    scores, coords = compute_tsne(panels[:2], files[:2], colour_features, CLASS_NAMES,
                                  {"points_per_panel": 60, "embedding": "joint"})
    assert len(coords) == 120 and scores["perplexity"].nunique() == 1
    assert (scores["embedding"] == "joint").all()


def test_figure_has_one_axes_per_panel():
    rng = np.random.default_rng(3)
    scores = pd.DataFrame([{"panel": i + 1, "label": f"({chr(97 + i)})", "samples": "g", "n_points": 20, "silhouette": 0.1,
                            "knn_agreement": 0.6, "neighbours": 10, "features": "classifier", "embedding": "separate"}
                           for i in range(7)])
    coords = pd.DataFrame({"panel": np.repeat(np.arange(1, 8), 20), "class": np.tile([0, 1], 70),
                           "x": rng.normal(size=140), "y": rng.normal(size=140)})
    fig = draw_tsne_figure(scores, coords, CLASS_NAMES, "title")
    assert len(fig.axes) == 7
    assert fig.axes[3].get_title().startswith("(d)\nsilhouette 0.100")


def test_report_section_links_and_table(panel_files, tmp_path):
    _, panels, files = panel_files
    write_tsne(panels[:2], files[:2], colour_features, CLASS_NAMES, {"points_per_panel": 40}, tmp_path / "figures/t.png",
               tmp_path / "tables/s.csv", tmp_path / "tables/c.csv")
    section = report_section({"figure": tmp_path / "figures/t.png", "scores": tmp_path / "tables/s.csv",
                              "coordinates": tmp_path / "tables/c.csv"}, tmp_path)
    assert section["figure"] == "figures/t.png" and section["scores"] == "tables/s.csv"
    assert "(b) random" in section["table"] and "silhouette" in section["intro"]
    with pytest.raises(PipelineError, match="rule tsne"):
        report_section({"figure": tmp_path / "nope.png", "scores": "", "coordinates": ""}, tmp_path)


# --------------------------------------------------------------------------- features


def test_classifier_features(real_patches, tmp_path):
    from histaug.classify import IMAGENET_MEAN, IMAGENET_STD, build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet34", 2)
    meta = {"arch": "resnet34", "num_classes": 2, "image_size": 32,
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp_path / "model.pt")
    extract = feature_extractor("classifier", classifier=tmp_path / "model.pt", batch_size=4)
    feats = extract(real_patches[:6])
    assert feats.shape == (6, 512) and feats.dtype == np.float64 and np.isfinite(feats).all()


def test_inception_features_need_ok_status(tmp_path):
    status = tmp_path / "inception.json"
    status.write_text(json.dumps({"status": "n/a: Inception weights not found"}))
    with pytest.raises(PipelineError, match=r"report\.tsne_settings\.features='inception'.*n/a: Inception weights not found"):
        feature_extractor("inception", inception_status=status)


# --------------------------------------------------------------------------- configuration


def test_shipped_configs_have_their_panels():
    paper = load_layers("config/config.yaml")
    validate_config(paper)
    panels = parse_panels(paper["report"]["tsne"], paper["run_generators"])
    assert [p.samples for p in panels] == ["hvitgan_nocp_wnone", "hvitgan_nocp_wall", "hvitgan_nocp_wkendall", "hvitgan_nocp",
                                           "hvitgan", "hvitgan_nocp.selected", "hvitgan.selected"]
    assert [p.label[:3] for p in panels] == [f"({c})" for c in "abcdefg"]
    demo = load_layers("config/config.yaml", "config/demo.yaml")
    assert [p.samples for p in parse_panels(demo["report"]["tsne"], demo["run_generators"])] == [
        "cgan", "cvae", "hvitgan", "hvitgan.selected"]
    e2e = load_layers("config/config.yaml", "config/demo.yaml", "tests/e2e.yaml")
    assert len(e2e["report"]["tsne"]) == 2 and e2e["report"]["tsne_settings"]["points_per_panel"] <= 100


@pytest.mark.parametrize("panels, message", [
    ([{"samples": "cgan"}, {"samples": "ghost.selected"}], r"report\.tsne\[1\]\.samples='ghost\.selected'.*run_generators"),
    ([{"samples": "real+cgan"}], r"report\.tsne\[0\]\.samples"),
    ([{"samples": "real"}], r"report\.tsne\[0\]\.samples='real'"),
    ([{"samples": "cgan.best"}], r"report\.tsne\[0\]\.samples"),
    ([{"samples": "cgan", "colour": "red"}], r"report\.tsne\[0\].*colour"),
])
def test_bad_panels_are_named(panels, message):
    cfg = load_layers("config/config.yaml")
    cfg["report"]["tsne"] = panels
    with pytest.raises(PipelineError, match=message):
        validate_config(cfg)


def test_no_panels_is_valid_and_settings_are_checked():
    cfg = load_layers("config/config.yaml")
    for empty in ([], None):
        cfg["report"]["tsne"] = empty
        validate_config(cfg)
        assert parse_panels(empty) == []
    cfg["report"]["tsne_settings"] = {"features": "pixels"}
    with pytest.raises(PipelineError, match=r"report\.tsne_settings\.features"):
        validate_config(cfg)
    with pytest.raises(PipelineError, match="features"):
        tsne_settings({"features": "pixels"})
    assert tsne_settings(None)["embedding"] == "separate"
