"""AttributeGAN Table 1 (FID and attribute error per model) and its Fig. 3 (one attribute's levels per model).

Rows (config ``report.attributegan_table``): "Real images" first, then one row per entry
``{generators: <config entry>, label}``. An entry expanded into per-attribute runs (BigGAN: one
single-attribute model per attribute) is one row: its FID is the mean over its runs (the paper
averages FID over its five BigGANs) and each attribute's error comes from the run made for that
attribute. Columns: FID (with the number of runs averaged), one attribute error per attribute and,
where attributes are pixel-derived, the oracle error per attribute.

The paper's own numbers (:data:`PAPER_TABLE1`, AttributeGAN Table 1 on the bladder data) are shown
beside ours in the report, labelled as the paper's: they are not reproduced here.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .attribute_error import REAL, _cell
from .utils import PipelineError, read_json

#: AttributeGAN Table 1 as published (MICCAI 2021; bladder cancer data, 512 px; BigGAN at 256 px).
PAPER_TABLE1 = pd.DataFrame(
    [["Real Images", None, .011, .034, .037, .018, .014],
     ["BigGAN", 158.39, .112, .080, .104, .049, .065],
     ["AttributeGAN w/o EA", 142.015, .035, .078, .208, .056, .023],
     ["AttributeGAN w/o CCL", 55.772, .094, .112, .111, .056, .070],
     ["AttributeGAN", 53.689, .021, .098, .088, .081, .063]],
    columns=["model", "FID", "cell crowding", "cell polarity", "mitosis", "nucleoli", "pleomorphism"])


def table_rows(entries: Sequence[Mapping], runs_of: Mapping[str, Sequence[str]],
               defined: Sequence[str] | None = None) -> list[dict]:
    """[{label, generators: [runs]}] from the config entries and the runs each entry expanded into.

    An entry defined under ``generators`` but not in this run's ``run_generators`` is left out (a run
    that trains fewer models gets a shorter table); a name that is not defined at all is an error."""
    rows = []
    for i, entry in enumerate(entries):
        name = entry.get("generators")
        if name not in runs_of and defined is not None and name in defined:
            continue
        if name not in runs_of:
            raise PipelineError(f"config report.attributegan_table[{i}].generators={name!r}: not an attribute-conditioned "
                                f"generator entry of this run (entries: {sorted(runs_of)})")
        rows.append({"label": entry.get("label") or name, "entry": name, "runs": list(runs_of[name])})
    return rows


def build_table(rows: Sequence[Mapping], generation_files: Mapping[str, str], errors: pd.DataFrame,
                attributes: Sequence[str]) -> pd.DataFrame:
    """One row per model: FID (mean over runs), runs, and per attribute the error (and oracle error)."""
    oracle = errors["oracle_error"].notna().any()
    records = [_real_row(errors, attributes, oracle)]
    for row in rows:
        fids = [_fid(read_json(generation_files[r])) for r in row["runs"]]
        finite = [f for f in fids if np.isfinite(f)]
        rec = {"model": row["label"], "FID": float(np.mean(finite)) if finite else float("nan"),
               "FID_runs": len(finite), "generators": ",".join(row["runs"])}
        for a in attributes:
            part = errors[(errors["model"].isin(row["runs"])) & (errors["attribute"] == a)]
            rec[a] = float(part["error"].mean()) if len(part) else float("nan")
            if oracle:
                rec[f"{a} (oracle)"] = float(part["oracle_error"].mean()) if len(part) else float("nan")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _fid(generation: Mapping) -> float:
    value = generation.get("fid")
    return float(value) if value is not None else float("nan")


def _real_row(errors: pd.DataFrame, attributes: Sequence[str], oracle: bool) -> dict:
    real = errors[errors["model"] == REAL].set_index("attribute")
    rec = {"model": REAL, "FID": float("nan"), "FID_runs": 0, "generators": ""}
    for a in attributes:
        rec[a] = float(real["error"].get(a, np.nan))
        if oracle:
            rec[f"{a} (oracle)"] = float(real["oracle_error"].get(a, np.nan))
    return rec


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    cols = [c for c in table.columns if c not in ("model", "FID", "FID_runs", "generators")]
    headers = ["Model", "FID ↓", *[f"{c} ↓" for c in cols]]
    lines = ["| " + " | ".join(headers) + " |", "| --- | ---: | " + " | ".join([":---:"] * len(cols)) + " |"]
    for _, r in table.iterrows():
        fid = "–" if not np.isfinite(r["FID"]) else f"{r['FID']:.2f}" + (f" (mean of {int(r['FID_runs'])})"
                                                                       if r["FID_runs"] > 1 else "")
        lines.append("| " + " | ".join([str(r["model"]), fid, *(_cell(r[c], digits) for c in cols)]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str, digits: int = 3) -> str:
    cols = [c for c in table.columns if c not in ("model", "FID", "FID_runs", "generators")]
    esc = lambda t: str(t).replace("_", r"\_").replace("&", r"\&")  # noqa: E731
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", r"\label{tab:attributegan}",
           r"\begin{tabular}{lr" + "c" * len(cols) + "}", r"\toprule",
           " & ".join(["Model", r"FID$\downarrow$", *map(esc, cols)]) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        fid = "--" if not np.isfinite(r["FID"]) else f"{r['FID']:.2f}"
        out.append(" & ".join([esc(r["model"]), fid, *(_cell(r[c], digits) for c in cols)]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def paper_markdown() -> str:
    """The paper's Table 1 as published, for the report (labelled as the paper's)."""
    cols = list(PAPER_TABLE1.columns[2:])
    lines = ["| Model (paper) | FID ↓ | " + " | ".join(f"{c} ↓" for c in cols) + " |",
             "| --- | ---: | " + " | ".join([":---:"] * len(cols)) + " |"]
    for _, r in PAPER_TABLE1.iterrows():
        fid = "–" if r["FID"] is None or not np.isfinite(r["FID"]) else f"{r['FID']:.2f}"
        lines.append("| " + " | ".join([r["model"], fid, *(_cell(r[c]) for c in cols)]) + " |")
    return "\n".join(lines) + "\n"
