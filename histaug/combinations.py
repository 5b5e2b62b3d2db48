"""Attribute combinations and the rare-combination filter of AttributeGAN (MICCAI 2021, §3).

The paper: "we discard the combinations with frequency less than the 20th percentile since most of
those merely appear in the dataset once or twice". The contrastive loss then uses one class per
remaining combination. The authors' code does something else: it keeps a ``freq_id`` flag and gives
every frequent combination its own class (0..93) and all rare ones a shared class (100). Both are
offered here (``mode``), with two readings of "less than" (``rule``); see docs/combinations.md.

Config keys (used by the pipeline): ``attributes.rare.percentile`` (default 20),
``attributes.rare.mode`` (drop | merge, default drop), ``attributes.rare.rule`` (below |
at_or_below, default below).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .utils import PipelineError

PERCENTILE_KEY = "attributes.rare.percentile"
MODE_KEY = "attributes.rare.mode"
RULE_KEY = "attributes.rare.rule"
DEFAULT_PERCENTILE = 20.0
MODES = ("drop", "merge")
RULES = ("below", "at_or_below")
#: numpy's percentile method used for the threshold (numpy's default; see :func:`rare_threshold`).
PERCENTILE_METHOD = "linear"
SUFFIX = "_level"
#: Columns of the authors' annotation CSV besides the ``*_level`` ones.
AUTHOR_COLUMNS = ("freq_id", "cl_labels")


def _show(items, n: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def level_columns(table: pd.DataFrame) -> list[str]:
    """The ``<name>_level`` columns of a table, in attribute order."""
    return [c for c in table.columns if str(c).endswith(SUFFIX)]


def _check_levels(levels, source: str, n_attributes: int | None = None) -> np.ndarray:
    arr = np.asarray(levels)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise PipelineError(f"{source}: expected a non-empty (images, attributes) table of levels, got shape "
                            f"{arr.shape}; give one row per image and one column per attribute")
    if n_attributes is not None and arr.shape[1] != n_attributes:
        raise PipelineError(f"{source}: {arr.shape[1]} attributes per image but the combination table has "
                            f"{n_attributes}; use levels with the same attributes, in the same order")
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise PipelineError(f"{source}: attribute levels must be whole numbers >= 0, got dtype {arr.dtype}; "
                            "fix the level values")
    bad = np.flatnonzero((arr < 0).any(axis=1))
    if len(bad):
        raise PipelineError(f"{source}: negative attribute levels in rows {_show(bad)}; levels are 0, 1, 2, ...")
    return arr.astype(np.int64)


def count_combinations(levels: np.ndarray, names: Sequence[str], source: str = "attribute levels") -> pd.DataFrame:
    """One row per distinct combination of attribute levels present in ``levels`` (N, A).

    Columns: ``combination`` (levels joined by "-" in attribute order, e.g. "2-1-0-1-3"), one
    ``<name>_level`` column per attribute (a trailing "_level" in a name is not doubled) and ``count``
    (images). Sorted by count (descending), then by the levels (ascending, numerically).
    ``source`` names the input in error messages (a file or config key).
    """
    arr = _check_levels(levels, source)
    names = [str(n)[: -len(SUFFIX)] if str(n).endswith(SUFFIX) else str(n) for n in names]
    if len(names) != arr.shape[1] or len(set(names)) != len(names) or not all(names):
        raise PipelineError(f"{source}: {arr.shape[1]} attributes but names {names}; give one distinct, "
                            "non-empty name per attribute column")
    cols = [n + SUFFIX for n in names]
    combos, counts = np.unique(arr, axis=0, return_counts=True)  # lexicographic order
    table = pd.DataFrame(combos, columns=cols)
    table.insert(0, "combination", ["-".join(map(str, row)) for row in combos])
    table["count"] = counts.astype(np.int64)
    order = np.lexsort(tuple(combos[:, j] for j in range(combos.shape[1] - 1, -1, -1)) + (-counts,))
    return table.iloc[order].reset_index(drop=True)


def rare_threshold(counts: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The ``percentile``-th percentile of the per-combination image counts.

    One value per combination (not per image): the paper takes the percentile of the combinations'
    frequencies. numpy's default ``linear`` interpolation (type 7 of Hyndman & Fan, also R's and
    pandas' default) is used: it is what a plain ``np.percentile(counts, 20)`` gives, the most likely
    reading of the authors' unpublished step, and it is monotone and continuous in ``percentile``.
    On the authors' CSV every numpy method gives the same value (1).
    """
    return float(np.percentile(np.asarray(counts, dtype=np.float64), percentile, method=PERCENTILE_METHOD))


def _check_table(counts: pd.DataFrame) -> list[str]:
    cols = level_columns(counts) if isinstance(counts, pd.DataFrame) else []
    if not cols or "count" not in counts.columns or len(counts) == 0:
        raise PipelineError("combination table: expected the non-empty table of count_combinations (columns "
                            "'combination', '<name>_level' ..., 'count'); build it with count_combinations")
    return cols


def filter_combinations(counts: pd.DataFrame, percentile: float = DEFAULT_PERCENTILE, mode: str = "drop",
                        rule: str = "below") -> pd.DataFrame:
    """A copy of ``counts`` with ``frequent``, ``kept`` and ``contrastive_class`` (-1 = none).

    ``rule="below"``: rare = count strictly below the threshold (the paper's "less than");
    ``rule="at_or_below"``: rare = count <= threshold. ``mode="drop"`` (the paper): rare combinations
    are not kept and the kept ones get classes 0..M-1 in the table's row order; ``mode="merge"`` (the
    authors' code): all are kept, the M frequent ones get 0..M-1 and all rare ones share class M.
    A filter leaving no combination (drop) or no frequent one (merge: a single class) is an error.
    The threshold and settings are in ``.attrs``.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) \
            or not np.isfinite(percentile) or not 0 <= percentile <= 100:
        raise PipelineError(f"config {PERCENTILE_KEY}={percentile!r}: expected a number from 0 to 100 "
                            f"(the paper uses {DEFAULT_PERCENTILE:g})")
    if mode not in MODES:
        raise PipelineError(f"config {MODE_KEY}={mode!r}: expected one of {', '.join(MODES)} "
                            "(drop = the paper's text, merge = the authors' code)")
    if rule not in RULES:
        raise PipelineError(f"config {RULE_KEY}={rule!r}: expected one of {', '.join(RULES)} "
                            "(below = count < threshold is rare, at_or_below = count <= threshold is rare)")
    _check_table(counts)
    out = counts.copy().reset_index(drop=True)
    n = out["count"].to_numpy(np.int64)
    threshold = rare_threshold(n, float(percentile))
    frequent = n >= threshold if rule == "below" else n > threshold
    m = int(frequent.sum())
    if m == 0:
        left = "no combination" if mode == "drop" else "no frequent combination (one contrastive class for all)"
        raise PipelineError(
            f"config {PERCENTILE_KEY}={percentile:g}, {RULE_KEY}={rule}, {MODE_KEY}={mode}: the threshold is "
            f"{threshold:g} images and all {len(n)} combinations (counts {n.min()}..{n.max()}) are rare, which "
            f"leaves {left}; lower {PERCENTILE_KEY}" + (f" or set {RULE_KEY}=below" if rule != "below" else ""))
    classes = np.full(len(n), -1, dtype=np.int64)
    classes[frequent] = np.arange(m)
    if mode == "merge":
        classes[~frequent] = m
    out["frequent"] = frequent
    out["kept"] = frequent if mode == "drop" else np.ones(len(n), dtype=bool)
    out["contrastive_class"] = classes
    out.attrs.update(threshold=threshold, percentile=float(percentile), mode=mode, rule=rule,
                     n_classes=int(classes.max()) + 1)
    return out


def contrastive_table(filtered: pd.DataFrame, level_counts: Sequence[int]) -> list[int]:
    """The contrastive class of every possible combination, -1 where none (absent or dropped).

    Mixed-radix layout in attribute order: index = (((l1 * L2) + l2) * L3 + l3) ... (numpy's
    ``ravel_multi_index`` in C order), so ``len == prod(level_counts)``.
    """
    cols = _check_table(filtered)
    if "contrastive_class" not in filtered.columns:
        raise PipelineError("combination table: no 'contrastive_class' column; pass the table of filter_combinations")
    dims = [int(v) for v in level_counts]
    if len(dims) != len(cols) or min(dims) < 1:
        raise PipelineError(f"attribute level counts {list(level_counts)}: expected {len(cols)} counts >= 1, one per "
                            f"attribute ({', '.join(cols)})")
    levels = filtered[cols].to_numpy(np.int64)
    for j, col in enumerate(cols):
        bad = ["-".join(map(str, row)) for row in levels[levels[:, j] >= dims[j]]]
        if bad:
            raise PipelineError(f"combination table: {col} reaches {levels[:, j].max()} but the attribute has "
                                f"{dims[j]} levels (combinations {_show(bad)}); raise its level count")
    table = np.full(int(np.prod(dims)), -1, dtype=np.int64)
    table[np.ravel_multi_index(tuple(levels.T), dims)] = filtered["contrastive_class"].to_numpy(np.int64)
    return table.tolist()


def apply_filter(levels: np.ndarray, filtered: pd.DataFrame, source: str = "attribute levels"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(keep_mask (N,) bool, contrastive class (N,) int64) for images with ``levels`` (N, A).

    An image whose combination is not in the table (e.g. a combination unseen when the table was
    built) is not kept and has class -1.
    """
    cols = _check_table(filtered)
    arr = _check_levels(levels, source, n_attributes=len(cols))
    index = pd.MultiIndex.from_arrays([filtered[c].to_numpy(np.int64) for c in cols])
    pos = index.get_indexer(pd.MultiIndex.from_arrays([arr[:, j] for j in range(arr.shape[1])]))
    found = pos >= 0
    keep = np.zeros(len(arr), dtype=bool)
    classes = np.full(len(arr), -1, dtype=np.int64)
    keep[found] = filtered["kept"].to_numpy(bool)[pos[found]]
    classes[found] = filtered["contrastive_class"].to_numpy(np.int64)[pos[found]]
    return keep, classes


def read_annotations(path: str | Path) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """(levels (N, A), attribute names, the whole table) of an annotation CSV with ``*_level`` columns."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: annotation file not found; check the path")
    frame = pd.read_csv(path)
    cols = level_columns(frame)
    if not cols or len(frame) == 0:
        raise PipelineError(f"{path}: no rows or no '<attribute>_level' columns (found {list(frame.columns)}); "
                            "give one '<name>_level' column per attribute")
    values = frame[cols].apply(pd.to_numeric, errors="coerce")
    bad = np.flatnonzero((values.isna() | (values < 0) | (values != values.round())).any(axis=1).to_numpy())
    if len(bad):
        raise PipelineError(f"{path}: levels that are not whole numbers >= 0 in rows {_show(bad + 2)} (file line "
                            f"numbers); fix those values")
    return values.to_numpy(np.int64), [c[: -len(SUFFIX)] for c in cols], frame


def compare_with_authors(path: str | Path, percentile: float = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Each rule/mode on the authors' CSV next to their own ``freq_id`` marking (for the docs).

    One row per (rule, mode), then a row ``rule="authors", mode="freq_id"``. Columns: ``threshold``;
    ``combinations``/``images`` (totals); ``combinations_kept``, ``images_kept``, ``classes``
    (contrastive classes used by the kept images); ``combinations_frequent``, ``images_frequent``;
    ``combinations_agree``/``images_agree`` (our frequent flag equals ``freq_id == 0``);
    ``images_kept_agree`` (our keep flag equals theirs: they train on ``freq_id == 0`` only);
    ``authors_frequent_kept`` (how many of their frequent combinations we keep).
    """
    levels, names, frame = read_annotations(path)
    missing = [c for c in AUTHOR_COLUMNS if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing columns {missing}; the authors' file has freq_id and cl_labels")
    counts = count_combinations(levels, names, source=str(path))
    theirs_img = frame["freq_id"].to_numpy() == 0
    index = pd.MultiIndex.from_arrays([levels[:, j] for j in range(levels.shape[1])])
    per_combo = pd.Series(theirs_img, index=index).groupby(level=list(range(levels.shape[1]))).agg(["min", "max"])
    mixed = per_combo.index[per_combo["min"] != per_combo["max"]]
    if len(mixed):
        raise PipelineError(f"{path}: freq_id differs within combinations {_show(mixed)}; it must be one per combination")
    key = pd.MultiIndex.from_frame(counts[level_columns(counts)])
    theirs = per_combo["min"].reindex(key).to_numpy(bool)
    sizes = counts["count"].to_numpy(np.int64)
    rows = []
    for rule in RULES:
        for mode in MODES:
            f = filter_combinations(counts, percentile, mode=mode, rule=rule)
            freq, kept = f["frequent"].to_numpy(bool), f["kept"].to_numpy(bool)
            rows.append(dict(rule=rule, mode=mode, threshold=f.attrs["threshold"],
                             classes=int(f.loc[kept, "contrastive_class"].nunique()), **_figures(
                                 sizes, freq, kept, theirs)))
    classes = int(frame.loc[theirs_img, "cl_labels"].nunique())
    rows.append(dict(rule="authors", mode="freq_id", threshold=np.nan, classes=classes,
                     **_figures(sizes, theirs, theirs, theirs)))
    return pd.DataFrame(rows)


def _figures(sizes: np.ndarray, freq: np.ndarray, kept: np.ndarray, theirs: np.ndarray) -> dict:
    agree = freq == theirs
    return dict(combinations=len(sizes), images=int(sizes.sum()), combinations_kept=int(kept.sum()),
                images_kept=int(sizes[kept].sum()), combinations_frequent=int(freq.sum()),
                images_frequent=int(sizes[freq].sum()), combinations_agree=int(agree.sum()),
                images_agree=int(sizes[agree].sum()), images_kept_agree=int(sizes[kept == theirs].sum()),
                authors_frequent_kept=int((kept & theirs).sum()))


# --------------------------------------------------------------------------- the pipeline step


def build_attribute_subset(attributes_csv, attributes_json, subset_csv, rare_cfg: dict, out_combinations, out_subset,
                           log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Count the attribute combinations of the training subset, filter the rare ones and write
    ``combinations.csv`` (combination, <name>_level..., count, frequent, kept, contrastive_class) and the
    filtered training subset ``attribute_subset.csv`` (index, id, <name>_level..., contrastive_class) that
    the attribute-conditioned generators train on. The threshold and settings go into the log."""
    from .utils import read_json, write_csv

    meta = read_json(attributes_json)
    names = list(meta["names"])
    table = pd.read_csv(attributes_csv, dtype={"id": str})
    train = table[table["split"] == "train"].set_index("index")
    rows = pd.read_csv(subset_csv, dtype={"id": str})["index"].to_numpy(np.int64)
    cols = [f"{n}{SUFFIX}" for n in names]
    levels = train.loc[rows, cols].to_numpy(np.int64)
    rare = dict(rare_cfg or {})
    filtered = filter_combinations(count_combinations(levels, names, str(attributes_csv)),
                                   float(rare.get("percentile", DEFAULT_PERCENTILE)), rare.get("mode", "drop"),
                                   rare.get("rule", "below"))
    keep, classes = apply_filter(levels, filtered)
    subset = pd.DataFrame({"index": rows, "id": train.loc[rows, "id"].to_numpy()})
    for c, col in zip(cols, levels.T):
        subset[c] = col
    subset["contrastive_class"] = classes
    subset = subset[keep].reset_index(drop=True)
    write_csv(filtered, out_combinations)
    write_csv(subset, out_subset)
    if log:
        a = filtered.attrs
        log.info("%d combinations in the %d-image training subset; threshold %g images (%gth percentile, rule %s, "
                 "mode %s): %d frequent, %d kept, %d contrastive classes; %d images kept", len(filtered), len(rows),
                 a["threshold"], a["percentile"], a["rule"], a["mode"], int(filtered["frequent"].sum()),
                 int(filtered["kept"].sum()), a["n_classes"], len(subset))
    return filtered, subset


def condition_from_files(attributes_json, combinations_csv):
    """The :class:`~models.conditioning.Condition` of the attribute-conditioned generators of a run."""
    from models.conditioning import Condition

    from .utils import read_json

    meta = read_json(attributes_json)
    filtered = pd.read_csv(combinations_csv)
    return Condition.attributes(meta["names"], meta["levels"], contrastive_table(filtered, meta["levels"]))
