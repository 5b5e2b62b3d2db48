"""The sanity baseline (logistic regression on pixels) and the flags it drives."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from histaug import pixel_baseline as pb
from histaug.metrics import classification_metrics
from histaug.report_tables import row_flags


def separable(n, rng):
    """Class 1 = a red-tinted image, class 0 = a blue-tinted one, plus noise: linearly separable in pixels."""
    y = (np.arange(n) % 2).astype(np.int64)
    x = rng.integers(60, 120, size=(n, 32, 32, 3))
    x[y == 1, ..., 0] += 80
    x[y == 0, ..., 2] += 80
    return x.astype(np.uint8), y


def test_features_are_area_averages():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    f = pb.pixel_features(x, 2)
    assert f.shape == (2, 12)
    assert f[0, 0] == pytest.approx(x[0, :2, :2, 0].mean() / 255)


def test_the_baseline_separates_a_separable_set_and_matches_scikit_learn(tmp_path):
    rng = np.random.default_rng(0)
    (x, y), (xv, yv), (xt, yt) = separable(80, rng), separable(40, rng), separable(40, rng)
    fitted = pb.fit_pixel_baseline(x, y, xv, yv, size=8, seed=0)
    prob = pb.predict_proba(fitted, xt, 2)
    assert classification_metrics(yt, prob)["auc"] == pytest.approx(1.0)
    f = (pb.pixel_features(x, 8) - fitted["mean"]) / fitted["scale"]
    ref = LogisticRegression(C=fitted["C"], max_iter=5000, random_state=0).fit(f, y)
    ft = (pb.pixel_features(xt, 8) - fitted["mean"]) / fitted["scale"]
    assert np.allclose(prob, ref.predict_proba(ft), atol=1e-10)
    pb.save(fitted, tmp_path / "m.npz")
    assert np.allclose(pb.predict_proba(pb.load(tmp_path / "m.npz"), xt, 2), prob)


def test_three_classes_get_full_probability_matrices():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (90, 16, 16, 3)).astype(np.uint8)
    y = np.arange(90) % 3
    x[y == 2] //= 4
    fitted = pb.fit_pixel_baseline(x, y, x, y, size=4)
    prob = pb.predict_proba(fitted, x, 3)
    assert prob.shape == (90, 3) and np.allclose(prob.sum(axis=1), 1)


def test_rows_below_the_baseline_and_degenerate_rows_are_flagged():
    summary = pd.DataFrame({"arch": ["pixel_logreg", "resnet34", "resnet34", "densenet169"],
                            "row": ["LR", "R34", "R34+Aug", "D169"], "auc_mean": [0.90, 0.95, 0.85, 0.97],
                            "n_seeds": [2, 2, 2, 2], "degenerate_seeds": [0, 0, 0, 1]})
    flags = row_flags(summary).tolist()
    assert flags[0] == "" and flags[1] == "" and "below the pixel baseline (0.900)" in flags[2]
    assert flags[3] == "one predicted class in 1 of 2 seed(s)"
