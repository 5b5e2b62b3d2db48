"""Report tables: the downstream runs and their summary (HViTGAN Table 1 shape), the generation
table, the class-head table and the per-class table, as CSV-ready frames and Markdown/LaTeX text."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .report_format import (
    METRIC_TITLES,
    METRICS,
    REQUIRED_METRIC_KEYS,
    _DOWNSTREAM_FRONT,
    _clean,
    _float,
    _latex_escape,
    _ordered,
    arch_label,
    format_mean_std,
    markdown_grid,
    row_label,
)
from .trainsets import KINDS, parse_variant
from .utils import PipelineError, read_json

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
        if "degenerate" in group:
            rec["degenerate_seeds"] = int(group["degenerate"].fillna(False).astype(bool).sum())
        for extra in ("valid_auc", "best_epoch", "epochs_trained"):
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


BASELINE_ARCH = "pixel_logreg"


def row_flags(summary: pd.DataFrame, digits: int = 3) -> pd.Series:
    """Warnings per summary row: a degenerate classifier (one predicted class for the whole test split) in some
    seeds, and a network whose mean test AUC is below the pixel baseline's (logistic regression on pixels)."""
    base = summary[summary["arch"] == BASELINE_ARCH]
    base_auc = round(float(base["auc_mean"].iloc[0]), digits) if len(base) else float("nan")
    flags = []
    for _, row in summary.iterrows():
        out = []
        if row.get("degenerate_seeds"):
            out.append(f"one predicted class in {int(row['degenerate_seeds'])} of {int(row['n_seeds'])} seed(s)")
        if row["arch"] != BASELINE_ARCH and np.isfinite(base_auc) and round(float(row["auc_mean"]), digits) < base_auc:
            out.append(f"AUC below the pixel baseline ({base_auc:.{digits}f})")
        flags.append("; ".join(out))
    return pd.Series(flags, index=summary.index)


def to_markdown_table(summary: pd.DataFrame, digits: int = 3) -> str:
    """Markdown version of the downstream summary: one row per (arch, variant), best per block in bold.

    Columns: Model, Accuracy, AUC, Sensitivity, Specificity (``mean ± std`` over seeds), Seeds and,
    when the summary has the counts, Training images; a Flags column when a row is degenerate or below
    the pixel baseline (:func:`row_flags`).
    """
    with_counts = "n_real" in summary.columns or "n_synthetic" in summary.columns
    flags = row_flags(summary, digits)
    with_flags = bool((flags != "").any())
    headers = ["Model", *(METRIC_TITLES[m] for m in METRICS), "Seeds"] + (["Training images"] if with_counts else [])
    headers += ["Flags"] if with_flags else []
    align = ["---", *([":---:"] * len(METRICS)), "---:"] + (["---:"] if with_counts else []) + (["---"] if with_flags else [])
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
        if with_flags:
            cells.append(("⚠ " + flags.loc[i]) if flags.loc[i] else "")
        rows.append(cells)
    return markdown_grid(headers, rows, align)


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
            "n_real": _clean(rec.get("n_real")),
            "n_fid": _clean(rec.get("n_fid")) if rec.get("n_fid") is not None else _clean(rec.get("n_generated")),
            "fid_inf": _float(rec.get("fid_inf")),
            "lambda": _clean(rec.get("lambda")),
            "tau": _clean(rec.get("tau")),
            "real_split": rec.get("real_split"),
            "inception_precision": rec.get("inception_precision") or "fp32",
            "feature_space": rec.get("feature_space"),
        })
    columns = ["generator", "family", "FID", "KID", "feature_FID", "feature_KID", "n_generated", "n_selected",
               "selection_rate", "checkpoint", "selector", "inception_status", "fid", "kid_mean", "kid_std", "feature_fid",
               "feature_kid_mean", "feature_kid_std", *(f"head_{m}" for m in METRICS), "n_real", "n_fid", "fid_inf",
               "lambda", "tau", "real_split", "inception_precision",
               "feature_space"]
    df = pd.DataFrame.from_records(records, columns=columns)
    if generator_order:
        rank = {g: i for i, g in enumerate(dict.fromkeys(generator_order))}
        df["_rank"] = [rank.get(g, len(rank)) for g in df["generator"]]
        df = df.sort_values("_rank", kind="stable").drop(columns="_rank")
    return df.reset_index(drop=True)


def generation_to_markdown(generation: pd.DataFrame) -> str:
    """Markdown version of the generation table (display columns only).

    N per side is shown; where fewer than :data:`histaug.fid.UNBIASED_N` images per side enter FID, KID
    (unbiased) comes first and FID is marked as biased (it shrinks as N grows). FID∞ (the extrapolation to
    infinitely many images) is a column when some generator has it."""
    from .fid import UNBIASED_N

    if generation.empty:
        return "_No generators in this run._\n"
    sizes = [min(_float(r), _float(g)) for r, g in zip(generation["n_real"], generation["n_fid"])]
    small = any(math.isfinite(n) and n < UNBIASED_N for n in sizes)
    with_inf = bool(np.isfinite(generation["fid_inf"].astype(float)).any())
    fid_head = f"FID ↓ (biased: N < {UNBIASED_N})" if small else "FID ↓"
    reduced = sorted({str(p) for p in generation.get("inception_precision", pd.Series(dtype=str)).dropna()} - {"fp32"})
    kid_head = "KID ↓"
    if reduced:  # a speed switch: say so where the numbers are read, not only in the config
        note = f" [{'/'.join(reduced)} Inception]"
        fid_head, kid_head = fid_head + note, kid_head + note
    quality = [kid_head, fid_head] if small else [fid_head, kid_head]
    headers = ["Generator", "Family", *quality, *(["FID∞ ↓"] if with_inf else []), "N real / generated",
               "Feature FID ↓", "Feature KID ↓", "Generated", "Selected", "Selection rate", "Selector", "Checkpoint step"]
    align = ["---", "---", "---:", "---:", *(["---:"] if with_inf else []), "---:", "---:", "---:", "---:", "---:",
             "---:", "---", "---:"]
    rows = []
    for _, row in generation.iterrows():
        rate = row["selection_rate"]
        # the reason is already in the FID cell; do not repeat it
        kid = "n/a" if row["KID"] == row["FID"] and str(row["KID"]).startswith("n/a") else row["KID"]
        cells = [row["generator"], row["family"] if _clean(row["family"]) is not None else ""]
        cells += [kid, row["FID"]] if small else [row["FID"], kid]
        if with_inf:
            cells.append(f"{row['fid_inf']:.2f}" if math.isfinite(_float(row["fid_inf"])) else "n/a (too few images)")
        n_real, n_fid = _clean(row["n_real"]), _clean(row["n_fid"])
        cells.append(f"{int(n_real)} / {int(n_fid)}" if n_real is not None and n_fid is not None else "")
        cells += [
            row["feature_FID"],
            row["feature_KID"],
            "" if _clean(row["n_generated"]) is None else int(row["n_generated"]),
            "" if _clean(row["n_selected"]) is None else int(row["n_selected"]),
            f"{100 * rate:.1f}%" if math.isfinite(_float(rate)) else "n/a",
            row.get("selector") or "",
            row.get("checkpoint") or "",
        ]
        rows.append(cells)
    return markdown_grid(headers, rows, align)


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
    return markdown_grid(["Generator", *(METRIC_TITLES[m] for m in METRICS)], rows, ["---", *([":---:"] * len(METRICS))])


def per_class_to_markdown(per_class: pd.DataFrame, digits: int = 3) -> str:
    """Per-class one-vs-rest sensitivity, specificity and AUC (mean ± std over seeds) as a Markdown table."""
    headers = ["Model", "Class", "Sensitivity", "Specificity", "AUC (one-vs-rest)", "Seeds"]
    rows = [[r["row"], f"{r['class']} = {r['class_name']}",
             *(format_mean_std(r[f"{m}_mean"], r[f"{m}_std"], digits) for m in ("sensitivity", "specificity", "auc")),
             int(r["n_seeds"])] for _, r in per_class.iterrows()]
    return markdown_grid(headers, rows, ["---", "---", ":---:", ":---:", ":---:", "---:"])
