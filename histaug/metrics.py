"""Classification metrics for the downstream evaluation.

The positive class is label 1 (tumour). AUC is the Mann-Whitney U statistic computed from
average ranks, so tied scores count one half, exactly as the area under the ROC step curve.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

__all__ = [
    "SingleClassWarning",
    "auc_score",
    "macro_auc",
    "binary_metrics",
    "classification_metrics",
    "roc_curve_points",
    "summarize",
]


class SingleClassWarning(UserWarning):
    """Only one class is present, so AUC (and sensitivity or specificity) is undefined."""


def _as_binary_inputs(y_true, prob_pos) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten labels (0/1) and positive-class scores.

    `prob_pos` may also be an (N, 2) probability matrix; its second column is used.
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(prob_pos, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    p = p.reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} entries but prob_pos has {len(p)}")
    if len(y) == 0:
        raise ValueError("metrics need at least one sample")
    if not np.all(np.isin(y, (0, 1))):
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"binary metrics need labels 0/1, found {bad.tolist()}")
    if not np.all(np.isfinite(p)):
        raise ValueError("prob_pos contains NaN or infinite scores")
    return y.astype(np.int64), p


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`; tied values share the mean of the ranks they span."""
    n = len(values)
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_vals) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    group_rank = (starts + ends - 1) / 2.0 + 1.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def _warn_single_class(y: np.ndarray, what: str, stacklevel: int = 4) -> None:
    present = int(y[0]) if len(y) else None
    warnings.warn(
        f"{what} is undefined: y_true contains only class {present} ({len(y)} samples); "
        "reported as NaN. Evaluate on a set that holds both classes.",
        SingleClassWarning,
        stacklevel=stacklevel,
    )


def _mann_whitney_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC = U / (n_pos * n_neg) with U from the rank sum of the positives."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        _warn_single_class(y, "AUC")
        return float("nan")
    ranks = _average_ranks(p)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auc_score(y_true, prob_pos) -> float:
    """Area under the ROC curve from the Mann-Whitney U statistic (ties count 1/2).

    Returns NaN, with a `SingleClassWarning`, when `y_true` holds a single class.
    """
    y, p = _as_binary_inputs(y_true, prob_pos)
    return _mann_whitney_auc(y, p)


def macro_auc(y_true, prob) -> float:
    """Unweighted mean of one-vs-rest AUCs over the classes present in `y_true`.

    `prob` is an (N, K) score matrix. For K = 2 this equals `auc_score(y_true, prob[:, 1])`.
    NaN (with a warning) when fewer than two classes are present.
    """
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or len(prob) != len(y):
        raise ValueError(f"prob must be (N, K) with N={len(y)}, got shape {prob.shape}")
    if prob.shape[1] == 2:
        return auc_score(y, prob[:, 1])
    classes = [k for k in range(prob.shape[1]) if np.any(y == k)]
    if len(classes) < 2:
        _warn_single_class(y, "AUC")
        return float("nan")
    return float(np.mean([auc_score((y == k).astype(np.int64), prob[:, k]) for k in classes]))


def binary_metrics(y_true, prob_pos, threshold: float = 0.5) -> dict:
    """Accuracy, AUC, sensitivity and specificity for a binary problem (positive class = 1).

    A sample is predicted positive when its score is >= `threshold`. Sensitivity is the recall
    of class 1, specificity the recall of class 0; each is NaN when its class is absent.
    With a single class in `y_true`, AUC is NaN and a `SingleClassWarning` is issued.
    """
    y, p = _as_binary_inputs(y_true, prob_pos)
    pred = (p >= threshold).astype(np.int64)
    pos = y == 1
    neg = ~pos
    tp = int(np.sum(pred[pos] == 1))
    tn = int(np.sum(pred[neg] == 0))
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    return {
        "accuracy": float((tp + tn) / len(y)),
        "auc": _mann_whitney_auc(y, p),
        "sensitivity": float(tp / n_pos) if n_pos else float("nan"),
        "specificity": float(tn / n_neg) if n_neg else float("nan"),
    }


def classification_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """Accuracy, AUC, sensitivity and specificity for K >= 2 classes from an (N, K) probability matrix.

    K = 2: exactly :func:`binary_metrics` on ``prob[:, 1]`` (class 1 positive). K > 2: the class is
    the argmax; AUC is the macro one-vs-rest AUC over the classes present; per class k,
    sensitivity_k = recall of k and specificity_k = recall of "not k" (one-vs-rest), reported as
    ``sensitivity_c<k>``, ``specificity_c<k>`` and ``auc_c<k>``; ``sensitivity`` and ``specificity``
    are their unweighted means over the classes present (macro averages).
    """
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or len(prob) != len(y) or prob.shape[1] < 2:
        raise ValueError(f"prob must be (N, K) with N={len(y)} and K >= 2, got shape {prob.shape}")
    k = prob.shape[1]
    if k == 2:
        return binary_metrics(y, prob[:, 1], threshold)
    if len(y) == 0 or not np.all(np.isfinite(prob)):
        raise ValueError("metrics need at least one sample and finite probabilities")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, found {sorted(set(y.tolist()) - set(range(k)))[:5]}")
    pred = prob.argmax(axis=1)
    out: dict = {"accuracy": float(np.mean(pred == y))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        out["auc"] = macro_auc(y, prob)
        sens, spec = [], []
        for c in range(k):
            pos = y == c
            out[f"sensitivity_c{c}"] = float(np.mean(pred[pos] == c)) if pos.any() else float("nan")
            out[f"specificity_c{c}"] = float(np.mean(pred[~pos] != c)) if (~pos).any() else float("nan")
            out[f"auc_c{c}"] = _mann_whitney_auc(pos.astype(np.int64), prob[:, c]) if 0 < pos.sum() < len(y) else float("nan")
            if pos.any():
                sens.append(out[f"sensitivity_c{c}"])
                spec.append(out[f"specificity_c{c}"])
    out["sensitivity"] = float(np.mean(sens))
    out["specificity"] = float(np.nanmean(spec)) if np.isfinite(spec).any() else float("nan")
    return out


def roc_curve_points(y_true, prob_pos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve as (fpr, tpr, thresholds), one point per distinct score, for plotting.

    Thresholds are the distinct scores in decreasing order, preceded by +inf (the (0, 0)
    point); a sample counts as positive at threshold t when its score is >= t. The trapezoidal
    area under the returned points equals `auc_score`. With a single class the undefined rate
    is NaN and a `SingleClassWarning` is issued.
    """
    y, p = _as_binary_inputs(y_true, prob_pos)
    order = np.argsort(-p, kind="mergesort")
    p_sorted = p[order]
    y_sorted = y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(p_sorted) != 0), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_group].astype(np.float64)
    fps = (last_of_group + 1) - tps
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, p_sorted[last_of_group]]
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        _warn_single_class(y, "The ROC curve", stacklevel=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr = fps / n_neg if n_neg else np.full_like(fps, np.nan)
        tpr = tps / n_pos if n_pos else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def summarize(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of repeated runs.

    One value gives (value, NaN); no values give (NaN, NaN). NaN inputs propagate, so a run
    with an undefined metric is visible in the summary instead of silently dropped.
    """
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return float("nan"), float("nan")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, float("nan")
    return mean, float(arr.std(ddof=1))
