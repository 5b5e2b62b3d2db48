"""Attribute sweeps (AttributeGAN Fig. 2) and image-row figures of attribute levels.

A sweep steps one attribute through its levels while the latent z is fixed per column and the other
attributes stay at one frequent combination; under each level, a row of real training images with
that level (the other attributes free) shows what the level looks like in the data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .report_figures import _new_figure, _save_figure
from .sampling import to_uint8, truncated_normal


def most_frequent_combination(rows: np.ndarray) -> np.ndarray:
    """The attribute combination that occurs most often among ``rows`` (N, A) (ties: the smallest)."""
    values, counts = np.unique(np.asarray(rows, np.int64), axis=0, return_counts=True)
    return values[int(np.argmax(counts))]


@torch.no_grad()
def sweep_images(generator, base: np.ndarray, attribute: int, n_levels: int, n_columns: int, seed: int = 0,
                 device="cpu") -> np.ndarray:
    """(n_levels, n_columns, H, W, 3) uint8: one fixed z per column, ``attribute`` at each level, the
    other attributes at ``base``."""
    z = truncated_normal(n_columns, generator.latent_dim, -1.0, torch.Generator().manual_seed(int(seed)))
    rows = []
    generator.eval().to(device)
    for level in range(n_levels):
        labels = np.repeat(np.asarray(base, np.int64)[None, :], n_columns, axis=0)
        labels[:, attribute] = level
        rows.append(to_uint8(generator(z.to(device), torch.as_tensor(labels, device=device))))
    return np.stack(rows)


def real_rows(images: np.ndarray, levels: np.ndarray, attribute: int, n_levels: int, n_columns: int,
              seed: int = 0) -> list[np.ndarray]:
    """Per level, up to ``n_columns`` real images with that level of ``attribute`` (seeded choice)."""
    rng = np.random.default_rng(seed)
    out = []
    for level in range(n_levels):
        idx = np.flatnonzero(np.asarray(levels)[:, attribute] == level)
        pick = np.sort(rng.choice(idx, min(n_columns, len(idx)), replace=False)) if len(idx) else idx
        out.append(images[pick])
    return out


def plot_image_rows(rows: Sequence[np.ndarray], labels: Sequence[str], out_png: str | Path, title: str | None = None,
                    pad: int = 2, size: int | None = None) -> Path:
    """A mosaic with one labelled row per entry of ``rows`` (each (k, H, W, 3) uint8; k may be 0)."""
    from .io import resize_images

    size = size or max(64, max((r.shape[1] for r in rows if len(r)), default=64))  # small images shown at >= 64 px
    rows = [resize_images(r, size) if len(r) and r.shape[1] != size else r for r in rows]
    n_cols = max((len(r) for r in rows), default=1) or 1
    mosaic_h, mosaic_w = len(rows) * (size + pad) + pad, n_cols * (size + pad) + pad
    mosaic = np.full((mosaic_h, mosaic_w, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            mosaic[top:top + size, left:left + size] = image
    dpi, label_w = 100, max(90, 7 * max(len(t) for t in labels) + 20)
    title_h, margin = (30 if title else 6), 6
    width_px = max(label_w + mosaic_w + margin, (7 * len(title) + 40) if title else 0)
    height_px = title_h + mosaic_h + margin
    fig = _new_figure(width_px / dpi, height_px / dpi, dpi)
    ax = fig.add_axes([label_w / width_px, margin / height_px, mosaic_w / width_px, mosaic_h / height_px])
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, text in enumerate(labels):
        centre = margin + mosaic_h - (pad + r * (size + pad) + size / 2)
        fig.text((label_w - 8) / width_px, centre / height_px, text, ha="right", va="center", fontsize=8)
        if len(rows[r]) == 0:
            fig.text((label_w + mosaic_w / 2) / width_px, centre / height_px, "no images", ha="center", va="center",
                     fontsize=8, color="grey")
    if title:
        fig.text(0.5, 1 - (title_h / 2) / height_px, title, ha="center", va="center", fontsize=10)
    return _save_figure(fig, out_png, dpi)


def plot_attribute_sweep(generator, attribute: int, names: Sequence[str], level_names: Sequence[str],
                         base: np.ndarray, real_images: np.ndarray, real_levels: np.ndarray, out_png: str | Path,
                         title: str, n_columns: int = 6, seed: int = 0, device="cpu") -> Path:
    """AttributeGAN Fig. 2 for one attribute: per level a generated row (z fixed per column, the other
    attributes at ``base``) and a row of real training images with that level."""
    n_levels = len(level_names)
    fake = sweep_images(generator, base, attribute, n_levels, n_columns, seed, device)
    real = real_rows(real_images, real_levels, attribute, n_levels, n_columns, seed)
    rows, labels = [], []
    for level, name in enumerate(level_names):
        rows += [fake[level], real[level]]
        labels += [f"{names[attribute]} = {name}: generated", "real training images"]
    others = ", ".join(f"{n}={int(v)}" for a, (n, v) in enumerate(zip(names, base)) if a != attribute)
    return plot_image_rows(rows, labels, out_png, f"{title} (others fixed: {others})" if others else title)


@torch.no_grad()
def level_row(generator, attribute: int | None, base: np.ndarray, n_levels: int, per_level: int, seed: int = 0,
              device="cpu") -> np.ndarray:
    """(n_levels * per_level, H, W, 3): per level of one attribute, ``per_level`` images with the same latents
    at every level. ``attribute=None``: a single-attribute generator whose classes are the levels."""
    z = truncated_normal(per_level, generator.latent_dim, -1.0, torch.Generator().manual_seed(int(seed)))
    generator.eval().to(device)
    out = []
    for level in range(n_levels):
        if attribute is None:
            labels = np.full(per_level, level, np.int64)
        else:
            labels = np.repeat(np.asarray(base, np.int64)[None, :], per_level, axis=0)
            labels[:, attribute] = level
        out.append(to_uint8(generator(z.to(device), torch.as_tensor(labels, device=device))))
    return np.concatenate(out)


def plot_level_comparison(rows: Sequence[tuple[str, np.ndarray]], attribute: str, level_names: Sequence[str],
                          per_level: int, out_png: str | Path) -> Path:
    """AttributeGAN Fig. 3: one row per model (and the real images), columns = the levels of one attribute
    (``per_level`` images each, same latents across levels within a row)."""
    labels = [name for name, _ in rows]
    title = f"{attribute}: columns = levels " + ", ".join(level_names) + f" ({per_level} images each)"
    return plot_image_rows([images for _, images in rows], labels, out_png, title)
