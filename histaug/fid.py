"""Generation metrics on feature vectors: FID, KID and FID∞ (features from :mod:`histaug.inception`,
or any other embedding such as a classifier's penultimate layer).

Metrics
    FID: Fréchet distance between Gaussians fitted to the two feature sets.
    KID: unbiased MMD² with the polynomial kernel ``(x·y / d + 1) ** 3``, averaged over random
    subsets, drawn exactly as torch-fidelity draws them (same seed -> same subsets).
    FID∞: FID at several N, extrapolated linearly in 1/N to N = ∞ (:func:`fid_infinity`).

Statistics are computed in float64.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .utils import PipelineError, atomic_path, get_logger

log = get_logger("histaug.fid")


def save_features(path: str | os.PathLike, feats: np.ndarray, meta: dict | None = None) -> None:
    """Store features (and a JSON-serialisable ``meta`` dict) atomically as ``.npz``."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-d (N, D), got shape {feats.shape}")
    meta_json = json.dumps(meta or {}, sort_keys=True, default=str)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, feats=feats, meta=np.array(meta_json))


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read ``(feats, meta)`` written by :func:`save_features`."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: feature file not found (was the rule that makes it run?)")
    try:
        with np.load(path, allow_pickle=False) as data:
            feats = data["feats"]
            meta = json.loads(str(data["meta"]))
    except (KeyError, ValueError, OSError) as exc:
        raise PipelineError(f"{path}: not a feature file written by histaug.fid.save_features ({exc})") from exc
    return feats, meta


# --------------------------------------------------------------------------- metrics


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need at least 2 feature rows (N, D) for statistics, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d² = ‖mu1 − mu2‖² + tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½)``, the trace of the square
    root taken by :func:`trace_sqrt_product`. Singular covariances (fewer images than feature
    dimensions) are fine: their zero eigenvalues contribute nothing.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"incompatible statistics: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^½) for symmetric positive semi-definite matrices.

    sigma1 sigma2 is similar to sigma1^½ sigma2 sigma1^½, which is symmetric PSD, so the trace of
    the square root is the sum of the square roots of that matrix's eigenvalues. Two symmetric
    eigendecompositions are several times faster and steadier than a general `sqrtm` at 2048-d,
    and never produce imaginary parts (round-off negatives are clipped to 0).
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets, computed in float64.

    Equal to ``frechet_distance(*feature_statistics(f1), *feature_statistics(f2))``, but when a set has
    fewer rows than dimensions its covariance has rank < D and the square-root trace comes from an
    N×N problem instead of two D×D eigendecompositions. With centred, scaled rows ``a`` and ``b``
    (sigma1 = aᵀa, sigma2 = bᵀb), the non-zero eigenvalues of sigma1 sigma2 are those of
    ``b sigma1 bᵀ``, and, when both sets are small, the squared singular values of ``a bᵀ``.
    At D = 2048 with a few hundred images this takes milliseconds instead of seconds.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two (N >= 2, D) feature sets with equal D, got {f1.shape} and {f2.shape}")
    d = f1.shape[1]
    if min(len(f1), len(f2)) >= d:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = (f1 - mu1) / np.sqrt(len(f1) - 1), (f2 - mu2) / np.sqrt(len(f2) - 1)
    if len(a) < len(b):
        a, b = b, a  # b is the smaller set
    if len(a) < d:
        tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    else:
        k = (b @ a.T) @ (a @ b.T) if len(a) * len(b) < d * d else b @ (a.T @ a) @ b.T
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((k + k.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.einsum("ij,ij->", a, a) + np.einsum("ij,ij->", b, b) - 2.0 * tr_sqrt)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x·y / d + 1) ** 3``, the KID kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² estimate between two equally sized samples (diagonals of K_xx, K_yy excluded)."""
    m = len(x)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    f1: np.ndarray, f2: np.ndarray, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD² over ``subsets`` random subsets.

    Each subset draws ``subset_size`` rows without replacement from each set, in the same order as
    torch-fidelity (``np.random.RandomState(seed)``, first from ``f1`` then from ``f2``), so equal
    settings give equal numbers. ``subset_size`` is clipped to the smaller set with a warning.
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs two (N, D) feature sets with equal D, got {f1.shape} and {f2.shape}")
    n1, n2 = len(f1), len(f2)
    if min(n1, n2) < 2:
        raise PipelineError(f"KID needs at least 2 images per set, got {n1} real and {n2} generated")
    if subsets < 1:
        raise PipelineError(f"KID: evaluation.kid_subsets must be positive, got {subsets}")
    if subset_size > min(n1, n2):
        log.warning(
            "KID: evaluation.kid_subset_size=%d exceeds the feature sets (%d, %d); using %d",
            subset_size, n1, n2, min(n1, n2),
        )
        subset_size = min(n1, n2)
    if subset_size < 2:
        raise PipelineError(f"KID: evaluation.kid_subset_size must be at least 2, got {subset_size}")

    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = f1[rng.choice(n1, subset_size, replace=False)]
        y = f2[rng.choice(n2, subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(x, y)
    return float(mmds.mean()), float(mmds.std())


def generation_metrics(
    real_feats: np.ndarray,
    generated_feats: np.ndarray,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """FID and KID between real and generated features: ``fid, kid_mean, kid_std, n_real, n_generated``."""
    kid_mean, kid_std = kernel_inception_distance(real_feats, generated_feats, kid_subset_size, kid_subsets, seed)
    return {
        "fid": fid_from_features(real_feats, generated_feats),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "n_real": int(len(real_feats)),
        "n_generated": int(len(generated_feats)),
    }


#: Below this many images per side a finite-N FID is strongly biased upwards (it grows as N shrinks;
#: Chong & Forsyth, CVPR 2020), and the tables show KID first and mark FID as biased.
UNBIASED_N = 2048


def fid_infinity(real_feats: np.ndarray, generated_feats: np.ndarray, n_points: int = 10, min_n: int = 500,
                 seed: int = 0) -> dict | None:
    """FID∞ (Chong & Forsyth, CVPR 2020, "Effectively Unbiased FID and Inception Score and where to find them").

    FID computed on ``n_points`` random subsets of sizes N evenly spaced from max(min_n, N_max / 5) to
    N_max = the smaller set's size (both sides subsampled to N, seeded), then a least-squares line
    FID(N) = FID∞ + slope / N; its intercept extrapolates to infinitely many images. Returns
    ``{"fid_inf", "slope", "n": [...], "fid": [...]}``, or None when the sets are too small (N_max < 2 min_n,
    i.e. fewer than two useful points).
    """
    real_feats = np.asarray(real_feats, np.float64)
    generated_feats = np.asarray(generated_feats, np.float64)
    n_max = min(len(real_feats), len(generated_feats))
    n_min = max(int(min_n), n_max // 5)
    if n_max < 2 * int(min_n) or n_points < 2:
        return None
    sizes = np.unique(np.linspace(n_min, n_max, int(n_points)).astype(int))
    rng = np.random.default_rng(seed)
    fids = []
    for n in sizes:
        r = real_feats[rng.choice(len(real_feats), n, replace=False)]
        g = generated_feats[rng.choice(len(generated_feats), n, replace=False)]
        fids.append(fid_from_features(r, g))
    slope, intercept = np.polyfit(1.0 / sizes, np.asarray(fids), 1)
    return {"fid_inf": float(intercept), "slope": float(slope), "n": sizes.tolist(), "fid": [float(f) for f in fids]}
