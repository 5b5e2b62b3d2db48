"""Downstream training sets, named in the config's ``downstream.trainsets``.

A training-set name says which real and which generated images a classifier is trained on:

=====================  =======================================================================
``real``               the real training subset alone (the baseline)
``real+G``             real + generator G's images from plain normal latents, all of them
                       (selective augmentation off)
``real+G.truncated``   real + G's images from truncated latents (τ), all of them
``real+G.selected``    real + G's images from truncated latents that the selector judges as
                       their intended class with confidence >= λ (selective augmentation on)
``G``, ``G.truncated``,
``G.selected``         the same generated images without the real ones (synthetic only)
=====================  =======================================================================

"Selective augmentation" is truncation *and* the confidence filter (HViTGAN §2.3); switching
it off means untruncated latents and no filter. Each kind of generated set is one file,
``samples/<G>/<source>.h5`` with ``source`` one of :data:`SOURCES`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .io import read_images, resize_images
from .utils import PipelineError

# Generated image sets per generator: file stem -> meaning.
SOURCES = {
    "normal": "plain normal latents, unfiltered",
    "truncated": "truncated latents (tau), unfiltered",
    "selected": "truncated latents, kept when the selector's confidence >= lambda",
}
_NAME = re.compile(r"^(?:(?P<real>real)(?:\+(?P<gen>[a-z][a-z0-9_]*)(?:\.(?P<src>truncated|selected))?)?"
                   r"|(?P<only>[a-z][a-z0-9_]*)(?:\.(?P<src2>truncated|selected))?)$")
# Kind of a training set, derived from its name (used in tables and metrics files).
KINDS = ("real", "augmented", "truncated", "selected", "synthetic")


@dataclass(frozen=True)
class TrainSet:
    """A parsed training-set name."""

    name: str
    with_real: bool
    generator: str | None
    source: str | None  # normal | truncated | selected, None for `real`

    @property
    def kind(self) -> str:
        if self.generator is None:
            return "real"
        if not self.with_real:
            return "synthetic"
        return {"normal": "augmented", "truncated": "truncated", "selected": "selected"}[self.source]

    def samples_file(self, results_dir: str) -> str | None:
        """The generated-image file this set reads, or None for `real`."""
        return None if self.generator is None else f"{results_dir}/samples/{self.generator}/{self.source}.h5"


def parse_trainset(name: str) -> TrainSet:
    """Parse ``real``, ``real+G``, ``real+G.truncated``, ``real+G.selected``, ``G``, ``G.truncated``, ``G.selected``."""
    m = _NAME.match(str(name))
    if not m or m.group("only") == "real":
        raise PipelineError(
            f"training set {name!r} (config downstream.trainsets): expected real, real+G, real+G.truncated, "
            "real+G.selected, G, G.truncated or G.selected, with G a generator name from run_generators"
        )
    if m.group("real"):
        gen = m.group("gen")
        return TrainSet(str(name), True, gen, (m.group("src") or "normal") if gen else None)
    return TrainSet(str(name), False, m.group("only"), m.group("src2") or "normal")


def parse_variant(variant: str) -> tuple[str, str | None]:
    """(kind, generator) of a training-set name: ``real+G.selected`` -> ("selected", "G")."""
    ts = parse_trainset(variant)
    return ts.kind, ts.generator


def training_set(variant, real, synthetic_files, log):
    """Images and labels for one training set, the number of synthetic images, the generator and the kind.

    Synthetic images are resized to the real resolution. A selected set that came out empty
    (lambda too strict) trains on the real images alone, with a warning; synthetic-only needs images.
    """
    ts = parse_trainset(variant)
    xr, yr = real
    if ts.generator is None:
        return xr, yr, 0, None, "real"
    xs, ys = read_images(synthetic_files[0])
    if len(xs) == 0:
        if not ts.with_real:
            raise PipelineError(f"{synthetic_files[0]}: no synthetic images to train on; check sampling.n_per_class "
                                "and selection.lambda")
        log.warning("%s: selection kept no image (selection.lambda too strict for this generator?); "
                    "training on the real images alone", synthetic_files[0])
        xs, ys = xr[:0], yr[:0]
    if len(xs) and xs.shape[1:] != xr.shape[1:]:
        xs = resize_images(xs, xr.shape[1])
    if not ts.with_real:
        return xs, ys, len(xs), ts.generator, ts.kind
    return np.concatenate([xr, xs]), np.concatenate([yr, ys]), len(xs), ts.generator, ts.kind
