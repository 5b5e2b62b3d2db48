"""Per-class results of the downstream classifiers (one-vs-rest), for data with any number of classes.

Each downstream ``metrics.json`` of a K > 2 task holds ``sensitivity_c<k>``, ``specificity_c<k>``
and ``auc_c<k>`` (:func:`histaug.metrics.classification_metrics`). A binary task holds only the
positive-class numbers; its per-class values follow from them: class 1's sensitivity is the
sensitivity, class 0's is the specificity, and the other way round for specificity; both classes'
one-vs-rest AUC is the AUC.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

PER_CLASS_METRICS = ("sensitivity", "specificity", "auc")


def _class_values(row: pd.Series, k: int, n_classes: int) -> dict[str, float]:
    if f"sensitivity_c{k}" in row and pd.notna(row.get(f"sensitivity_c{k}")):
        return {m: float(row.get(f"{m}_c{k}", np.nan)) for m in PER_CLASS_METRICS}
    if n_classes != 2:
        return {m: float("nan") for m in PER_CLASS_METRICS}
    sens, spec = float(row["sensitivity"]), float(row["specificity"])
    return {"sensitivity": sens if k == 1 else spec, "specificity": spec if k == 1 else sens, "auc": float(row["auc"])}


def per_class_runs(downstream: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (arch, variant, seed, class) with that class's one-vs-rest sensitivity, specificity, AUC."""
    records = []
    for _, row in downstream.iterrows():
        for k, name in enumerate(class_names):
            records.append({"arch": row["arch"], "variant": row["variant"], "seed": int(row["seed"]), "class": k,
                            "class_name": name, **_class_values(row, k, len(class_names))})
    return pd.DataFrame.from_records(records, columns=["arch", "variant", "seed", "class", "class_name",
                                                       *PER_CLASS_METRICS])


def summarize_per_class(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof = 1) over seeds per (arch, variant, class), in the order of the downstream
    summary's rows (its ``row`` names), classes in order within each."""
    records = []
    for _, srow in summary.iterrows():
        block = runs[(runs["arch"] == srow["arch"]) & (runs["variant"] == srow["variant"])]
        for (k, name), group in block.groupby(["class", "class_name"], sort=True):
            rec = {"row": srow["row"], "arch": srow["arch"], "variant": srow["variant"], "class": int(k),
                   "class_name": name, "n_seeds": int(len(group))}
            for m in PER_CLASS_METRICS:
                values = group[m].to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                rec[f"{m}_mean"] = float(values.mean()) if len(values) else float("nan")
                rec[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            records.append(rec)
    return pd.DataFrame.from_records(records)
