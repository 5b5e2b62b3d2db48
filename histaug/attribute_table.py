"""The attribute table: one row per image with an integer level per attribute (``data/attributes.csv``).

Levels are 0 = normal / absent / lowest, rising with abnormality or with the measured quantity.
The config's ``attributes.source`` chooses where they come from; names and level counts come from
the config or the data, never from code:

* ``pixels``: attributes measured on the H&E pixels (:mod:`histaug.attribute_measures`). The
  measurement thresholds and the quantile edges of every attribute's levels are fitted on the
  training split only; the other splits (and, later, generated images) are measured with them.
  The raw measurement is kept next to the level (column ``<name>``).
* ``file``: an annotation CSV in the AttributeGAN authors' format: ``path`` (only the file stem is
  used, matched to the image ids) and ``<name>_level`` columns (``freq_id``, ``cl_labels`` and
  others are ignored). Level counts: ``attributes.file.levels`` or, by default, the largest level
  + 1 in the file.
* ``reports``: levels read from free-text pathologist reports with the keyword table of
  :mod:`histaug.reports`; several reports of one image are combined by the median rule of
  :func:`histaug.reports.combine_levels` (lower middle value for an even count, i.e. toward
  normal). Level counts and names come from the keyword table.

``data/attributes.json`` records the names, level counts, level names, where each attribute came
from and, for pixels, the fitted parameters and edges (what :func:`measure_levels` needs to measure
generated images the same way).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
import pandas as pd

from . import attribute_measures as am
from .attribute_names import SUFFIX, attribute_names  # noqa: F401  (attribute_names: re-exported)
from .attributes import assign_levels, fit_levels
from .utils import PipelineError, write_csv, write_json

SOURCES = ("pixels", "file", "reports")
CHUNK = 2048


def level_names(n: int) -> list[str]:
    """Default names of n ordered levels of a measured quantity."""
    return {2: ["low", "high"], 3: ["low", "medium", "high"],
            4: ["low", "medium-low", "medium-high", "high"]}.get(int(n), [f"q{i + 1}" for i in range(int(n))])


def _split_images(path: str | Path, chunk: int = CHUNK):
    """The images of a split file in chunks (uint8 NHWC), without reading the whole split at once."""
    with h5py.File(path, "r") as f:
        x = f["x"]
        for start in range(0, x.shape[0], chunk):
            yield x[start:start + chunk]


def _base_table(labels_csv: str | Path) -> pd.DataFrame:
    table = pd.read_csv(labels_csv, usecols=["split", "index", "id"], dtype={"id": str})
    return table.sort_values(["split", "index"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- pixels


def _pixel_specs(cfg: Mapping) -> list[dict]:
    specs = list((cfg.get("pixels") or {}).get("attributes") or [])
    if not specs:
        raise PipelineError("config attributes.pixels.attributes is empty; list {name, measure, levels} entries "
                            f"(measures: {am.measure_names()})")
    names = [s["name"] for s in specs]
    if len(set(names)) < len(names):
        raise PipelineError(f"config attributes.pixels.attributes: names must be unique, got {names}")
    am.check_names([s["measure"] for s in specs])
    for s in specs:
        if int(s["levels"]) < 2:
            raise PipelineError(f"config attributes.pixels.attributes.{s['name']}.levels={s['levels']}: need >= 2")
    return specs


def measure_split(path, names: list[str], params: am.MeasureParams) -> dict[str, np.ndarray]:
    parts = [am.measure(x, names, params, desc=f"measure {Path(path).stem}") for x in _split_images(path)]
    return {n: np.concatenate([p[n] for p in parts]) if parts else np.zeros(0) for n in names}


def pixel_attributes(cfg: Mapping, split_files: Mapping[str, str], table: pd.DataFrame, log=None) -> dict:
    """Measure every split; fit thresholds and level edges on the training split."""
    specs = _pixel_specs(cfg)
    pix = cfg.get("pixels") or {}
    with h5py.File(split_files["train"], "r") as f:
        native = int(f["x"].shape[1])
        n_train = int(f["x"].shape[0])
        rows = np.sort(np.random.default_rng(0).choice(n_train, min(n_train, 2048), replace=False))
        fit_images = f["x"][rows]
    params = am.fit_params(fit_images, int(pix.get("size") or native), seed=int(pix.get("seed", 0)))
    measures = sorted({s["measure"] for s in specs})
    values = {split: measure_split(path, measures, params) for split, path in split_files.items()}
    attributes = []
    for s in specs:
        edges = fit_levels(values["train"][s["measure"]], int(s["levels"]))
        for split in split_files:
            mask = (table["split"] == split).to_numpy()
            raw = values[split][s["measure"]]
            table.loc[mask, s["name"]] = raw
            table.loc[mask, s["name"] + SUFFIX] = assign_levels(raw, edges)
        names = list(s.get("level_names") or level_names(int(s["levels"])))
        attributes.append({"name": s["name"], "levels": int(s["levels"]), "level_names": names,
                           "source": f"pixels: {s['measure']}", "measure": s["measure"], "edges": edges.tolist()})
        if len(np.unique(edges)) < len(edges) and log:
            log.warning("attribute %s: tied quantile edges %s on the training split; some levels stay empty",
                        s["name"], edges.tolist())
    return {"source": "pixels", "attributes": attributes, "params": params.to_dict()}


def measure_levels(images: np.ndarray, meta: Mapping) -> np.ndarray:
    """Levels (N, A) of images measured as the attribute table measured the real ones (pixel source only)."""
    if meta.get("source") != "pixels":
        raise PipelineError("attribute levels can only be measured on pixels when attributes.source is 'pixels'")
    params = am.MeasureParams.from_dict(meta["params"])
    measures = sorted({a["measure"] for a in meta["attributes"]})
    values = am.measure(images, measures, params, desc="measure generated")
    return np.stack([assign_levels(values[a["measure"]], np.asarray(a["edges"])) for a in meta["attributes"]], axis=1)


# --------------------------------------------------------------------------- annotation file


def _match_ids(frame: pd.DataFrame, ids: pd.Series, path: Path, key: str) -> pd.DataFrame:
    if frame.index.duplicated().any():
        dup = frame.index[frame.index.duplicated()].tolist()
        raise PipelineError(f"{path}: duplicate image ids {dup[:5]}; each image must appear once (config {key})")
    missing_images = sorted(set(frame.index) - set(ids))
    if missing_images:
        raise PipelineError(f"{path}: {len(missing_images)} row(s) for images that are not in the data, e.g. "
                            f"{missing_images[:5]}; remove those rows or add the images (config {key})")
    no_row = [i for i in ids if i not in frame.index]
    if no_row:
        raise PipelineError(f"{path}: {len(no_row)} image(s) of the data have no row, e.g. {no_row[:5]}; every image "
                            f"needs its attribute levels (config {key})")
    return frame.loc[list(ids)]


def _check_levels(values: pd.DataFrame, counts: Mapping[str, int], path: Path, key: str) -> None:
    for col in values.columns:
        v = pd.to_numeric(values[col], errors="coerce")
        bad = values.index[(v.isna() | (v < 0) | (v != v.round()) | (v >= counts[col])).to_numpy()].tolist()
        if bad:
            raise PipelineError(f"{path}: column {col}{SUFFIX} has levels that are missing, not whole numbers, below 0 "
                                f"or beyond the {counts[col]} declared levels for ids {bad[:5]} (values "
                                f"{values.loc[bad[:5], col].tolist()}); fix them or set {key}.levels")


def file_attributes(cfg: Mapping, table: pd.DataFrame) -> dict:
    spec = cfg.get("file") or {}
    key = "attributes.file"
    path = Path(spec.get("path") or "")
    if not spec.get("path") or not path.is_file():
        raise PipelineError(f"config {key}.path={spec.get('path')!r}: annotation CSV not found")
    try:
        frame = pd.read_csv(path, dtype={"path": str})
    except Exception as exc:
        raise PipelineError(f"{path}: cannot be read as CSV ({exc})") from exc
    cols = [c for c in frame.columns if c.endswith(SUFFIX)]
    if "path" not in frame.columns or not cols:
        raise PipelineError(f"{path}: expected a 'path' column and '<name>{SUFFIX}' columns, found {list(frame.columns)}")
    frame.index = [Path(p).stem for p in frame["path"].astype(str)]
    names = [c[: -len(SUFFIX)] for c in cols]
    values = _match_ids(frame[cols], table["id"], path, key)
    values.columns = names
    declared = dict(spec.get("levels") or {})
    numeric = values.apply(pd.to_numeric, errors="coerce")
    counts = {n: int(declared.get(n, (numeric[n].max() if numeric[n].notna().any() else 0) + 1)) for n in names}
    _check_levels(values, counts, path, key)
    for n in names:
        table[n + SUFFIX] = numeric[n].to_numpy(np.int64)
    return {"source": "file", "file": str(path),
            "attributes": [{"name": n, "levels": counts[n], "level_names": [f"level {i}" for i in range(counts[n])],
                            "source": f"file: {path.name}"} for n in names]}


# --------------------------------------------------------------------------- reports


def report_attributes(cfg: Mapping, table: pd.DataFrame) -> dict:
    from .reports import combine_levels, load_keywords, load_report_entries, report_rows

    spec = cfg.get("reports") or {}
    key = "attributes.reports"
    if not spec.get("path"):
        raise PipelineError(f"config {key}.path is not set; give the reports file (JSON list of image_id/reports, "
                            "or CSV image_id,report)")
    keywords = load_keywords(spec.get("keywords"))
    entries = load_report_entries(spec["path"])
    by_image: dict[str, list[dict]] = {}
    for row in report_rows(entries, keywords):
        by_image.setdefault(str(row["image_id"]), []).append(row)
    frame = pd.DataFrame.from_dict({i: combine_levels(rows, keywords) for i, rows in by_image.items()}, orient="index")
    values = _match_ids(frame, table["id"], Path(spec["path"]), key)
    missing = values.isna()
    if missing.to_numpy().any():
        if spec.get("missing", "error") == "normal":
            values = values.fillna(0)
        else:
            ids = values.index[missing.any(axis=1).to_numpy()].tolist()
            raise PipelineError(f"{spec['path']}: no report states some attribute of {len(ids)} image(s), e.g. {ids[:5]}; "
                                f"add reports or set {key}.missing: normal (level 0 where nothing is said)")
    attributes = []
    for a in keywords.attributes:
        name = a.name[: -len(SUFFIX)] if a.name.endswith(SUFFIX) else a.name
        table[name + SUFFIX] = values[a.name].to_numpy(np.int64)
        attributes.append({"name": name, "levels": len(a.level_names), "level_names": list(a.level_names),
                           "source": f"reports: {Path(spec['path']).name} ({keywords.source})"})
    return {"source": "reports", "reports": str(spec["path"]), "keywords": keywords.source, "attributes": attributes}


# --------------------------------------------------------------------------- the table


def build_attribute_table(cfg: Mapping, labels_csv, split_files: Mapping[str, str], out_csv, out_json, log=None):
    """Write ``attributes.csv`` (split, index, id, <name>_level per attribute [, <name> raw values]) and
    ``attributes.json``; returns (table, meta)."""
    source = (cfg or {}).get("source")
    if source not in SOURCES:
        raise PipelineError(f"config attributes.source={source!r}: expected one of {list(SOURCES)}")
    table = _base_table(labels_csv)
    if source == "pixels":
        meta = pixel_attributes(cfg, split_files, table, log)
    elif source == "file":
        meta = file_attributes(cfg, table)
    else:
        meta = report_attributes(cfg, table)
    names = [a["name"] for a in meta["attributes"]]
    for n in names:
        table[n + SUFFIX] = table[n + SUFFIX].astype(np.int64)
    front = ["split", "index", "id"] + [n + SUFFIX for n in names]
    table = table[front + [c for c in table.columns if c not in front]]
    train = table[table["split"] == "train"]
    for a in meta["attributes"]:
        a["train_counts"] = np.bincount(train[a["name"] + SUFFIX], minlength=a["levels"]).tolist()
        if log:
            log.info("attribute %s (%s): %d levels, training counts %s", a["name"], a["source"], a["levels"],
                     a["train_counts"])
    meta["names"] = names
    meta["levels"] = [a["levels"] for a in meta["attributes"]]
    write_csv(table, out_csv)
    write_json(meta, out_json)
    return table, meta


def read_attribute_levels(attributes_csv, split: str, rows=None) -> np.ndarray:
    """(N, A) levels of one split in file order (only ``rows`` when given)."""
    table = pd.read_csv(attributes_csv)
    table = table[table["split"] == split].sort_values("index")
    levels = table[[c for c in table.columns if c.endswith(SUFFIX)]].to_numpy(np.int64)
    return levels if rows is None else levels[np.asarray(rows, dtype=np.int64)]


