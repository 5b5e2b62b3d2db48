"""A sanity baseline that needs no deep learning: logistic regression on downsampled pixels.

Every image is shrunk to ``size`` x ``size`` (area averaging) and its RGB values, standardised with
the training set's statistics, are the features. scikit-learn's logistic regression (L2, lbfgs) is
fitted on the same real training subset as the CNNs; the regularisation strength C is chosen from a
small grid by the validation AUC (macro one-vs-rest for more than two classes), as the CNNs choose
their epoch. A CNN whose test AUC falls below this row has learned less than pixel colours
carry, and the report flags it. The model is saved as arrays (``model.npz``): no pickled objects.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .metrics import SingleClassWarning, macro_auc
from .utils import PipelineError, atomic_path

ARCH = "pixel_logreg"
LABEL = "Logistic regression (pixels)"
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def pixel_features(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, size*size*3): area-averaged to size x size, scaled to [0, 1]."""
    images = np.asarray(images)
    n, h, w, _ = images.shape
    if h % size or w % size:
        raise PipelineError(f"config downstream.sanity_baseline.size={size} must divide the image size {h}x{w}")
    pooled = images.reshape(n, size, h // size, size, w // size, 3).mean(axis=(2, 4))
    return pooled.reshape(n, -1) / 255.0


def _fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    model.fit(features, labels)
    return model


def fit_pixel_baseline(train_x, train_y, valid_x, valid_y, size: int = 8, seed: int = 0) -> dict:
    """Fit on the training images, choose C on the validation images; returns the model as arrays."""
    f_train, f_valid = pixel_features(train_x, size), pixel_features(valid_x, size)
    mean, scale = f_train.mean(axis=0), f_train.std(axis=0) + 1e-8
    f_train, f_valid = (f_train - mean) / scale, (f_valid - mean) / scale
    train_y, valid_y = np.asarray(train_y, np.int64), np.asarray(valid_y, np.int64)
    if len(np.unique(train_y)) < 2:
        raise PipelineError("the pixel baseline needs at least two classes in the training subset")
    best = None
    for c in C_GRID:
        model = _fit(f_train, train_y, c, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            score = macro_auc(valid_y, _full_proba(model, f_valid, int(train_y.max()) + 1))
        if best is None or (np.isfinite(score) and score > best[0]):
            best = (score, c, model)
    score, c, model = best
    return {"size": size, "C": c, "valid_auc": float(score), "mean": mean, "scale": scale,
            "coef": model.coef_, "intercept": model.intercept_, "classes": model.classes_}


def _full_proba(model, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities for every class 0..K-1 (a class absent from training gets 0)."""
    prob = np.zeros((len(features), num_classes))
    prob[:, model.classes_] = model.predict_proba(features)
    return prob


def predict_proba(fitted: dict, images: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) class probabilities of the fitted baseline (computed from its arrays, as scikit-learn does)."""
    f = (pixel_features(images, int(fitted["size"])) - fitted["mean"]) / fitted["scale"]
    logits = f @ np.asarray(fitted["coef"]).T + np.asarray(fitted["intercept"])
    classes = np.asarray(fitted["classes"], np.int64)
    if logits.shape[1] == 1:  # binary: one logit for the second class
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        prob_known = np.stack([1.0 - p1, p1], axis=1)
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob_known = e / e.sum(axis=1, keepdims=True)
    prob = np.zeros((len(f), num_classes))
    prob[:, classes] = prob_known
    return prob


def save(fitted: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in fitted.items()})


def load(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
