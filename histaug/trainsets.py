"""Downstream training sets: real | real+G (all synthetic) | real+G.selected | G (synthetic only)."""
from __future__ import annotations

import numpy as np

from .io import read_images, resize_images
from .utils import PipelineError


def parse_variant(variant: str) -> tuple[str, str | None]:
    """'real' -> (real, None); 'real+G' -> (augmented, G); 'real+G.selected' -> (selected, G); 'G' -> (synthetic, G)."""
    if variant == "real":
        return "real", None
    gen = variant.removeprefix("real+").removesuffix(".selected")
    if not variant.startswith("real+"):
        return "synthetic", gen
    return ("selected" if variant.endswith(".selected") else "augmented"), gen


def training_set(variant, real, synthetic_files, log):
    """Images and labels for one variant, the number of synthetic images, the generator and the kind.

    Synthetic images are resized to the real resolution. A selected set that came out empty
    (lambda too strict) trains on the real images alone, with a warning; synthetic-only needs images.
    """
    xr, yr = real
    if variant == "real":
        return xr, yr, 0, None, "real"
    xs, ys = read_images(synthetic_files[0])
    gen = variant.removeprefix("real+").removesuffix(".selected")
    if len(xs) == 0:
        if variant == gen:
            raise PipelineError(f"{synthetic_files[0]}: no synthetic images to train on; check sampling.n_per_class")
        log.warning("%s: selection kept no image (selection.lambda too strict for this generator?); "
                    "training on the real images alone", synthetic_files[0])
        xs, ys = xr[:0], yr[:0]
    if len(xs) and xs.shape[1:] != xr.shape[1:]:
        xs = resize_images(xs, xr.shape[1])
    if variant == gen:
        return xs, ys, len(xs), gen, "synthetic"
    kind = "selected" if variant.endswith(".selected") else "augmented"
    return np.concatenate([xr, xs]), np.concatenate([yr, ys]), len(xs), gen, kind
