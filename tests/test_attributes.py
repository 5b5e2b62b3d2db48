"""Nuclear density from colour deconvolution, quantile levels and derived labels."""
import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2hed

from histaug import attributes
from histaug.io import write_images
from histaug.labels import build_label_table
from histaug.utils import PipelineError


def test_nuclear_density_matches_per_image_rgb2hed(real_patches):
    x = real_patches[:20]
    ref = np.array([rgb2hed(im)[..., 0].mean() for im in x])
    np.testing.assert_allclose(attributes.nuclear_density(x, batch=7), ref, rtol=1e-12)


def test_hematoxylin_rich_patch_scores_higher():
    purple = np.zeros((1, 8, 8, 3), np.uint8) + np.array([70, 40, 140], np.uint8)  # hematoxylin-like blue/purple
    pink = np.zeros((1, 8, 8, 3), np.uint8) + np.array([240, 170, 200], np.uint8)  # eosin-like pink
    assert attributes.nuclear_density(purple)[0] > attributes.nuclear_density(pink)[0]


def test_levels_fit_on_train_only():
    train = np.arange(100.0)
    edges = attributes.fit_levels(train, 4)
    np.testing.assert_allclose(edges, np.quantile(train, [0.25, 0.5, 0.75]))
    lv = attributes.assign_levels(np.array([-5, 10, 30, 60, 99, 1000]), edges)
    assert lv.tolist() == [0, 0, 1, 2, 3, 3]
    with pytest.raises(PipelineError, match="derived_levels"):
        attributes.fit_levels(train, 1)


def test_label_table_derives_when_single_class(tmp_path, real_patches):
    files, rows = {}, []
    for split, sl in {"train": slice(0, 60), "valid": slice(60, 80), "test": slice(80, 100)}.items():
        x = real_patches[sl]
        files[split] = tmp_path / f"{split}.h5"
        write_images(files[split], x, np.zeros(len(x)))
        rows.append(pd.DataFrame({"split": split, "index": range(len(x)), "id": [f"{split}{i}" for i in range(len(x))],
                                  "source_label": 0}))
    pd.concat(rows).to_csv(tmp_path / "source.csv", index=False)
    t = build_label_table(tmp_path / "source.csv", files, {"source": "auto", "derived_levels": 4},
                          tmp_path / "labels.csv", tmp_path / "labels.json")
    train = t[t["split"] == "train"]
    median = np.median(attributes.nuclear_density(real_patches[:60]))
    assert train["label"].sum() == (train["nuclear_density"] > median).sum() == 30
    assert set(t["density_level"]) <= {0, 1, 2, 3}
    import json
    meta = json.loads((tmp_path / "labels.json").read_text())
    assert meta["label_source"] == "derived" and meta["train_median_density"] == pytest.approx(median)
    with pytest.raises(PipelineError, match="labels.source='data'.*single class"):
        build_label_table(tmp_path / "source.csv", files, {"source": "data"}, tmp_path / "l2.csv", tmp_path / "l2.json")
    assert not (tmp_path / "l2.csv").exists()
