"""The names of a run's attributes, known from the config before anything runs (the DAG needs them).

Apart from :mod:`histaug.attribute_table`, which measures and reads the levels (h5py, pandas,
scikit-image), so that parsing the workflow imports none of those.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

from .utils import PipelineError

SUFFIX = "_level"  # an attribute's level column is `<name>_level`


def attribute_names(cfg: Mapping) -> list[str]:
    """Attribute names of a run, known before it runs (for the DAG): from the config (pixels), the header
    of the annotation file, or the keyword table (reports)."""
    source = (cfg or {}).get("source")
    if source == "pixels":
        return [s["name"] for s in (cfg.get("pixels") or {}).get("attributes") or []]
    if source == "file":
        path = Path((cfg.get("file") or {}).get("path") or "")
        if not path.is_file():
            raise PipelineError(f"config attributes.file.path={str(path)!r}: annotation CSV not found")
        header = _csv_header(path)
        return [c[: -len(SUFFIX)] for c in dict.fromkeys(header) if c.endswith(SUFFIX)]
    if source == "reports":
        from .reports import load_keywords

        names = load_keywords((cfg.get("reports") or {}).get("keywords")).names
        return [n[: -len(SUFFIX)] if n.endswith(SUFFIX) else n for n in names]
    return []


def _csv_header(path: Path) -> list[str]:
    """The column names in the first row of CSV file `path` (a UTF-8 byte-order mark is dropped)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise PipelineError(f"config attributes.file.path={str(path)!r}: the annotation CSV is empty; it needs a "
                            "header row with `<attribute>_level` columns")
    return header
