"""Cellular attributes measured on H&E pixels: stain densities, nuclei counts, sizes and stroma.

Every measurement is a function of uint8 (N, H, W, 3) RGB images returning float64 (N,) values.
They are built from two per-pixel quantities:

* colour deconvolution (Ruifrok & Johnston, scikit-image ``rgb2hed``): hematoxylin (nuclei),
  eosin (cytoplasm, stroma) and DAB optical densities, in scikit-image's normalised units;
* total optical density ``sum_c -ln(max(I_c, 1) / 255)`` over R, G, B: a pixel is *tissue* when it
  exceeds :data:`TISSUE_OD_THRESHOLD` (white glass / fat background is not tissue).

Nuclei are segmented per image: pixels whose hematoxylin OD is above the nucleus threshold,
grouped into 8-connected components (``skimage.measure.label(connectivity=2)``, so touching
diagonals belong to one nucleus); components smaller than the minimum nucleus area are dropped.

The thresholds are :class:`MeasureParams`, fitted on the training split only (:func:`fit_params`)
and then fixed, so that validation, test and generated images are all measured the same way.
Images are resized to ``params.size`` before measuring (areas are pixels at that size).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from functools import cached_property
from typing import Callable, Iterable, Mapping

import numpy as np
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.measure import label

from .io import resize_images
from .utils import PipelineError, cap_images, progress

#: Total optical density (natural log, summed over R, G, B) above which a pixel is tissue. 0.45 is
#: 3 x 0.15, the per-channel background cut-off of Macenko et al. (2009): white glass (~245 grey)
#: has ~0.12, pale fat ~0.3, pale eosin-stained stroma ~0.8, nuclei 2-4.
TISSUE_OD_THRESHOLD = 0.45
#: Minimum nucleus area in pixels at 96 px; scaled by (size / 96)^2 for other measurement sizes.
MIN_NUCLEUS_AREA_96 = 4
#: Otsu thresholds are fitted on unsaturated pixels (no channel at 0: scikit-image clips the
#: intensity at 1e-6, so such a pixel deconvolves to OD ~1, 10-20x the stain range, e.g. 0.14 % of
#: the shared PCam pixels) with values clipped at this percentile, so that rare outliers do not
#: stretch the histogram and pull the threshold into them (E threshold 0.47 instead of 0.03 with them).
OTSU_CLIP_PERCENTILE = 99.9
#: Nuclei per tissue area are reported per this many tissue pixels.
PER_TISSUE_PIXELS = 1000.0

MEASURES: list[tuple[str, str]] = [
    ("hematoxylin_density", "mean hematoxylin optical density (rgb2hed channel 0); histaug.attributes.nuclear_density"),
    ("nuclei_per_tissue_area", "segmented nuclei per 1,000 tissue pixels at the measurement size (0 without tissue)"),
    ("nucleus_area_cv", "coefficient of variation (population std / mean) of nucleus areas (0 with < 2 nuclei)"),
    ("mean_nucleus_area", "mean segmented nucleus area in pixels at the measurement size (0 without nuclei)"),
    ("eosin_fraction", "fraction of tissue pixels that are non-nuclear and eosin-dominated stroma (0 without tissue)"),
]

_OD_LUT = -np.log(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)


def default_min_nucleus_area(size: int) -> int:
    """Minimum nucleus area in pixels at measurement size ``size``: 4 px at 96 px, scaled by area, >= 1."""
    return max(1, int(round(MIN_NUCLEUS_AREA_96 * (int(size) / 96.0) ** 2)))


@dataclass(frozen=True)
class MeasureParams:
    """Fixed measurement parameters (fit on the training split with :func:`fit_params`)."""

    size: int  #: images are resized to size x size before measuring
    nucleus_h_threshold: float  #: hematoxylin OD above which a pixel is nuclear
    eosin_threshold: float  #: eosin OD at or above which a non-nuclear tissue pixel is stroma
    tissue_od_threshold: float = TISSUE_OD_THRESHOLD  #: total OD above which a pixel is tissue
    min_nucleus_area: int = MIN_NUCLEUS_AREA_96  #: smaller components (pixels) are not nuclei
    seed: int = 0  #: seed of the pixel sample the thresholds were fitted on
    n_fit_images: int = 0  #: training images the sample was drawn from
    n_fit_pixels: int = 0  #: unsaturated sampled pixels (all of them for H, the tissue ones for eosin)

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "MeasureParams":
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown, missing = sorted(set(d) - names), sorted(required - set(d))
        if unknown or missing:
            raise PipelineError(
                f"attribute measurement parameters: unknown keys {unknown}, missing keys {missing}; expected "
                f"{sorted(names)} (write them with MeasureParams.to_dict, or refit with fit_params)")
        kw = {f.name: (float(d[f.name]) if f.type in ("float", float) else int(d[f.name])) for f in fields(cls)
              if f.name in d}
        return cls(**kw)


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N,H,W,3) RGB images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images, got dtype {images.dtype}")
    return images


def _to_size(images: np.ndarray, size: int) -> np.ndarray:
    """Images resized to size x size (histaug.io.resize_images); unchanged, without importing torch, if already."""
    return images if images.shape[1] == images.shape[2] == size else resize_images(images, size)


def total_optical_density(images: np.ndarray) -> np.ndarray:
    """Per-pixel total OD ``sum_c -ln(max(I_c, 1) / 255)`` of uint8 (..., 3) images, float64 (...)."""
    return _OD_LUT[images].sum(axis=-1)


def _otsu(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(threshold_otsu(np.minimum(values, np.percentile(values, OTSU_CLIP_PERCENTILE))))


def fit_params(train_images: np.ndarray, size: int, seed: int = 0, *, max_images: int = 2048,
               max_pixels: int = 200_000, tissue_od_threshold: float = TISSUE_OD_THRESHOLD,
               min_nucleus_area: int | None = None) -> MeasureParams:
    """Fit the measurement parameters on TRAINING images only.

    A seeded sample of at most ``max_images`` images (resized to ``size``) and at most
    ``max_pixels`` of their pixels is drawn; saturated pixels (a channel at 0) are left out. The
    nucleus threshold is Otsu's threshold of the sampled hematoxylin ODs, the eosin threshold
    Otsu's threshold of the eosin ODs of the sampled tissue pixels (both clipped at the
    :data:`OTSU_CLIP_PERCENTILE`-th percentile first). ``n_fit_pixels`` records the pixels used.
    """
    train_images = _check_images(train_images)
    size = int(size)
    if len(train_images) == 0:
        raise PipelineError("fit_params: no training images to fit the attribute measurement parameters on")
    if size < 1:
        raise PipelineError(f"fit_params: measurement size must be a positive number of pixels, got {size}")
    sub = _to_size(cap_images(train_images, max_images, seed=seed), size)
    flat = sub.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    n_pix = min(int(max_pixels), len(flat))
    pixels = flat[np.sort(rng.choice(len(flat), n_pix, replace=False))]
    pixels = pixels[pixels.min(axis=1) > 0]
    hed = rgb2hed(pixels[None], channel_axis=-1)[0]
    tissue = total_optical_density(pixels) > tissue_od_threshold
    if tissue.sum() < 2:
        raise PipelineError(
            f"fit_params: only {int(tissue.sum())} of {n_pix} sampled training pixels are unsaturated tissue (total "
            f"optical density > {tissue_od_threshold}, no channel at 0); the training images look blank or "
            "saturated, so no thresholds can be fitted")
    return MeasureParams(
        size=size,
        nucleus_h_threshold=_otsu(hed[:, 0]),
        eosin_threshold=_otsu(hed[tissue, 1]),
        tissue_od_threshold=float(tissue_od_threshold),
        min_nucleus_area=default_min_nucleus_area(size) if min_nucleus_area is None else int(min_nucleus_area),
        seed=int(seed),
        n_fit_images=int(len(sub)),
        n_fit_pixels=int(len(pixels)),
    )


class _Batch:
    """One batch of images at the measurement size; each quantity is computed at most once, on demand."""

    def __init__(self, images: np.ndarray, params: MeasureParams):
        self.images, self.params = images, params

    @cached_property
    def hed(self) -> np.ndarray:  # (n, H, W, 3) float64, deconvolved once per batch
        return rgb2hed(self.images, channel_axis=-1)

    @cached_property
    def tissue(self) -> np.ndarray:  # (n, H, W) bool
        return total_optical_density(self.images) > self.params.tissue_od_threshold

    @cached_property
    def tissue_pixels(self) -> np.ndarray:  # (n,) number of tissue pixels
        return self.tissue.reshape(len(self.tissue), -1).sum(axis=1)

    @cached_property
    def nuclear(self) -> np.ndarray:  # (n, H, W) bool, before the minimum-area filter
        return self.hed[..., 0] > self.params.nucleus_h_threshold

    @cached_property
    def nucleus_areas(self) -> list[np.ndarray]:  # per image: areas (pixels) of the kept nuclei
        out = []
        for mask in self.nuclear:
            if not mask.any():
                out.append(np.zeros(0, np.int64))
                continue
            areas = np.bincount(label(mask, connectivity=2).ravel())[1:]
            out.append(areas[areas >= self.params.min_nucleus_area])
        return out


def _per_tissue(count: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    out = np.zeros(len(tissue), np.float64)
    has = tissue > 0
    out[has] = count[has] / tissue[has]
    return out


def _hematoxylin_density(b: _Batch) -> np.ndarray:
    # the exact reduction of histaug.attributes.nuclear_density, on the shared deconvolution (tested bit for bit)
    h = b.hed[..., 0]
    return h.reshape(h.shape[0], -1).mean(axis=1)


def _nuclei_per_tissue_area(b: _Batch) -> np.ndarray:
    counts = np.array([len(a) for a in b.nucleus_areas], np.float64)
    return _per_tissue(counts, b.tissue_pixels) * PER_TISSUE_PIXELS


def _nucleus_area_cv(b: _Batch) -> np.ndarray:
    return np.array([a.std() / a.mean() if len(a) >= 2 else 0.0 for a in b.nucleus_areas], np.float64)


def _mean_nucleus_area(b: _Batch) -> np.ndarray:
    return np.array([a.mean() if len(a) else 0.0 for a in b.nucleus_areas], np.float64)


def _eosin_fraction(b: _Batch) -> np.ndarray:
    stroma = b.tissue & ~b.nuclear & (b.hed[..., 1] >= b.params.eosin_threshold)
    n = len(stroma)
    return _per_tissue(stroma.reshape(n, -1).sum(axis=1).astype(np.float64), b.tissue_pixels)


@dataclass(frozen=True)
class Measurement:
    """A named measurement; call it as ``m(images, params)`` for float64 (N,) values."""

    name: str
    description: str
    reduce: Callable[[_Batch], np.ndarray]

    def __call__(self, images: np.ndarray, params: MeasureParams, batch: int = 256) -> np.ndarray:
        return measure(images, [self.name], params, batch=batch)[self.name]


_REDUCERS = {
    "hematoxylin_density": _hematoxylin_density,
    "nuclei_per_tissue_area": _nuclei_per_tissue_area,
    "nucleus_area_cv": _nucleus_area_cv,
    "mean_nucleus_area": _mean_nucleus_area,
    "eosin_fraction": _eosin_fraction,
}
#: name -> :class:`Measurement`, in the order of :data:`MEASURES`
REGISTRY: dict[str, Measurement] = {name: Measurement(name, desc, _REDUCERS[name]) for name, desc in MEASURES}


def measure_names() -> list[str]:
    return [name for name, _ in MEASURES]


def check_names(names: str | Iterable[str]) -> list[str]:
    """The requested names, de-duplicated in order; PipelineError listing the known ones for any unknown."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        known = "; ".join(f"{n}: {d}" for n, d in MEASURES)
        raise PipelineError(f"unknown attribute measurement(s) {unknown}; known measurements are {known}")
    return list(dict.fromkeys(names))


def measure(images: np.ndarray, names: str | Iterable[str], params: MeasureParams,
            batch: int = 256, desc: str = "measuring attributes") -> dict[str, np.ndarray]:
    """All requested measurements of uint8 (N,H,W,3) images in one pass: name -> float64 (N,).

    Images whose size differs from ``params.size`` are resized to it first (per batch). Colour
    deconvolution runs once per batch and segmentation once per image, whatever the names.
    """
    names = check_names(names)
    images = _check_images(images)
    out = {n: np.empty(len(images), np.float64) for n in names}
    if not names or len(images) == 0:
        return out
    batch = max(1, int(batch))
    with progress(total=len(images), desc=desc, unit="img") as bar:
        for s in range(0, len(images), batch):
            b = _Batch(_to_size(images[s:s + batch], params.size), params)
            for n in names:
                out[n][s:s + batch] = REGISTRY[n].reduce(b)
            bar.update(len(b.images))
    return out
