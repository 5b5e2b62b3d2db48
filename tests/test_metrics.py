"""histaug.metrics against scikit-learn as an independent reference."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score, roc_curve

from histaug.metrics import SingleClassWarning, auc_score, binary_metrics, macro_auc, roc_curve_points, summarize


def _random_case(seed: int, n: int, decimals: int | None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # scores correlated with the label so AUC is far from 0.5, rounded to create many ties
    p = np.clip(0.5 * rng.random(n) + 0.4 * y + 0.05 * rng.standard_normal(n), 0, 1)
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p


@pytest.mark.parametrize("seed,n,decimals", [(0, 50, None), (1, 200, 1), (2, 333, 2), (3, 1000, 0), (4, 7, 1)])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_match_sklearn(seed, n, decimals, threshold):
    y, p = _random_case(seed, n, decimals)
    if len(np.unique(y)) < 2:
        y[0], y[1] = 0, 1
    pred = (p >= threshold).astype(int)
    m = binary_metrics(y, p, threshold=threshold)
    assert set(m) == {"accuracy", "auc", "sensitivity", "specificity"}
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=1), abs=1e-12)
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)
    assert auc_score(y, p) == pytest.approx(m["auc"], abs=1e-15)


def test_auc_ties_and_extremes():
    y = np.array([0, 0, 1, 1, 0, 1])
    assert auc_score(y, np.full(6, 0.3)) == 0.5  # all tied: every pair counts one half
    assert auc_score(y, y * 0.9) == 1.0
    assert auc_score(y, 1 - y) == 0.0
    # one tied positive/negative pair out of 9 pairs, the rest correctly ordered
    assert auc_score(y, np.array([0.1, 0.2, 0.5, 0.9, 0.5, 0.8])) == pytest.approx(8.5 / 9)


def test_probability_matrix_uses_positive_column():
    y, p = _random_case(5, 100, 2)
    two_col = np.stack([1 - p, p], axis=1)
    assert binary_metrics(y, two_col) == binary_metrics(y, p)


def test_single_class_gives_nan_auc_with_warning():
    y = np.ones(20, dtype=int)
    p = np.linspace(0, 1, 20)
    with pytest.warns(SingleClassWarning, match="only class 1"):
        m = binary_metrics(y, p)
    assert math.isnan(m["auc"])
    assert math.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(np.mean(p >= 0.5))
    assert m["accuracy"] == pytest.approx(np.mean(p >= 0.5))


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 2)])
def test_roc_curve_points_match_sklearn(seed, decimals):
    y, p = _random_case(seed, 300, decimals)
    fpr, tpr, thr = roc_curve_points(y, p)
    ref_fpr, ref_tpr, ref_thr = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    assert thr[0] == np.inf
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_macro_auc_matches_sklearn_ovr():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 400)
    logits = rng.standard_normal((400, 3)) + 1.5 * np.eye(3)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert macro_auc(y, prob) == pytest.approx(ref, abs=1e-12)
    two = prob[:, :2] / prob[:, :2].sum(1, keepdims=True)
    yb = (y[y < 2]).astype(int)
    assert macro_auc(yb, two[y < 2]) == pytest.approx(roc_auc_score(yb, two[y < 2, 1]), abs=1e-12)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="entries"):
        binary_metrics([0, 1, 1], [0.2, 0.4])
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics([0, 2, 1], [0.2, 0.4, 0.9])
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.2, float("nan")])


def test_summarize_uses_sample_std():
    vals = [0.91, 0.93, 0.88, 0.95, 0.90]
    mean, std = summarize(vals)
    assert mean == pytest.approx(np.mean(vals))
    assert std == pytest.approx(np.std(vals, ddof=1))
    assert std != pytest.approx(np.std(vals, ddof=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "degrees of freedom" warning for one run
        one = summarize([0.8])
        none = summarize([])
    assert one[0] == 0.8 and math.isnan(one[1])
    assert math.isnan(none[0]) and math.isnan(none[1])
    assert math.isnan(summarize([0.9, float("nan")])[0])
