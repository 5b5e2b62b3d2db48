"""Report tables and figures for one pipeline run.

Everything here is a pure function of files the other rules write:

* downstream ``metrics.json`` files (one per architecture, training-set variant and seed) are
  collected into a per-seed table and summarised as mean ± sample standard deviation over seeds,
  with rows named like Table 1 of the HViTGAN paper ("ResNet34", "ResNet34+Aug(cgan)", ...);
* ``generation.json`` files (one per generator) become the generation-quality table;
* sample files, ``predictions.csv`` files and the summary become figures;
* :func:`write_report` writes all of it, plus a ``report.md`` that ties it together.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend state).
All files are written atomically.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .config import head_generator
from .io import read_images
from .per_class import per_class_runs, summarize_per_class
from .trainsets import KINDS, parse_trainset, parse_variant
from .utils import PipelineError, atomic_path, get_logger, read_json, write_csv, write_text

METRICS: tuple[str, ...] = ("accuracy", "auc", "sensitivity", "specificity")
METRIC_TITLES = {"accuracy": "Accuracy", "auc": "AUC", "sensitivity": "Sensitivity", "specificity": "Specificity"}
REQUIRED_METRIC_KEYS: tuple[str, ...] = ("arch", "variant", "seed", *METRICS)
MISSING_STD = "–"

ARCH_NAMES = {"resnet34": "ResNet34", "resnet50_cbam": "ResNet50-CBAM", "densenet169": "DenseNet169"}
_ARCH_TOKENS = {
    "resnet": "ResNet",
    "resnext": "ResNeXt",
    "densenet": "DenseNet",
    "efficientnet": "EfficientNet",
    "convnext": "ConvNeXt",
    "cbam": "CBAM",
    "vit": "ViT",
    "hvitgan": "HViTGAN",
    "vgg": "VGG",
    "cnn": "CNN",
    "mlp": "MLP",
    "gan": "GAN",
}

_DOWNSTREAM_FRONT = ["arch", "variant", "kind", "generator", "seed", *METRICS,
                     "best_epoch", "valid_auc", "n_real", "n_synthetic"]


# --------------------------------------------------------------------------- naming


def pretty_arch(arch: str) -> str:
    """Display name of an architecture key: ``resnet50_cbam`` -> ``ResNet50-CBAM``.

    Known keys use a fixed spelling; other keys are split on ``_``/``-`` and each part is
    spelled with a small vocabulary of network names (``hvitgan_head`` -> ``HViTGAN-Head``).
    """
    if arch in ARCH_NAMES:
        return ARCH_NAMES[arch]
    parts = []
    for token in re.split(r"[_\-\s]+", str(arch)):
        if not token:
            continue
        letters, digits, rest = re.fullmatch(r"([A-Za-z]*)(\d*)(.*)", token).groups()
        name = _ARCH_TOKENS.get(letters.lower(), letters[:1].upper() + letters[1:])
        parts.append(name + digits + rest)
    return "-".join(parts) or str(arch)


def arch_label(arch: str, generator_labels: Mapping[str, str] | None = None) -> str:
    """Display name of a downstream architecture; ``<gen>_head`` -> ``<generator label> Cls Head``."""
    gen = head_generator(str(arch))
    if gen:
        return f"{(generator_labels or {}).get(gen, gen)} Cls Head"
    return pretty_arch(arch)


def trainset_label(variant: str, generator_labels: Mapping[str, str] | None = None,
                   trainset_labels: Mapping[str, str] | None = None) -> str:
    """What goes inside ``+Aug(...)``: ``report.trainset_labels[variant]`` when set (``CP``, ``CP+SA``),
    else the generator's label with ``, truncated`` / ``, SA`` for truncated / selected images."""
    if trainset_labels and variant in trainset_labels:
        return str(trainset_labels[variant])
    ts = parse_trainset(variant)
    name = (generator_labels or {}).get(ts.generator, ts.generator)
    return name + {"normal": "", "truncated": ", truncated", "selected": ", SA"}[ts.source]


def variant_label(variant: str, generator_labels: Mapping[str, str] | None = None,
                  trainset_labels: Mapping[str, str] | None = None) -> str:
    """Short label of a training set, used in legends: ``real``, ``+Aug(CP)``, ``cgan only``."""
    kind, _ = parse_variant(variant)
    if kind == "real":
        return "real"
    text = trainset_label(variant, generator_labels, trainset_labels)
    return f"{text} only" if kind == "synthetic" else f"+Aug({text})"


def row_label(arch: str, variant: str, generator_labels: Mapping[str, str] | None = None,
              trainset_labels: Mapping[str, str] | None = None) -> str:
    """Table row name shaped like the HViTGAN paper's Table 1.

    ``ResNet34``, ``ResNet34+Aug(MedViTGAN)``, ``ResNet34+Aug(CP+SA)`` (with
    ``report.trainset_labels``), ``ResNet34+Aug(cgan, SA)``, ``HViTGAN Cls Head+Aug(CP)``,
    ``ResNet34 trained on cgan only``.
    """
    name = arch_label(arch, generator_labels)
    kind, _ = parse_variant(variant)
    if kind == "real":
        return name
    text = trainset_label(variant, generator_labels, trainset_labels)
    return f"{name} trained on {text} only" if kind == "synthetic" else f"{name}+Aug({text})"


# --------------------------------------------------------------------------- small helpers


def _clean(value):
    """None for missing values (None, NaN, pandas NA), the value otherwise."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _float(value) -> float:
    """The value as a float; NaN when missing."""
    value = _clean(value)
    return float("nan") if value is None else float(value)


def _ordered(preferred: Iterable | None, present: Iterable) -> list:
    """`preferred` items that are present, in that order, then the remaining present items sorted."""
    present = [p for p in dict.fromkeys(present) if _clean(p) is not None]
    head = [p for p in dict.fromkeys(preferred or []) if p in present]
    return head + sorted((p for p in present if p not in head), key=str)


def format_mean_std(mean: float, std: float, digits: int = 3, pm: str = " ± ", missing_std: str = MISSING_STD) -> str:
    """``0.881 ± 0.079``; a missing std (one seed) is shown as ``–``, a missing mean as ``n/a``."""
    mean, std = _float(mean), _float(std)
    if not math.isfinite(mean):
        return "n/a"
    std_text = f"{std:.{digits}f}" if math.isfinite(std) else missing_std
    return f"{mean:.{digits}f}{pm}{std_text}"


def _latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    replacements = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    }
    return "".join(replacements.get(ch, ch) for ch in str(text))


def _markdown_grid(headers: Sequence[str], rows: Sequence[Sequence], align: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(value) -> str:
        return str(value).replace("|", r"\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


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


# --------------------------------------------------------------------------- downstream tables


def _read_record(path: Path, what: str, rule: str) -> dict:
    """A JSON record another rule wrote, with a clear error when it is missing or unreadable."""
    if not path.exists():
        raise PipelineError(f"{path}: {what} file not found (did {rule} run?)")
    try:
        return read_json(path)
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON ({err}); delete it and re-run {rule}") from err


def collect_downstream(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per downstream ``metrics.json``, sorted by arch, variant and seed.

    Columns: arch, variant, kind, generator, seed, accuracy, auc, sensitivity, specificity,
    best_epoch, valid_auc, n_real, n_synthetic, any further keys, and ``metrics_file``.
    ``kind``/``generator`` are taken from the variant name when a file lacks them.
    """
    records = []
    for path in metrics_files:
        path = Path(path)
        rec = _read_record(path, "downstream metrics", "the downstream rule")
        missing = [k for k in REQUIRED_METRIC_KEYS if k not in rec]
        if missing:
            raise PipelineError(f"{path}: missing keys {missing}; delete it and re-run the downstream rule")
        rec["kind"], rec["generator"] = parse_variant(rec["variant"])
        rec["seed"] = int(rec["seed"])
        for metric in METRICS:
            rec[metric] = _float(rec[metric])
        rec["metrics_file"] = str(path)
        records.append(rec)
    if not records:
        raise PipelineError("no downstream metrics files were given; check downstream.archs/trainsets/seeds in the config")
    df = pd.DataFrame.from_records(records)
    dupes = df[df.duplicated(["arch", "variant", "seed"], keep=False)]
    if len(dupes):
        files = ", ".join(dupes["metrics_file"])
        raise PipelineError(f"the same (arch, variant, seed) appears in several metrics files: {files}")
    front = [c for c in _DOWNSTREAM_FRONT if c in df.columns]
    rest = [c for c in df.columns if c not in front and c != "metrics_file"]
    df = df[front + rest + ["metrics_file"]]
    return df.sort_values(["arch", "variant", "seed"], kind="stable").reset_index(drop=True)


def summarize_downstream(
    df: pd.DataFrame,
    arch_order: Sequence[str] | None = None,
    trainset_order: Sequence[str] | None = None,
    digits: int = 3,
    generator_labels: Mapping[str, str] | None = None,
    trainset_labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean ± sample std (ddof=1) over seeds for each (arch, training set).

    Rows are ordered per architecture (``arch_order`` first, others alphabetically), and within one
    architecture by ``trainset_order`` (the config's ``downstream.trainsets``), other training sets
    after them by kind (real, augmented, truncated, selected, synthetic) and name. With a single
    seed the std is NaN and the formatted cell shows ``–``.

    Columns: row, arch, arch_label, variant, kind, generator, n_seeds, seeds, one formatted
    ``"0.881 ± 0.079"`` column per metric, ``<metric>_mean``/``<metric>_std``, and, when the
    inputs have them, valid_auc_mean, best_epoch_mean, n_real, n_synthetic.
    """
    archs = _ordered(arch_order, df["arch"])
    trainsets = list(trainset_order or [])
    records = []
    for (arch, variant), group in df.groupby(["arch", "variant"], sort=False):
        kind, generator = parse_variant(variant)
        rec = {
            "row": row_label(arch, variant, generator_labels, trainset_labels),
            "arch": arch,
            "arch_label": arch_label(arch, generator_labels),
            "variant": variant,
            "kind": kind,
            "generator": generator,
            "n_seeds": int(len(group)),
            "seeds": ",".join(str(s) for s in sorted(group["seed"].astype(int))),
        }
        stats = {}
        for metric in METRICS:
            values = group[metric].astype(float).to_numpy()
            values = values[np.isfinite(values)]
            mean = float(values.mean()) if len(values) else float("nan")
            std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            rec[metric] = format_mean_std(mean, std, digits)
            stats[f"{metric}_mean"], stats[f"{metric}_std"] = mean, std
        rec.update(stats)
        for extra in ("valid_auc", "best_epoch"):
            if extra in group:
                rec[f"{extra}_mean"] = float(pd.to_numeric(group[extra], errors="coerce").mean())
        for count in ("n_real", "n_synthetic"):
            if count in group:
                value = pd.to_numeric(group[count], errors="coerce").mean()
                rec[count] = int(round(value)) if math.isfinite(value) else None
        if variant in trainsets:
            rec["_key"] = (archs.index(arch), 0, trainsets.index(variant), "")
        else:
            rec["_key"] = (archs.index(arch), 1, KINDS.index(kind), str(variant))
        records.append(rec)
    summary = pd.DataFrame.from_records(records)
    summary = summary.sort_values("_key", kind="stable").drop(columns="_key").reset_index(drop=True)
    return summary


def best_mask(summary: pd.DataFrame, metric: str, digits: int = 3) -> pd.Series:
    """True where a row has the best (highest) mean of `metric` within its architecture block.

    Means are compared at the displayed precision, so displayed ties are all marked. Blocks with
    fewer than two finite values mark nothing (there is nothing to compare).
    """
    means = summary[f"{metric}_mean"].astype(float).round(digits)
    mask = pd.Series(False, index=summary.index)
    for _, idx in summary.groupby("arch", sort=False).groups.items():
        block = means.loc[idx]
        finite = block[np.isfinite(block)]
        if len(finite) >= 2:
            mask.loc[finite.index] = finite == finite.max()
    return mask


def _training_images(row) -> str:
    """``"26214 real + 26214 synthetic"`` from a summary row, empty when the counts are unknown."""
    parts = []
    n_real = _clean(row.get("n_real"))
    n_syn = _clean(row.get("n_synthetic"))
    if n_real:
        parts.append(f"{int(n_real)} real")
    if n_syn:
        parts.append(f"{int(n_syn)} synthetic")
    return " + ".join(parts)


def to_markdown_table(summary: pd.DataFrame, digits: int = 3) -> str:
    """Markdown version of the downstream summary: one row per (arch, variant), best per block in bold.

    Columns: Model, Accuracy, AUC, Sensitivity, Specificity (``mean ± std`` over seeds), Seeds and,
    when the summary has the counts, Training images.
    """
    with_counts = "n_real" in summary.columns or "n_synthetic" in summary.columns
    headers = ["Model", *(METRIC_TITLES[m] for m in METRICS), "Seeds"] + (["Training images"] if with_counts else [])
    align = ["---", *([":---:"] * len(METRICS)), "---:"] + (["---:"] if with_counts else [])
    masks = {m: best_mask(summary, m, digits) for m in METRICS}
    rows = []
    for i, row in summary.iterrows():
        cells = [row["row"]]
        for metric in METRICS:
            text = format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], digits)
            cells.append(f"**{text}**" if masks[metric].loc[i] else text)
        cells.append(int(row["n_seeds"]))
        if with_counts:
            cells.append(_training_images(row))
        rows.append(cells)
    return _markdown_grid(headers, rows, align)


def to_latex_table(
    summary: pd.DataFrame,
    caption: str = "Downstream classification on the real test split (mean $\\pm$ sample std over seeds).",
    label: str = "tab:downstream",
    digits: int = 3,
) -> str:
    """LaTeX (booktabs) version of the downstream summary, shaped like the HViTGAN Table 1.

    Cells read ``0.881 $\\pm$ 0.079`` (``--`` for a missing std), the best mean per column within each
    architecture block is bold, and blocks are separated by ``\\midrule``. `caption` is LaTeX
    source and is inserted as given; row names are escaped.
    """
    masks = {m: best_mask(summary, m, digits) for m in METRICS}
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "c" * len(METRICS) + "}",
        r"\toprule",
        "Model & " + " & ".join(METRIC_TITLES[m] for m in METRICS) + r" \\",
        r"\midrule",
    ]
    previous_arch = None
    for i, row in summary.iterrows():
        if previous_arch is not None and row["arch"] != previous_arch:
            lines.append(r"\midrule")
        previous_arch = row["arch"]
        cells = [_latex_escape(row["row"])]
        for metric in METRICS:
            text = format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], digits, pm=r" $\pm$ ", missing_std="--")
            cells.append(rf"\textbf{{{text}}}" if masks[metric].loc[i] else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- generation table


def _na_with_reason(status: str | None) -> str:
    """Cell text for an unavailable Inception metric, carrying the reason when one is known."""
    status = (status or "").strip()
    if not status or status == "ok":
        return "n/a"
    return status if status.startswith("n/a") else f"n/a: {status}"


def collect_generation(files: Iterable[str | Path], generator_order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per generator's ``generation.json``.

    Display columns: generator, family, FID, KID (``mean ± std``), feature_FID, feature_KID,
    n_generated, n_selected, selection_rate (fraction), checkpoint (the training step the
    checkpoint holds, "300 of 300 (best valid FID 409.9)" with model selection), selector
    (head | baseline), inception_status. Where the Inception
    metrics are unavailable, FID and KID read ``n/a: <reason>``. Raw numbers (fid, kid_mean, kid_std,
    feature_fid, feature_kid_mean, feature_kid_std) and the settings (lambda, tau, real_split,
    feature_space) follow. Rows follow `generator_order`, then file order.
    """
    records = []
    for path in files:
        path = Path(path)
        rec = _read_record(path, "generation metrics", "the rule that writes it")
        if "generator" not in rec:
            raise PipelineError(f"{path}: missing key 'generator'; delete it and re-run the rule that writes it")
        fid, kid_mean, kid_std = _float(rec.get("fid")), _float(rec.get("kid_mean")), _float(rec.get("kid_std"))
        ffid = _float(rec.get("feature_fid"))
        fkid_mean, fkid_std = _float(rec.get("feature_kid_mean")), _float(rec.get("feature_kid_std"))
        status = rec.get("inception_status") or ("ok" if math.isfinite(fid) else "n/a")
        n_generated, n_selected = _clean(rec.get("n_generated")), _clean(rec.get("n_selected"))
        step, steps, best_fid = _clean(rec.get("step")), _clean(rec.get("steps")), _clean(rec.get("best_fid_valid"))
        checkpoint = "" if step is None else f"{int(step)}" + (f" of {int(steps)}" if steps is not None else "")
        if checkpoint and best_fid is not None:
            checkpoint += f" (best valid FID {best_fid:.1f})"
        rate = n_selected / n_generated if n_generated and n_selected is not None else float("nan")
        records.append({
            "generator": rec["generator"],
            "family": rec.get("family"),
            "FID": f"{fid:.2f}" if math.isfinite(fid) else _na_with_reason(status),
            "KID": format_mean_std(kid_mean, kid_std, 4) if math.isfinite(kid_mean) else _na_with_reason(status),
            "feature_FID": f"{ffid:.2f}" if math.isfinite(ffid) else "n/a",
            "feature_KID": format_mean_std(fkid_mean, fkid_std, 4) if math.isfinite(fkid_mean) else "n/a",
            "n_generated": n_generated,
            "n_selected": n_selected,
            "selection_rate": rate,
            "checkpoint": checkpoint,
            "selector": rec.get("selector") or "",
            "inception_status": status,
            "fid": fid,
            "kid_mean": kid_mean,
            "kid_std": kid_std,
            "feature_fid": ffid,
            "feature_kid_mean": fkid_mean,
            "feature_kid_std": fkid_std,
            **{f"head_{m}": _float((rec.get("head_test") or {}).get(m)) for m in METRICS},
            "lambda": _clean(rec.get("lambda")),
            "tau": _clean(rec.get("tau")),
            "real_split": rec.get("real_split"),
            "feature_space": rec.get("feature_space"),
        })
    columns = ["generator", "family", "FID", "KID", "feature_FID", "feature_KID", "n_generated", "n_selected",
               "selection_rate", "checkpoint", "selector", "inception_status", "fid", "kid_mean", "kid_std", "feature_fid",
               "feature_kid_mean", "feature_kid_std", *(f"head_{m}" for m in METRICS), "lambda", "tau", "real_split",
               "feature_space"]
    df = pd.DataFrame.from_records(records, columns=columns)
    if generator_order:
        rank = {g: i for i, g in enumerate(dict.fromkeys(generator_order))}
        df["_rank"] = [rank.get(g, len(rank)) for g in df["generator"]]
        df = df.sort_values("_rank", kind="stable").drop(columns="_rank")
    return df.reset_index(drop=True)


def generation_to_markdown(generation: pd.DataFrame) -> str:
    """Markdown version of the generation table (display columns only)."""
    if generation.empty:
        return "_No generators in this run._\n"
    headers = ["Generator", "Family", "FID ↓", "KID ↓", "Feature FID ↓", "Feature KID ↓",
               "Generated", "Selected", "Selection rate", "Selector", "Checkpoint step"]
    align = ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---:"]
    rows = []
    for _, row in generation.iterrows():
        rate = row["selection_rate"]
        rows.append([
            row["generator"],
            row["family"] if _clean(row["family"]) is not None else "",
            row["FID"],
            # the reason is already in the FID cell; do not repeat it
            "n/a" if row["KID"] == row["FID"] and str(row["KID"]).startswith("n/a") else row["KID"],
            row["feature_FID"],
            row["feature_KID"],
            "" if _clean(row["n_generated"]) is None else int(row["n_generated"]),
            "" if _clean(row["n_selected"]) is None else int(row["n_selected"]),
            f"{100 * rate:.1f}%" if math.isfinite(_float(rate)) else "n/a",
            row.get("selector") or "",
            row.get("checkpoint") or "",
        ])
    return _markdown_grid(headers, rows, align)


def heads_to_markdown(generation: pd.DataFrame, digits: int = 3) -> str:
    """Test metrics of the GANs' discriminator class heads as the GAN training left them (no
    fine-tuning); empty when no generator of the run has a class head."""
    cols = [f"head_{m}" for m in METRICS]
    if generation.empty or not all(c in generation for c in cols):
        return ""
    rows = [[row["generator"], *(f"{row[c]:.{digits}f}" if math.isfinite(_float(row[c])) else "n/a" for c in cols)]
            for _, row in generation.iterrows() if any(math.isfinite(_float(row[c])) for c in cols)]
    if not rows:
        return ""
    return _markdown_grid(["Generator", *(METRIC_TITLES[m] for m in METRICS)], rows, ["---", *([":---:"] * len(METRICS))])


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


def _context_list(context: Mapping, key: str) -> list:
    value = context.get(key) or []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _trainset_glossary(context: Mapping) -> list[str]:
    """One bullet per configured label (``report.trainset_labels``): what ``+Aug(CP)`` etc. stand for."""
    labels = dict(context.get("trainset_labels") or {})
    used = [t for t in _context_list(context, "trainsets") if t in labels]
    if not used:
        return []
    return ["- Labels of this run: " + "; ".join(f"`+Aug({labels[t]})` = training set `{t}`" for t in used) + "."]


def per_class_to_markdown(per_class: pd.DataFrame, digits: int = 3) -> str:
    """Per-class one-vs-rest sensitivity, specificity and AUC (mean ± std over seeds) as a Markdown table."""
    headers = ["Model", "Class", "Sensitivity", "Specificity", "AUC (one-vs-rest)", "Seeds"]
    rows = [[r["row"], f"{r['class']} = {r['class_name']}",
             *(format_mean_std(r[f"{m}_mean"], r[f"{m}_std"], digits) for m in ("sensitivity", "specificity", "auc")),
             int(r["n_seeds"])] for _, r in per_class.iterrows()]
    return _markdown_grid(headers, rows, ["---", "---", ":---:", ":---:", ":---:", "---:"])


def _report_markdown(context: Mapping, summary: pd.DataFrame, generation: pd.DataFrame,
                     sample_figures: Mapping[str, Mapping[str, str]], digits: int,
                     tsne: Mapping[str, str] | None = None, per_class_md: str | None = None) -> str:
    """Text of report.md; figure and table links are relative to the report's folder.

    `tsne` (optional): {"figure", "scores", "coordinates": relative links, "table": markdown, "intro": text}.
    """
    class_names = list(context.get("class_names") or ["class 0", "class 1"])
    positive = class_names[1] if len(class_names) > 1 else "class 1"
    negative = class_names[0] if class_names else "class 0"
    label_source = context.get("label_source", "data")
    label_note = (context.get("label_note") or "").strip()
    seeds = _context_list(context, "seeds")
    archs = _context_list(context, "architectures")
    title = context.get("config_name") or "pipeline run"

    out = [f"# Synthetic augmentation report: {title}", ""]

    out += ["## Dataset and labels", ""]
    if label_source == "derived":
        out += [
            "> **The class labels in this run are derived from the pixels, not ground truth.**",
            f"> {label_note or 'Labels were computed from the images themselves.'}",
            f"> Every number below measures how well the classifiers separate *{negative}* from "
            f"*{positive}* as defined by that rule; none of them is a diagnostic (e.g. tumour detection) result.",
            "",
        ]
    out += [
        f"- Dataset: {context.get('dataset', 'unknown')}",
        f"- Images: {context.get('n_train_subset', '?')} training (the limited-data subset), "
        f"{context.get('n_valid', '?')} validation, {context.get('n_test', '?')} test",
        "- Classes: " + ", ".join(f"{i} = {name}" for i, name in enumerate(class_names)),
        f"- Label source: {label_source}",
    ]
    if label_source != "derived" and label_note:
        out.append(f"- Note: {label_note}")
    out.append("")

    out += ["## Generation quality", ""]
    out.append(generation_to_markdown(generation))
    if not generation.empty:
        settings = []
        for name, fmt in (("lambda", "λ = {}"), ("tau", "τ = {}"), ("real_split", "real reference split: {}")):
            values = [v for v in dict.fromkeys(generation[name]) if _clean(v) is not None]
            if values:
                settings.append(fmt.format(", ".join(str(v) for v in values)))
        spaces = [v for v in dict.fromkeys(generation["feature_space"]) if _clean(v) is not None]
        if settings:
            out.append("Selection and reference: " + "; ".join(settings) + ".")
        if spaces:
            out.append(f"Feature FID/KID are computed in the feature space of the {'; '.join(spaces)}.")
        out.append("")
    out.append("Files: [generation.csv](tables/generation.csv), [generation.md](tables/generation.md)")
    out.append("")
    heads = heads_to_markdown(generation, digits)
    if heads:
        out += ["### Class heads as the GAN trained them", "",
                "The discriminator's classification head of each GAN that has one, applied to the real test split "
                "without fine-tuning (the `Cls Head` rows of the downstream table fine-tune it per seed):", "", heads]

    out += ["## Downstream classification", ""]
    out.append("Metrics on the real test split, mean ± sample standard deviation over seeds; "
               "the best mean per column within each architecture is in bold.")
    out.append("")
    out.append(to_markdown_table(summary, digits))
    out.append("Files: [downstream_summary.csv](tables/downstream_summary.csv), "
               "[downstream_summary.tex](tables/downstream_summary.tex), "
               "[downstream_summary.md](tables/downstream_summary.md), "
               "[per-seed results: downstream.csv](tables/downstream.csv)")
    out.append("")
    if per_class_md:
        out += ["### Per class (one-vs-rest)", "",
                f"With {len(class_names)} classes, Sensitivity and Specificity above are the unweighted means over "
                "the classes of each class's one-vs-rest recall and specificity, and AUC is the macro one-vs-rest "
                "AUC. Per class:", "", per_class_md,
                "Files: [downstream_per_class.csv](tables/downstream_per_class.csv), "
                "[downstream_per_class.md](tables/downstream_per_class.md)", ""]

    out += ["## Figures", ""]
    for gen, figs in sample_figures.items():
        out += [f"### Samples from {gen}", ""]
        if "generated" in figs:
            out += ["Generated images, plain normal latents (first per class):", "",
                    f"![{gen}: generated samples]({figs['generated']})", ""]
        if "selected" in figs:
            out += ["Images kept by selective augmentation (truncated latents, confidence ≥ λ):", "",
                    f"![{gen}: selected samples]({figs['selected']})", ""]
    out += [
        "### ROC curves",
        "",
        "Thin lines: one seed each; thick lines: the average over seeds (legend: AUC mean ± std, n seeds).",
        "",
        "![ROC curves on the real test split](figures/roc_curves.png)",
        "",
        "### AUC by training set",
        "",
        "![AUC mean ± std per model and training set](figures/auc_bars.png)",
        "",
    ]
    if context.get("has_training_curves"):
        out += ["### Generator training", "",
                "Losses per logged step; for generators with model selection also the FID against the validation "
                "split (right axis) and the step whose networks the checkpoint holds (dotted line).", "",
                "![Generator training curves](figures/generator_training.png)", ""]

    for section in context.get("extra_sections") or []:
        out += [section, ""]

    if tsne:
        out += ["## Loss scenarios (t-SNE)", "", tsne["intro"], "",
                f"![t-SNE of generated images per loss scenario]({tsne['figure']})", "", tsne["table"],
                f"Files: [tsne_scores.csv]({tsne['scores']}), [tsne_coordinates.csv]({tsne['coordinates']})", ""]

    out += [
        "## How to read the tables",
        "",
        "- Row names follow Table 1 of the HViTGAN paper: `ResNet34` is trained on the real training "
        "subset only; `ResNet34+Aug(G)` on the real subset plus generator G's images from plain normal "
        "latents (selective augmentation off); `+Aug(G, truncated)` with truncated latents (τ); "
        "`+Aug(G, SA)` with selective augmentation: truncated latents and only the images the selector "
        "classifies as their intended class with confidence ≥ λ; `ResNet34 trained on G only` on "
        "generated images alone (a check of how much class information the images carry). "
        "`G Cls Head` is the classification head of generator G's discriminator, fine-tuned as a "
        "classifier from its GAN-trained weights on the same training sets.",
        *_trainset_glossary(context),
        (f"- Every classifier is evaluated on the same real test split. Sensitivity is the recall of "
         f"class 1 ({positive}), specificity the recall of class 0 ({negative}); AUC uses the "
         f"predicted probability of {positive}." if len(class_names) <= 2 else
         f"- Every classifier is evaluated on the same real test split. With {len(class_names)} classes the "
         "predicted class is the most probable one; Sensitivity and Specificity are macro averages of the "
         "per-class one-vs-rest values and AUC is the macro one-vs-rest AUC (per-class table above)."),
        "- `0.881 ± 0.079` is the mean over seeds ± the sample standard deviation (ddof = 1). "
        f"`{MISSING_STD}` in place of the std means only one seed finished. The Seeds column gives the count.",
        "- Bold marks the best mean in a column within one architecture block (ties at the shown precision are all bold).",
        "- FID and KID (lower is better) compare generated images with real images of the reference split "
        "in Inception-v3 feature space; `n/a: …` says why they could not be computed. Feature FID/KID use the "
        "features of a classifier trained on real data instead, which is closer to what the downstream task sees.",
        "- Selection rate is the share of generated images kept by selective augmentation.",
        "",
    ]

    out += ["## Settings", ""]
    out.append(f"- Configuration: {context.get('config_name', 'unknown')}")
    if archs:
        gl = dict(context.get("generator_labels") or {})
        out.append("- Architectures: " + ", ".join(f"{arch_label(a, gl)} (`{a}`)" for a in archs))
    if seeds:
        out.append("- Seeds: " + ", ".join(str(s) for s in seeds))
    if not generation.empty:
        gens = [f"{g} ({f})" if _clean(f) is not None else str(g)
                for g, f in zip(generation["generator"], generation["family"])]
        out.append("- Generators: " + ", ".join(gens))
    for key in sorted(set(context) - {"label_source", "label_note", "class_names", "dataset", "n_train_subset",
                                      "n_valid", "n_test", "config_name", "architectures", "seeds", "generators",
                                      "generator_labels", "trainset_labels", "trainsets", "has_training_curves",
                                      "extra_sections"}):
        out.append(f"- {key}: {context[key]}")
    if seeds:
        short = summary[summary["n_seeds"] < len(seeds)]
        if len(short) and len(short) == len(summary) and short["n_seeds"].nunique() == 1:
            out += ["", f"Every row has {int(short['n_seeds'].iloc[0])} of the {len(seeds)} configured seeds."]
        elif len(short):
            out += ["", f"Rows with fewer than the {len(seeds)} configured seeds:"]
            for n, rows in short.groupby("n_seeds", sort=True)["row"]:
                out.append(f"- {int(n)} of {len(seeds)} seeds: " + ", ".join(rows))
    out.append("")
    return "\n".join(out)


def write_report(
    out_dir: str | Path,
    metrics_files: Iterable[str | Path],
    prediction_files,
    generation_files: Iterable[str | Path],
    sample_files: Mapping[str, Mapping[str, str | Path]],
    context: Mapping,
    per_class: int | None = None,
    digits: int = 3,
    tsne: Mapping[str, str | Path] | None = None,
    histories: Mapping[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Write every table, figure and ``report.md`` under `out_dir`; return {relative name: path}.

    `histories` (generator -> ``history.csv``) adds the generator training-curve figure.

    `prediction_files` is either arch -> {variant: [predictions.csv]} or a flat list of
    ``.../{arch}/{variant}/seed{n}/predictions.csv`` paths. `sample_files` maps generator ->
    {"generated": normal.h5, "selected": selected.h5}. `per_class` (images per class in sample grids)
    defaults to ``context["grid_per_class"]`` or 8. `tsne` (optional, rule ``tsne``) gives the files
    {"figure", "scores", "coordinates"} of the t-SNE panels; report.md then has a "Loss scenarios (t-SNE)" section.
    """
    log = get_logger()
    out_dir = Path(out_dir)
    class_names = list(context.get("class_names") or ["class 0", "class 1"])
    per_class = int(per_class or context.get("grid_per_class") or 8)
    written: dict[str, Path] = {}

    def record(rel: str) -> Path:
        path = out_dir / rel
        written[rel] = path
        return path

    configured_order = _context_list(context, "generators") or list(sample_files)
    generation = collect_generation(generation_files, configured_order)
    names = {"generator_labels": dict(context.get("generator_labels") or {}),
             "trainset_labels": dict(context.get("trainset_labels") or {})}

    downstream = collect_downstream(metrics_files)
    summary = summarize_downstream(downstream, _context_list(context, "architectures"),
                                   _context_list(context, "trainsets"), digits, **names)
    log.info("report: %d downstream runs in %d rows, %d generators", len(downstream), len(summary), len(generation))

    write_csv(downstream, record("tables/downstream.csv"))
    write_csv(summary, record("tables/downstream_summary.csv"))
    write_text(to_markdown_table(summary, digits), record("tables/downstream_summary.md"))
    caption = ("Downstream classification on the real test split of "
               f"{_latex_escape(context.get('dataset', 'the dataset'))} "
               r"(mean $\pm$ sample standard deviation over seeds; best per architecture in bold).")
    if context.get("label_source") == "derived":
        caption += " Labels are derived from pixels, not ground truth."
    write_text(to_latex_table(summary, caption=caption, label="tab:downstream", digits=digits),
               record("tables/downstream_summary.tex"))
    write_csv(generation, record("tables/generation.csv"))
    write_text(generation_to_markdown(generation), record("tables/generation.md"))
    class_table = summarize_per_class(per_class_runs(downstream, class_names), summary)
    write_csv(class_table, record("tables/downstream_per_class.csv"))
    write_text(per_class_to_markdown(class_table, digits), record("tables/downstream_per_class.md"))

    gen_info = {row["generator"]: row for _, row in generation.iterrows()}
    sample_figures: dict[str, dict[str, str]] = {}
    for gen, files in sample_files.items():
        info = gen_info.get(gen)
        figs: dict[str, str] = {}
        if files.get("generated"):
            rel = f"figures/samples_{gen}.png"
            n = "" if info is None or _clean(info["n_generated"]) is None else f", {int(info['n_generated'])} generated"
            plot_sample_grid(files["generated"], record(rel), per_class, class_names, f"{gen}: generated samples{n}")
            figs["generated"] = rel
        if files.get("selected"):
            rel = f"figures/selected_{gen}.png"
            detail = ""
            if info is not None and _clean(info["lambda"]) is not None:
                detail = f" (confidence ≥ {info['lambda']})"
            plot_sample_grid(files["selected"], record(rel), per_class, class_names, f"{gen}: selected samples{detail}")
            figs["selected"] = rel
        sample_figures[gen] = figs

    predictions = _order_predictions(group_prediction_files(prediction_files), summary)
    plot_roc_curves(predictions, record("figures/roc_curves.png"), "ROC curves on the real test split", **names)
    plot_metric_bars(summary, record("figures/auc_bars.png"), "auc", "Test AUC per model and training set")
    if histories:
        plot_training_curves(histories, record("figures/generator_training.png"), "Generator training")

    tsne_section = None
    if tsne:
        from .embedding import report_section

        tsne_section = report_section(tsne, out_dir)
    context = {**context, "has_training_curves": bool(histories)}
    per_class_md = per_class_to_markdown(class_table, digits) if len(class_names) > 2 else None
    write_text(_report_markdown(context, summary, generation, sample_figures, digits, tsne_section, per_class_md),
               record("report.md"))
    return written
