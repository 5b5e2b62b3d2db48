"""Report figures, drawn on matplotlib's Agg canvas directly (no pyplot, no global backend state) and
written atomically: sample grids, ROC curves, AUC bars, generator training curves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import read_images
from .report_format import METRIC_TITLES, arch_label, format_mean_std, variant_label
from .utils import PipelineError, atomic_path, read_json

def _save_figure(fig: Figure, out_png: str | Path, dpi: float | None = None) -> Path:
    """Write a figure as PNG atomically and return the path."""
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return out_png


def _new_figure(width_in: float, height_in: float, dpi: float = 100) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- figures


def plot_sample_grid(
    h5_path: str | Path,
    out_png: str | Path,
    per_class: int = 8,
    class_names: Sequence[str] = ("class 0", "class 1"),
    title: str | None = None,
    pad: int = 2,
) -> Path:
    """Grid of the first `per_class` images of each class (rows = classes) at native resolution.

    One image pixel is one PNG pixel (no resampling). Each row is labelled with its class name and
    the number of images of that class in the file; classes without images say so.
    """
    x, y = read_images(h5_path)
    per_class = max(1, int(per_class))
    extra = sorted(int(c) for c in np.unique(y) if not 0 <= c < len(class_names))
    classes = list(range(len(class_names))) + extra
    names = [class_names[c] if 0 <= c < len(class_names) else f"class {c}" for c in classes]
    h, w = (int(x.shape[1]), int(x.shape[2])) if x.ndim == 4 else (96, 96)

    mosaic_h = len(classes) * (h + pad) + pad
    mosaic_w = per_class * (w + pad) + pad
    mosaic = np.full((mosaic_h, mosaic_w, 3), 255, dtype=np.uint8)
    counts = []
    for r, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        counts.append(len(idx))
        for k, i in enumerate(idx[:per_class]):
            top, left = pad + r * (h + pad), pad + k * (w + pad)
            mosaic[top: top + h, left: left + w] = x[i]

    dpi = 100
    label_w = max(80, 7 * max(len(n) for n in names) + 20)
    title_h = 30 if title else 6
    bottom_h, right_w = 6, 6
    width_px = max(label_w + mosaic_w + right_w, 320 if title else 0)
    height_px = title_h + mosaic_h + bottom_h
    fig = _new_figure(width_px / dpi, height_px / dpi, dpi)
    ax = fig.add_axes([label_w / width_px, bottom_h / height_px, mosaic_w / width_px, mosaic_h / height_px])
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, (name, count) in enumerate(zip(names, counts)):
        centre_px = bottom_h + mosaic_h - (pad + r * (h + pad) + h / 2)
        fig.text((label_w - 8) / width_px, centre_px / height_px, f"{name}\n(n={count})",
                 ha="right", va="center", fontsize=9)
        if count == 0:
            fig.text((label_w + mosaic_w / 2) / width_px, centre_px / height_px, "no images of this class",
                     ha="center", va="center", fontsize=9, color="grey")
    if title:
        fig.text(0.5, 1 - (title_h / 2) / height_px, title, ha="center", va="center", fontsize=10)
    return _save_figure(fig, out_png, dpi)


def _read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) from a downstream ``predictions.csv``: the positive-class probability (N,) for
    a binary task (``prob_pos``), the (N, K) class probabilities ``prob_0..prob_{K-1}`` for K > 2."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: predictions file not found (did the downstream rule run?)")
    df = pd.read_csv(path)
    classes = sorted(int(c[len("prob_"):]) for c in df.columns if c.startswith("prob_") and c[len("prob_"):].isdigit())
    if "label" not in df.columns or ("prob_pos" not in df.columns and len(classes) < 2):
        raise PipelineError(f"{path}: expected columns index,label and prob_pos or prob_0..prob_K-1, found {list(df.columns)}")
    labels = df["label"].to_numpy(dtype=np.int64)
    if "prob_pos" in df.columns:
        return labels, df["prob_pos"].to_numpy(dtype=float)
    return labels, df[[f"prob_{k}" for k in classes]].to_numpy(dtype=float)


def _roc_on_grid(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The ROC curve's TPR at the FPRs of ``grid`` and the AUC; None when the labels hold one class.

    Binary scores (N,): the ROC of the positive class. Class probabilities (N, K): the macro-average
    of the one-vs-rest curves of the classes present, with the macro one-vs-rest AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(np.unique(labels)) < 2:
        return None
    pairs = [(labels, scores)] if scores.ndim == 1 else \
        [((labels == k).astype(int), scores[:, k]) for k in range(scores.shape[1]) if 0 < np.sum(labels == k) < len(labels)]
    curves, aucs = [], []
    for y, p in pairs:
        fpr, tpr, _ = roc_curve(y, p)
        curve = np.interp(grid, fpr, tpr)
        curve[0] = 0.0
        curves.append(curve)
        aucs.append(float(roc_auc_score(y, p)))
    return np.mean(curves, axis=0), float(np.mean(aucs))


def plot_roc_curves(
    prediction_files_by_variant: Mapping[str, Mapping[str, Sequence[str | Path]]],
    out_png: str | Path,
    title: str | None = None,
    generator_labels: Mapping[str, str] | None = None,
    trainset_labels: Mapping[str, str] | None = None,
) -> Path:
    """ROC curves on the real test split, one panel per architecture.

    `prediction_files_by_variant` maps arch -> {variant: [predictions.csv, one per seed]}. Each
    seed is drawn as a thin line, the vertical average over seeds as a thick line; the legend gives
    the AUC as mean ± sample std over seeds. Variants keep one colour across panels. With more than
    two classes each curve is the macro-average of the one-vs-rest curves.
    """

    archs = list(prediction_files_by_variant)
    n_panels = max(1, len(archs))
    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = _new_figure(4.8 * ncols, 4.6 * nrows + (0.5 if title else 0.0), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    variants = list(dict.fromkeys(v for arch in archs for v in prediction_files_by_variant[arch]))
    cmap = matplotlib.colormaps["tab10"]
    colours = {v: cmap(i % 10) for i, v in enumerate(variants)}
    grid = np.linspace(0.0, 1.0, 201)

    if not archs:
        axes[0, 0].text(0.5, 0.5, "no predictions", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, arch in zip(axes.flat, archs):
        for variant, files in prediction_files_by_variant[arch].items():
            colour = colours[variant]
            curves, aucs = [], []
            for path in files:
                roc = _roc_on_grid(*_read_predictions(path), grid)
                if roc is None:
                    continue
                curve, auc = roc
                aucs.append(auc)
                ax.plot(grid, curve, color=colour, lw=0.6, alpha=0.3)
                curves.append(curve)
            short = variant_label(variant, generator_labels, trainset_labels)
            if curves:
                mean_curve = np.mean(curves, axis=0)
                mean_curve[-1] = 1.0
                std = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan")
                auc_text = format_mean_std(float(np.mean(aucs)), std, 3)
                ax.plot(grid, mean_curve, color=colour, lw=1.8, label=f"{short}: AUC {auc_text} (n={len(aucs)})")
            else:
                ax.plot([], [], color=colour, lw=1.8, label=f"{short}: AUC n/a (test labels hold one class)")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_title(arch_label(arch, generator_labels), fontsize=11)
        ax.set_xlabel("False positive rate (1 − specificity)", fontsize=9)
        ax.set_ylabel("True positive rate (sensitivity)", fontsize=9)
        ax.legend(loc="lower right", fontsize=7, frameon=True)
        ax.grid(alpha=0.25)
    for ax in list(axes.flat)[max(1, len(archs)):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save_figure(fig, out_png)


# Loss columns of a generator's history.csv drawn in the training-curve figure (others are weights, σ, parts).
TRAINING_CURVES = ("d_loss", "g_loss", "d_cls_real", "d_cls_fake", "g_cls", "loss", "recon", "kl")


def kept_step(history: pd.DataFrame) -> tuple[int, float] | None:
    """(step, validation FID) of the lowest ``fid_valid`` in a generator's history (the earliest on
    ties, as training keeps it), or None without model selection."""
    if "fid_valid" not in history:
        return None
    fid = history[["step", "fid_valid"]].dropna()
    if fid.empty:
        return None
    best = fid.loc[fid["fid_valid"].idxmin()]
    return int(best["step"]), float(best["fid_valid"])


def plot_training_curves(histories: Mapping[str, str | Path], out_png: str | Path, title: str | None = None) -> Path:
    """One panel per generator: its losses over training steps (``history.csv``) and, where the
    generator had model selection, the validation FID on a second axis with the kept step marked."""
    frames = {}
    for gen, path in histories.items():
        path = Path(path)
        if not path.exists():
            raise PipelineError(f"{path}: training history not found (did train_generator run for {gen}?)")
        frames[gen] = pd.read_csv(path)
    n = max(1, len(frames))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(5.0 * ncols, 3.6 * nrows + (0.5 if title else 0.0), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (gen, df) in zip(axes.flat, frames.items()):
        if df.empty or "step" not in df:
            ax.text(0.5, 0.5, "no history rows", ha="center", va="center")
            ax.set_title(gen, fontsize=10)
            continue
        for col in (c for c in TRAINING_CURVES if c in df):
            ax.plot(df["step"], df[col], lw=1.2, label=col)
        ax.set_xlabel("generator step", fontsize=9)
        ax.set_ylabel("loss", fontsize=9)
        ax.grid(alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        kept = kept_step(df)
        heading = gen
        if kept is not None:
            fid = df[["step", "fid_valid"]].dropna()
            twin = ax.twinx()
            twin.plot(fid["step"], fid["fid_valid"], color="black", lw=1.6, marker="o", ms=3, label="validation FID")
            twin.axvline(kept[0], color="black", ls=":", lw=1)
            twin.set_ylabel("validation FID", fontsize=9)
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
            heading += f" (kept step {kept[0]}, FID {kept[1]:.1f})"
        ax.set_title(heading, fontsize=10)
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")
    for ax in list(axes.flat)[len(frames):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save_figure(fig, out_png)


def plot_metric_bars(summary: pd.DataFrame, out_png: str | Path, metric: str = "auc", title: str | None = None) -> Path:
    """Horizontal bars of `metric` mean ± sample std per summary row, grouped by architecture.

    Rows keep the summary's order; a gap separates architecture blocks and each variant keeps one
    colour. The axis starts at 0.5 (chance level) when every bar lies above it.
    """
    if summary.empty:
        fig = _new_figure(6, 2)
        fig.text(0.5, 0.5, "no downstream results", ha="center", va="center")
        return _save_figure(fig, out_png)
    means = summary[f"{metric}_mean"].astype(float).to_numpy()
    stds = summary[f"{metric}_std"].astype(float).to_numpy()
    positions, pos, previous_arch = [], 0.0, None
    for arch in summary["arch"]:
        if previous_arch is not None and arch != previous_arch:
            pos += 0.7
        positions.append(pos)
        pos += 1.0
        previous_arch = arch
    positions = np.asarray(positions)
    variants = list(dict.fromkeys(summary["variant"]))
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(variants.index(v) % 10) for v in summary["variant"]]

    fig = _new_figure(8.0, max(2.5, 0.34 * (pos + 1) + 1.3), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(positions, np.nan_to_num(means), xerr=np.nan_to_num(stds), color=colours,
            error_kw={"capsize": 3, "elinewidth": 1}, height=0.8)
    lows = np.where(np.isfinite(stds), means - stds, means)
    left = 0.5 if np.all(lows[np.isfinite(lows)] >= 0.5) else 0.0
    for p, m, s in zip(positions, means, stds):
        if math.isfinite(m):
            ax.text(m + (s if math.isfinite(s) else 0.0) + 0.005, p, f"{m:.3f}", va="center", fontsize=8)
        else:
            ax.text(left + 0.005, p, "n/a", va="center", fontsize=8)
    ax.set_yticks(positions)
    ax.set_yticklabels(summary["row"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left, 1.08)
    ax.set_xticks(np.round(np.arange(left, 1.0001, 0.1), 1))
    ax.set_xlabel(f"{METRIC_TITLES.get(metric, metric)} on the real test split (mean ± sample std over seeds)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return _save_figure(fig, out_png)


# --------------------------------------------------------------------------- report


def group_prediction_files(files) -> dict[str, dict[str, list[Path]]]:
    """arch -> {variant: [predictions.csv, ...]} from a nested mapping or a flat list of paths.

    For a flat list, arch and variant come from the ``metrics.json`` beside each file, or else
    from the path layout ``.../{arch}/{variant}/seed{seed}/predictions.csv``.
    """
    if isinstance(files, Mapping):
        return {arch: {v: [Path(p) for p in paths] for v, paths in by_variant.items()}
                for arch, by_variant in files.items()}
    grouped: dict[str, dict[str, list[Path]]] = {}
    for path in files:
        path = Path(path)
        meta = path.parent / "metrics.json"
        if meta.exists():
            rec = read_json(meta)
            arch, variant = rec["arch"], rec["variant"]
        elif len(path.parents) >= 3:
            arch, variant = path.parents[2].name, path.parents[1].name
        else:
            raise PipelineError(f"{path}: cannot tell arch and variant; expected .../{{arch}}/{{variant}}/seed{{n}}/predictions.csv")
        grouped.setdefault(arch, {}).setdefault(variant, []).append(path)
    return grouped


def _order_predictions(grouped: dict[str, dict[str, list[Path]]], summary: pd.DataFrame) -> dict[str, dict[str, list[Path]]]:
    """Reorder arch -> variant -> files to follow the summary's row order (extras at the end)."""
    ordered: dict[str, dict[str, list[Path]]] = {}
    for arch, variant in zip(summary["arch"], summary["variant"]):
        if variant in grouped.get(arch, {}):
            ordered.setdefault(arch, {})[variant] = sorted(grouped[arch][variant], key=str)
    for arch, by_variant in grouped.items():
        for variant, paths in by_variant.items():
            ordered.setdefault(arch, {}).setdefault(variant, sorted(paths, key=str))
    return ordered
