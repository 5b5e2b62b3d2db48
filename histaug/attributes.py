"""Pixel-derived attributes: nuclear density from H&E colour deconvolution.

Nuclei stain with hematoxylin. Colour deconvolution (Ruifrok & Johnston, as in scikit-image's
`rgb2hed`) turns RGB into hematoxylin / eosin / DAB optical densities; the mean hematoxylin optical
density of a patch is its *nuclear density*. Levels are quantile bins fitted on the training split
only, and the derived binary class is "nuclear density above the training median" (class 1) vs
"at or below" (class 0).

This gives any user without annotations (and data with a single ground-truth class, like the
shared hard-negative patches) a real, measurable two-class task, and the same measurement is an
oracle for the attribute error of generated images.
"""
from __future__ import annotations

import numpy as np
from skimage.color import rgb2hed

from .utils import PipelineError

DERIVED_CLASS_NAMES = ["low nuclear density", "high nuclear density"]
DERIVED_LABEL_NOTE = (
    "Labels are derived from the pixels, not from annotations: class 1 = nuclear density (mean hematoxylin "
    "optical density from H&E colour deconvolution, scikit-image rgb2hed) above the median of the training "
    "split, class 0 = at or below it."
)


def nuclear_density(images: np.ndarray, batch: int = 512) -> np.ndarray:
    """Mean hematoxylin optical density per image, for uint8 (N,H,W,3) RGB images."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N,H,W,3) RGB images, got {images.shape}")
    out = np.empty(len(images), dtype=np.float64)
    for s in range(0, len(images), batch):
        hed = rgb2hed(images[s:s + batch], channel_axis=-1)
        out[s:s + batch] = hed[..., 0].reshape(hed.shape[0], -1).mean(axis=1)
    return out


def fit_levels(values_train: np.ndarray, n_levels: int) -> np.ndarray:
    """Inner quantile edges (n_levels-1 of them) fitted on training values only."""
    if n_levels < 2:
        raise PipelineError(f"config labels.derived_levels={n_levels}: need at least 2 levels")
    qs = np.linspace(0, 1, n_levels + 1)[1:-1]
    return np.quantile(np.asarray(values_train, dtype=np.float64), qs)


def assign_levels(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Level 0..len(edges): number of edges strictly below the value."""
    return np.searchsorted(np.asarray(edges), np.asarray(values), side="left").astype(np.int64)


def derived_binary_label(values: np.ndarray, train_median: float) -> np.ndarray:
    return (np.asarray(values) > train_median).astype(np.int64)
