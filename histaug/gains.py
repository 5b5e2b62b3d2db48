"""Paired augmentation gains: does adding generator G's images improve classifier X?

Seeds are paired: seed s of ``real`` and seed s of ``real+G`` share the seed of every random choice
that does not depend on the training set (initialisation, data order of the real images as far as
the sets agree). For every architecture and training set, the per-seed difference to the ``real``
row of the same architecture and seed is the gain; its mean and a two-sided t-interval over the
seeds (Student's t with n - 1 degrees of freedom, default 95 %) say whether the gain is
distinguishable from zero. With one seed there is no interval (NaN). The paired t-test p-value is
given as well. A gain "excludes zero" when the whole interval lies on one side of it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

COLUMNS = ["arch", "trainset", "metric", "mean_gain", "ci_low", "ci_high", "n_seeds", "p_value", "excludes_zero",
           "baseline_mean"]


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the two-sided Student-t interval of the mean; NaN bounds for fewer than 2 values."""
    from scipy import stats

    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def _p_value(diffs: np.ndarray) -> float:
    from scipy import stats

    if len(diffs) < 2 or not np.any(diffs != diffs[0]):
        return float("nan") if len(diffs) < 2 else (0.0 if diffs[0] != 0 else 1.0)
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def paired_gains(runs: pd.DataFrame, metrics: Sequence[str] = ("auc", "accuracy"), baseline: str = "real",
                 level: float = 0.95) -> pd.DataFrame:
    """Per (arch, training set != baseline, metric): the mean per-seed gain over ``baseline`` and its interval.

    ``runs`` has one row per (arch, variant, seed) (``tables/downstream.csv``). Only seeds present in both
    rows are paired; the order of the rows does not matter.
    """
    records = []
    for arch, block in runs.groupby("arch", sort=False):
        base = block[block["variant"] == baseline].set_index("seed")
        if base.empty:
            continue
        for variant, rows in block[block["variant"] != baseline].groupby("variant", sort=False):
            rows = rows.set_index("seed")
            seeds = sorted(set(rows.index) & set(base.index))
            for metric in metrics:
                diffs = (rows.loc[seeds, metric].astype(float) - base.loc[seeds, metric].astype(float)).to_numpy()
                diffs = diffs[np.isfinite(diffs)]
                mean, low, high = t_interval(diffs, level)
                records.append({"arch": arch, "trainset": variant, "metric": metric, "mean_gain": mean, "ci_low": low,
                                "ci_high": high, "n_seeds": int(len(diffs)), "p_value": _p_value(diffs),
                                "excludes_zero": bool(np.isfinite(low) and (low > 0 or high < 0)),
                                "baseline_mean": float(base.loc[seeds, metric].astype(float).mean()) if seeds else np.nan})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _signed(value: float, digits: int) -> str:
    return "–" if not np.isfinite(value) else f"{value:+.{digits}f}"


def gains_markdown(gains: pd.DataFrame, row_label: Callable[[str, str], str], digits: int = 3, level: float = 0.95) -> str:
    """One row per (arch, training set), one column per metric: ``+0.012 [-0.004, +0.028]``; bold where the
    interval excludes zero."""
    metrics = list(dict.fromkeys(gains["metric"]))
    pct = f"{level:.0%}"
    headers = ["Model", *[f"{m.upper() if m == 'auc' else m.capitalize()} gain [{pct} CI]" for m in metrics], "Seeds"]
    lines = ["| " + " | ".join(headers) + " |", "| --- | " + " | ".join([":---:"] * len(metrics)) + " | ---: |"]
    for (arch, trainset), block in gains.groupby(["arch", "trainset"], sort=False):
        cells = []
        for m in metrics:
            r = block[block["metric"] == m].iloc[0]
            text = f"{_signed(r['mean_gain'], digits)} [{_signed(r['ci_low'], digits)}, {_signed(r['ci_high'], digits)}]"
            cells.append(f"**{text}**" if r["excludes_zero"] else text)
        lines.append("| " + " | ".join([row_label(arch, trainset), *cells, str(int(block["n_seeds"].max()))]) + " |")
    return "\n".join(lines) + "\n"


def gains_sentences(gains: pd.DataFrame, row_label: Callable[[str, str], str], digits: int = 3,
                    level: float = 0.95) -> str:
    """In words: which gains exclude zero (and in which direction), and how many do not."""
    if gains.empty:
        return "There are no augmented training sets to compare with the real-only baseline."
    hits = gains[gains["excludes_zero"]]
    n_seeds = int(gains["n_seeds"].max())
    parts = []
    for _, r in hits.iterrows():
        way = "improves" if r["mean_gain"] > 0 else "lowers"
        parts.append(f"{row_label(r['arch'], r['trainset'])} {way} {r['metric'].upper() if r['metric'] == 'auc' else r['metric']} "
                     f"by {abs(r['mean_gain']):.{digits}f} ({level:.0%} CI {_signed(r['ci_low'], digits)} to "
                     f"{_signed(r['ci_high'], digits)})")
    text = (f"Over {n_seeds} paired seeds, " + ("; ".join(parts) + "." if parts else
            f"no gain's {level:.0%} confidence interval excludes zero: with these seeds the tables cannot tell any "
            "augmented training set from the real-only baseline."))
    rest = len(gains) - len(hits)
    if parts and rest:
        text += f" The other {rest} gain(s) are not distinguishable from zero."
    if n_seeds < 3:
        text += (f" With {n_seeds} seeds the t-interval has {max(n_seeds - 1, 0)} degree(s) of freedom and is very wide; "
                 "the paper configuration's five seeds are needed for a useful answer.")
        if ((gains["ci_high"] - gains["ci_low"]).abs() < 1e-12).any():
            text += (" An interval of zero width means every seed gave the same difference (accuracy moves in steps "
                     "of one test image); it says nothing about the spread.")
    return text


def gains_latex(gains: pd.DataFrame, row_label: Callable[[str, str], str], caption: str, digits: int = 3) -> str:
    metrics = list(dict.fromkeys(gains["metric"]))
    esc = lambda t: str(t).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")  # noqa: E731
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", r"\label{tab:augmentation_gain}",
           r"\begin{tabular}{l" + "c" * len(metrics) + "r}", r"\toprule",
           " & ".join(["Model", *[esc(m) for m in metrics], "Seeds"]) + r" \\", r"\midrule"]
    for (arch, trainset), block in gains.groupby(["arch", "trainset"], sort=False):
        cells = []
        for m in metrics:
            r = block[block["metric"] == m].iloc[0]
            text = f"{_signed(r['mean_gain'], digits)} [{_signed(r['ci_low'], digits)}, {_signed(r['ci_high'], digits)}]"
            cells.append(rf"\textbf{{{text}}}" if r["excludes_zero"] else text)
        out.append(" & ".join([esc(row_label(arch, trainset)), *cells, str(int(block["n_seeds"].max()))]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
