"""Traceable numbers: every table and report.md records the code and configuration that produced it.

The record: the git commit of the checkout the workflow runs from (and whether its tracked files
had uncommitted changes: ``dirty``), a hash of the run's whole configuration, and the UTC date.
Markdown files end with a line saying so, LaTeX files start with a ``%`` comment, and CSV files
carry it in three trailing columns (``commit``, ``config_hash``, ``date``), so that they stay plain
CSV for any reader.
"""
from __future__ import annotations

import datetime as _dt
import subprocess
from pathlib import Path
from typing import Mapping

import pandas as pd

from .utils import config_hash, write_csv, write_text

REPO = Path(__file__).resolve().parents[1]
CSV_COLUMNS = ("commit", "config_hash", "date")


def git_commit(repo: str | Path = REPO) -> tuple[str, bool | None]:
    """(commit, dirty) of ``repo``; ("unknown", None) outside a git checkout or without git."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def provenance(config: Mapping | None, repo: str | Path = REPO) -> dict:
    commit, dirty = git_commit(repo)
    return {"commit": commit, "dirty": dirty, "config_hash": config_hash(dict(config or {})),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def describe(prov: Mapping) -> str:
    dirty = {True: " with uncommitted changes", False: "", None: ""}[prov.get("dirty")]
    return f"commit {prov['commit'][:12]}{dirty}, config hash {prov['config_hash']}, {prov['date']}"


def stamp_markdown(text: str, prov: Mapping | None) -> str:
    return text if not prov else text.rstrip("\n") + f"\n\n_Produced by {describe(prov)}._\n"


def stamp_latex(text: str, prov: Mapping | None) -> str:
    return text if not prov else f"% produced by {describe(prov)}\n" + text


def stamp_frame(frame: pd.DataFrame, prov: Mapping | None) -> pd.DataFrame:
    if not prov:
        return frame
    commit = prov["commit"] + ("+dirty" if prov.get("dirty") else "")
    return frame.assign(commit=commit, config_hash=prov["config_hash"], date=prov["date"])


def write_table(frame: pd.DataFrame, path: str | Path, prov: Mapping | None) -> None:
    write_csv(stamp_frame(frame, prov), path)


def write_stamped(text: str, path: str | Path, prov: Mapping | None) -> None:
    """Markdown (``.md``) or LaTeX (``.tex``) text with the provenance line."""
    kind = Path(path).suffix
    write_text(stamp_latex(text, prov) if kind == ".tex" else stamp_markdown(text, prov), path)


def of_rule(smk) -> dict:
    """The provenance of a rule's run (its Snakemake object carries the whole config)."""
    return provenance(getattr(smk, "config", None))
