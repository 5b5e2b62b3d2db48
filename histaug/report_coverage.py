"""How well a keyword table reads a set of pathologist reports (numbers for docs/report_levels.md).

``python -m histaug.report_coverage IN [--keywords FILE] [--min-words 15] [--attributegan-csv CSV]``
prints, as Markdown: the fraction of reports (all, and those longer than ``min_words`` words) and of
images (reports combined with :func:`histaug.reports.combine_levels`) with a level per attribute,
the number of images whose reports disagree, the mean level and the level counts per reported
grade, and optionally the level distribution next to the AttributeGAN authors' CSV (this table's
level + 1, 0 = not stated).
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

from .reports import (KeywordTable, combine_levels, default_keywords, load_keywords, load_report_entries, report_rows,
                      run_command)
from .utils import PipelineError


def _frac(rows: list[dict], name: str) -> float:
    return sum(r[name] is not None for r in rows) / max(len(rows), 1)


def _mean(values) -> float | None:
    stated = [v for v in values if v is not None]
    return sum(stated) / len(stated) if stated else None


def coverage(entries: list[tuple[str, list[str]]], table: KeywordTable | None = None, min_words: int = 15) -> dict:
    """Coverage per attribute (fractions of reports / long reports / images with a level), images
    whose reports state different levels, and mean level and level counts per reported grade."""
    table = table or default_keywords()
    rows = report_rows(entries, table)
    texts = [t for _, reports in entries for t in reports]
    long_rows = [r for r, t in zip(rows, texts) if len(t.split()) > min_words]
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image_id"], []).append(r)
    images = [combine_levels(rs, table) for rs in by_image.values()]
    disagree = {a: sum(len({r[a] for r in rs} - {None}) > 1 for rs in by_image.values()) for a in table.names}
    by_grade = {}
    for g in table.grade_names:
        rs = [r for r in rows if r["grade"] == g]
        by_grade[g] = {"n": len(rs), "mean": {a: _mean(r[a] for r in rs) for a in table.names},
                       "counts": {a: Counter(r[a] for r in rs) for a in table.names}}
    return {"reports": len(rows), "long_reports": len(long_rows), "images": len(images), "min_words": min_words,
            "all": {a: _frac(rows, a) for a in table.names}, "long": {a: _frac(long_rows, a) for a in table.names},
            "image": {a: _frac(images, a) for a in table.names}, "disagree": disagree, "by_grade": by_grade,
            "grades": {str(g): sum(r["grade"] == g for r in rows) for g in (*table.grade_names, None)},
            "rows": rows}


def _counts(c: Counter, n_levels: int) -> str:
    return " / ".join(str(c.get(i, 0)) for i in range(n_levels)) + f" (none {c.get(None, 0)})"


def format_coverage(cov: dict, table: KeywordTable | None = None) -> str:
    """The coverage numbers as Markdown tables."""
    table = table or default_keywords()
    grades = list(cov["by_grade"])
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"{cov['reports']} reports ({cov['long_reports']} longer than {cov['min_words']} words), "
             f"{cov['images']} images; grades: {cov['grades']}", "",
             f"| attribute | all reports | reports > {cov['min_words']} words | images (combined) "
             "| images whose reports disagree |",
             "|---|---|---|---|---|"]
    lines += [f"| {a} | {cov['all'][a]:.3f} | {cov['long'][a]:.3f} | {cov['image'][a]:.3f} | {cov['disagree'][a]} |"
              for a in table.names]
    lines += ["", "| mean level | " + " | ".join(f"{g} grade (n={cov['by_grade'][g]['n']})" for g in grades) + " |",
              "|---|" + "---|" * len(grades)]
    lines += [f"| {a} | " + " | ".join(fmt(cov["by_grade"][g]["mean"][a]) for g in grades) + " |" for a in table.names]
    lines += ["", "| reports per level (0 / 1 / ...) | " + " | ".join(f"{g} grade" for g in grades) + " |",
              "|---|" + "---|" * len(grades)]
    lines += [f"| {a.name} | " + " | ".join(_counts(cov["by_grade"][g]["counts"][a.name], len(a.level_names))
                                           for g in grades) + " |" for a in table.attributes]
    return "\n".join(lines)


def compare_attributegan(rows: list[dict], csv_path: str | Path, table: KeywordTable | None = None) -> str:
    """Level fractions of the reports that state anything, shifted to the authors' scale (level + 1,
    0 = not stated), next to the fractions in the authors' CSV, as a Markdown table."""
    table = table or default_keywords()
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            ref = list(csv.DictReader(f))
    except OSError as exc:
        raise PipelineError(f"{csv_path}: cannot read the AttributeGAN CSV ({exc.strerror or exc})") from exc
    missing = [a for a in table.names if ref and a not in ref[0]]
    if not ref or missing:
        raise PipelineError(f"{csv_path}: needs the columns {missing or table.names}")
    stated = [r for r in rows if any(r[a] is not None for a in table.names)]
    lines = [f"| fraction at level 0 / 1 / ... | {len(stated)} reports, level + 1 (0 = not stated) | "
             f"authors' CSV ({len(ref)} rows) |", "|---|---|---|"]
    for a in table.names:
        ours = Counter(0 if r[a] is None else r[a] + 1 for r in stated)
        theirs = Counter(int(r[a]) for r in ref)
        top = max(set(ours) | set(theirs))
        fr = lambda c, n: " / ".join(f"{c[lv] / n:.3f}" for lv in range(top + 1))  # noqa: E731
        lines.append(f"| {a} | {fr(ours, len(stated))} | {fr(theirs, len(ref))} |")
    return "\n".join(lines)


def _coverage_cmd(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m histaug.report_coverage",
                                description="Coverage of a keyword table on pathologist reports, and levels by grade.")
    p.add_argument("input", help="JSON list of {image_id, reports} or CSV with columns image_id,report")
    p.add_argument("--keywords", help="keyword table YAML (default: the one shipped with histaug)")
    p.add_argument("--min-words", type=int, default=15)
    p.add_argument("--attributegan-csv", help="the authors' bladder_attributes.csv, to compare level distributions")
    args = p.parse_args(argv)
    table = load_keywords(args.keywords)
    cov = coverage(load_report_entries(args.input), table, args.min_words)
    print(format_coverage(cov, table))
    if args.attributegan_csv:
        print("\n" + compare_attributegan(cov["rows"], args.attributegan_csv, table))
    return 0


def main(argv=None) -> int:
    return run_command(_coverage_cmd, argv, "histaug.report_coverage")


if __name__ == "__main__":
    sys.exit(main())
