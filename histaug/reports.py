"""Attribute levels from free-text pathologist reports, read with a keyword table.

The reports (lower case, mostly unpunctuated) describe nuclear pleomorphism, cell crowding, cell
polarity, mitosis and nucleoli and end with the grade. The keyword table (YAML, default
``histaug/report_keywords.yaml``) names the attributes, their ordered levels and the phrases of
each level, the negation cues, the "insufficient information" cues and the clause openers; no
attribute, level or phrase is written in this module. Design and measured coverage:
docs/report_levels.md.

Reading one report:

1. Words are lower-cased tokens; ``. ; ! ?`` are hard clause boundaries (commas and colons are not).
2. Clauses: the text is split where an attribute's cue words start, moved left over the level
   phrases, negation cues and clause openers just before the cue ("there is a moderate degree of
   crowding" is one clause). Grade phrases are clauses of their own, and an "insufficient
   information" cue starts its own clause once the clause before it has stated a level.
3. In an attribute's clause its level phrases are matched longest first. A negation cue up to
   ``window`` words before (or an "after" cue after) a phrase negates it: the level becomes the
   attribute's ``negated_level`` (None if the phrase already had that level). A clause with a cue,
   no phrase and a negation ("no mitotic figures") gives ``negated_level``; a clause holding an
   insufficient-information cue gives None. Several phrases or clauses: the highest level.

Command line: ``histaug-report-levels IN OUT.csv [--keywords FILE]`` (or ``python -m histaug.reports``);
coverage on a set of reports: ``python -m histaug.report_coverage IN`` (histaug/report_coverage.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml

from .utils import PipelineError

DEFAULT_KEYWORDS = "report_keywords.yaml"
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[.;!?]")
_HARD = set(".;!?")
_TOP_KEYS = {"version", "attributes", "grade", "negation", "insufficient", "clause_openers"}
_ATTR_KEYS = {"cues", "negated_level", "levels"}
_LEVEL_KEYS = {"name", "level", "phrases"}
_NEG_KEYS = {"before", "after", "window"}
_ROW_KEYS = {"image_id", "report_index", "grade"}

Phrase = tuple[str, ...]


# --------------------------------------------------------------------------- keyword table


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    cues: tuple[Phrase, ...]
    level_names: tuple[str, ...]
    phrases: dict[Phrase, int]  # phrase -> level index
    negated_level: int


@dataclass(frozen=True)
class KeywordTable:
    attributes: tuple[AttributeSpec, ...]
    grades: dict[Phrase, str]
    grade_names: tuple[str, ...]
    negation_before: tuple[Phrase, ...]
    negation_after: tuple[Phrase, ...]
    window: int
    insufficient: tuple[Phrase, ...]
    openers: tuple[Phrase, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]


def _phrase(text) -> Phrase:
    return tuple(_WORD.findall(str(text).lower()))


def _phrases(value, where: str, errors: list[str], optional: bool = False) -> tuple[Phrase, ...]:
    if optional and value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _phrase(v) for v in value):
        bools = [v for v in value if isinstance(v, bool)] if isinstance(value, list) else []
        hint = f" (YAML read {bools[0]!r}: quote words like \"no\")" if bools else ""
        errors.append(f"{where}: must be a non-empty list of non-empty strings{hint}")
        return ()
    return tuple(_phrase(v) for v in value)


def _unknown(mapping, allowed: set, where: str, errors: list[str]) -> bool:
    if not isinstance(mapping, dict):
        errors.append(f"{where}: must be a mapping")
        return True
    extra = sorted(set(mapping) - allowed)
    if extra:
        errors.append(f"{where}: unknown key(s) {extra} (allowed: {sorted(allowed)})")
    return False


def _levels(name: str, levels, errors: list[str]) -> tuple[tuple[str, ...], dict[Phrase, int]]:
    where = f"attributes.{name}.levels"
    if not isinstance(levels, list) or len(levels) < 2:
        errors.append(f"{where}: must be a list of at least 2 levels")
        return (), {}
    names, phrases = [], {}
    for i, lv in enumerate(levels):
        if _unknown(lv, _LEVEL_KEYS, f"{where}[{i}]", errors):
            continue
        if lv.get("level") != i or isinstance(lv.get("level"), bool):
            errors.append(f"{where}[{i}]: level is {lv.get('level')!r}; "
                          "levels must be consecutive 0, 1, 2, ... in order")
        if not isinstance(lv.get("name"), str) or lv["name"] in names:
            errors.append(f"{where}[{i}]: name must be a string not used by another level")
        names.append(str(lv.get("name")))
        for p in _phrases(lv.get("phrases"), f"{where}[{i}].phrases", errors):
            if p in phrases:
                errors.append(f"{where}[{i}].phrases: {' '.join(p)!r} is also listed under level {phrases[p]}")
            phrases[p] = i
    return tuple(names), phrases


def _attribute(name: str, spec, errors: list[str]) -> AttributeSpec | None:
    if _unknown(spec, _ATTR_KEYS, f"attributes.{name}", errors):
        return None
    cues = _phrases(spec.get("cues"), f"attributes.{name}.cues", errors)
    names, phrases = _levels(name, spec.get("levels"), errors)
    negated = spec.get("negated_level", names[0] if names else None)
    if negated not in names:
        errors.append(f"attributes.{name}.negated_level: {negated!r} is not one of its levels {list(names)}")
        return None
    return AttributeSpec(name, cues, names, phrases, names.index(negated))


def _grades(raw: dict, errors: list[str]) -> dict[Phrase, str]:
    grade = raw.get("grade", {})
    if not isinstance(grade, dict):
        errors.append("grade: must be a mapping of grade name -> phrases")
        return {}
    return {p: str(g) for g, ph in grade.items() for p in _phrases(ph, f"grade.{g}", errors)}


def _negation(raw: dict, errors: list[str]) -> tuple[tuple[Phrase, ...], tuple[Phrase, ...], int]:
    neg = raw.get("negation", {})
    if _unknown(neg, _NEG_KEYS, "negation", errors):
        return (), (), 0
    window = neg.get("window", 3)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        errors.append(f"negation.window: {window!r} must be an integer >= 0")
        window = 0
    return (_phrases(neg.get("before"), "negation.before", errors, True),
            _phrases(neg.get("after"), "negation.after", errors, True), window)


def _check_attributes(attrs: list[AttributeSpec], errors: list[str]) -> None:
    seen: dict[Phrase, str] = {}
    for a in attrs:
        if a.name in _ROW_KEYS:
            errors.append(f"attributes.{a.name}: the name is taken by an output column {sorted(_ROW_KEYS)}")
        for c in a.cues:
            if c in seen:
                errors.append(f"attributes.{a.name}.cues: {' '.join(c)!r} is also a cue of {seen[c]}")
            seen[c] = a.name


def _parse_table(raw, source: str) -> KeywordTable:
    errors: list[str] = []
    if _unknown(raw, _TOP_KEYS, "top level", errors) or not isinstance(raw.get("attributes"), dict) \
            or not raw["attributes"]:
        errors.append("attributes: must be a non-empty mapping of attribute name -> {cues, negated_level, levels}")
        raise PipelineError(f"{source}: invalid keyword table:\n  " + "\n  ".join(errors[:5]))
    if raw.get("version", 1) != 1:
        errors.append(f"version: {raw.get('version')!r}; this reader knows version 1")
    attrs = [a for a in (_attribute(str(k), v, errors) for k, v in raw["attributes"].items()) if a]
    _check_attributes(attrs, errors)
    grades = _grades(raw, errors)
    before, after, window = _negation(raw, errors)
    insufficient = _phrases(raw.get("insufficient"), "insufficient", errors, True)
    openers = _phrases(raw.get("clause_openers"), "clause_openers", errors, True)
    if errors:
        raise PipelineError(f"{source}: invalid keyword table:\n  " + "\n  ".join(errors[:5]))
    return KeywordTable(tuple(attrs), grades, tuple(dict.fromkeys(grades.values())), before, after, window,
                        insufficient, openers, source)


@lru_cache(maxsize=1)
def default_keywords() -> KeywordTable:
    """The keyword table shipped with histaug (read once)."""
    return load_keywords()


def load_keywords(path: str | Path | None = None) -> KeywordTable:
    """Read and validate a keyword table (default: the one shipped with histaug)."""
    if path is None:
        res = resources.files("histaug") / DEFAULT_KEYWORDS
        text, source = res.read_text(encoding="utf-8"), str(res)
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PipelineError(f"{source}: cannot read keyword table ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{source}: not valid YAML ({exc})") from exc
    return _parse_table(raw, source)


# --------------------------------------------------------------------------- matching and clauses


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    value: object


@dataclass(frozen=True)
class Clause:
    attribute: str | None
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _tokenize(text: str) -> tuple[list[str], set[int]]:
    words, hard = [], set()
    for tok in _WORD.findall(str(text).lower()):
        if tok in _HARD:
            hard.add(len(words))
        else:
            words.append(tok)
    return words, hard


def find_phrases(words: Sequence[str], phrases: Mapping[Phrase, object]) -> list[Match]:
    """Non-overlapping matches, longest phrase first (then leftmost), sorted by position."""
    used = [False] * len(words)
    found = []
    for p in sorted(phrases, key=lambda q: (-len(q), q)):
        n = len(p)
        for i in range(len(words) - n + 1):
            if tuple(words[i:i + n]) == p and not any(used[i:i + n]):
                used[i:i + n] = [True] * n
                found.append(Match(i, i + n, phrases[p]))
    return sorted(found, key=lambda m: m.start)


def _flag(phrases: Iterable[Phrase]) -> dict[Phrase, bool]:
    return {p: True for p in phrases}


def _anchors(words, cuts, table) -> list[Match]:
    """Cue matches, consecutive cues of one attribute merged (unless a cut lies between)."""
    cues = find_phrases(words, {c: a.name for a in table.attributes for c in a.cues})
    out: list[Match] = []
    for m in cues:
        if out and out[-1].value == m.value and not any(out[-1].end <= h <= m.start for h in cuts - {0, len(words)}):
            out[-1] = Match(out[-1].start, m.end, m.value)
        else:
            out.append(m)
    return out


def _head_start(anchor: Match, lower: int, levels: list[Match], lead: list[Match]) -> int:
    """Move the clause start left from the cue over level phrases, negations and openers."""
    p = anchor.start
    for m in levels:
        if lower <= m.start < p < m.end:
            p = m.start
    while True:  # a match ending at (or running into) the clause start joins the clause
        before = [m.start for m in levels + lead if m.start < p <= m.end and m.start >= lower]
        if not before:
            return p
        p = min(before)


def _clause_starts(words: list[str], cuts: set[int], table: KeywordTable) -> dict[int, str]:
    """Where each attribute's clause starts: its first cue, moved left over its head."""
    specs = {a.name: a for a in table.attributes}
    lead = find_phrases(words, _flag(table.negation_before + table.insufficient + table.openers))
    starts: dict[int, str] = {}
    prev_end, prev_tail = 0, []
    for k, a in enumerate(_anchors(words, cuts, table)):
        lower = max([prev_end] + [h for h in cuts if h <= a.start])
        if prev_tail:  # the clause before states its level after its cue: keep that phrase in it
            lower = max(lower, min([m.end for m in prev_tail if m.end <= a.start], default=lower))
        levels = find_phrases(words, specs[a.value].phrases)
        p = lower if k == 0 else _head_start(a, lower, levels, lead)
        starts[p] = a.value
        stated = _read_words(words[p:a.end], specs[a.value], table) is not None
        prev_end, prev_tail = a.end, ([] if stated else [m for m in levels if m.start >= a.end])
    return starts


def split_clauses(text: str, table: KeywordTable | None = None) -> list[Clause]:
    """Split one report into clauses, each about at most one attribute (None: grade or other)."""
    table = table or default_keywords()
    words, hard = _tokenize(text)
    grades = find_phrases(words, table.grades)
    cuts = {0, len(words)} | hard | {g.start for g in grades} | {g.end for g in grades}
    starts = _clause_starts(words, cuts, table)
    cuts |= set(starts)
    specs = {a.name: a for a in table.attributes}
    for m in find_phrases(words, _flag(table.insufficient)):
        s = max(c for c in cuts if c <= m.start)  # a trailing "insufficient information" is not
        if s in starts and s < m.start and _read_words(words[s:m.start], specs[starts[s]], table) is not None:
            cuts.add(m.start)  # about a clause that has already stated its level
    bounds = sorted(cuts)
    return [Clause(starts.get(s), tuple(words[s:e])) for s, e in zip(bounds, bounds[1:]) if e > s]


# --------------------------------------------------------------------------- reading levels


def _negated(m: Match, before: list[Match], after: list[Match], window: int) -> bool:
    return (any(0 <= m.start - n.end <= window for n in before if n.end <= m.start)
            or any(0 <= n.start - m.end <= window for n in after if n.start >= m.end))


def _outside(negs: list[Match], levels: list[Match]) -> list[Match]:
    """Negation cues that are not part of a longer level phrase ("not completely lost")."""
    return [n for n in negs if not any(m.start <= n.start and n.end <= m.end and m.end - m.start > n.end - n.start
                                       for m in levels)]


def _read_words(words: Sequence[str], spec: AttributeSpec, table: KeywordTable) -> int | None:
    if find_phrases(words, _flag(table.insufficient)):
        return None
    levels = find_phrases(words, spec.phrases)
    before = _outside(find_phrases(words, _flag(table.negation_before)), levels)
    after = _outside(find_phrases(words, _flag(table.negation_after)), levels)
    if not levels:
        return spec.negated_level if before or after else None
    read = []
    for m in levels:
        if not _negated(m, before, after, table.window):
            read.append(m.value)
        elif m.value != spec.negated_level:
            read.append(spec.negated_level)
    return max(read) if read else None


def read_report(text: str, table: KeywordTable | None = None) -> dict[str, object]:
    """``{"grade": name or None, <attribute>: level index or None, ...}`` for one report."""
    table = table or default_keywords()
    specs = {a.name: a for a in table.attributes}
    out: dict[str, object] = {"grade": None, **{a: None for a in specs}}
    for clause in split_clauses(text, table):
        if clause.attribute is None:
            continue
        level = _read_words(clause.words, specs[clause.attribute], table)
        if level is not None:
            prev = out[clause.attribute]
            out[clause.attribute] = level if prev is None else max(prev, level)
    grades = find_phrases(_tokenize(text)[0], table.grades)
    out["grade"] = grades[-1].value if grades else None
    return out


def combine_levels(rows: Iterable[Mapping[str, object]], table: KeywordTable | None = None) -> dict[str, int | None]:
    """One level per attribute for an image read from several reports.

    Rule: the median of the levels the reports state, taking the lower middle value when their
    number is even (rounding half down, toward normal); None when no report states the attribute.
    """
    table = table or default_keywords()
    rows = list(rows)
    out: dict[str, int | None] = {}
    for name in table.names:
        stated = sorted(int(r[name]) for r in rows if r.get(name) is not None and r.get(name) != "")
        out[name] = stated[(len(stated) - 1) // 2] if stated else None
    return out


def combine_grades(grades: Iterable[str | None], table: KeywordTable | None = None) -> str | None:
    """The grade most reports state; a tie goes to the grade listed first in the table (low)."""
    table = table or default_keywords()
    stated = [g for g in grades if g]
    if not stated:
        return None
    return max(table.grade_names, key=lambda g: (stated.count(g), -table.grade_names.index(g)))


# --------------------------------------------------------------------------- files


def _bad(path, problems: list[str], what: str) -> PipelineError:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return PipelineError(f"{path}: {what}; first offending entries: " + "; ".join(problems[:3]) + more)


def _json_entries(path: Path, text: str) -> list[tuple[str, list[str]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise PipelineError(f"{path}: expected a JSON list of {{\"image_id\", \"reports\"}} objects, "
                            f"got {type(data).__name__}")
    problems, out = [], []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or "image_id" not in e or "reports" not in e:
            problems.append(f"entry {i}: needs keys 'image_id' and 'reports'")
        elif isinstance(e["image_id"], bool) or not isinstance(e["image_id"], (str, int)) or e["image_id"] == "":
            problems.append(f"entry {i}: 'image_id' must be a non-empty string or an integer, got {e['image_id']!r}")
        elif not isinstance(e["reports"], list) or not all(isinstance(r, str) for r in e["reports"]):
            problems.append(f"entry {i} (image_id {e['image_id']!r}): 'reports' must be a list of strings")
        else:
            out.append((str(e["image_id"]), list(e["reports"])))
    if problems:
        raise _bad(path, problems, f"{len(problems)} malformed entr{'y' if len(problems) == 1 else 'ies'}")
    return out


def _csv_entries(path: Path, text: str) -> list[tuple[str, list[str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"image_id", "report"} <= set(reader.fieldnames):
        raise PipelineError(f"{path}: not a JSON list nor a CSV with columns image_id,report "
                            f"(header: {reader.fieldnames})")
    grouped: dict[str, list[str]] = {}
    problems = []
    for line, row in enumerate(reader, start=2):
        if None in row or row["image_id"] in (None, "") or row["report"] is None:
            problems.append(f"line {line}: needs an image_id and a report, with as many fields as the header")
        else:
            grouped.setdefault(row["image_id"], []).append(row["report"])
    if problems:
        raise _bad(path, problems, f"{len(problems)} malformed row(s)")
    return list(grouped.items())


def load_report_entries(path: str | Path) -> list[tuple[str, list[str]]]:
    """``[(image_id, [report, ...]), ...]`` from a JSON list or a CSV with columns image_id,report."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read reports ({getattr(exc, 'strerror', None) or exc})") from exc
    if path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip()[:1] in "[{"):
        return _json_entries(path, text)
    return _csv_entries(path, text)


def report_rows(entries: Iterable[tuple[str, Sequence[str]]], table: KeywordTable | None = None) -> list[dict]:
    """One row per report: image_id, report_index (0-based within the image), grade, levels."""
    table = table or default_keywords()
    return [{"image_id": image_id, "report_index": i, **read_report(text, table)}
            for image_id, reports in entries for i, text in enumerate(reports)]


def write_rows(rows: list[dict], out: str | Path, table: KeywordTable) -> None:
    columns = ["image_id", "report_index", "grade", *table.names]
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows)
    except OSError as exc:
        raise PipelineError(f"{out}: cannot write the levels CSV ({exc.strerror or exc})") from exc


# --------------------------------------------------------------------------- command line


def run_command(func, argv, prog: str) -> int:
    """Run ``func(argv)``; a PipelineError becomes one message on stderr and exit code 1."""
    try:
        return func(argv)
    except PipelineError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def _levels_cmd(argv) -> int:
    p = argparse.ArgumentParser(prog="histaug-report-levels",
                                description="Read attribute levels and the grade from pathologist reports.")
    p.add_argument("input", help="JSON list of {image_id, reports: [...]} or CSV with columns image_id,report")
    p.add_argument("output", help="CSV to write: one row per report")
    p.add_argument("--keywords", help="keyword table YAML (default: the one shipped with histaug)")
    args = p.parse_args(argv)
    table = load_keywords(args.keywords)
    entries = load_report_entries(args.input)
    rows = report_rows(entries, table)
    write_rows(rows, args.output, table)
    print(f"wrote {len(rows)} report rows for {len(entries)} images to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``histaug-report-levels IN OUT.csv [--keywords FILE]``."""
    return run_command(_levels_cmd, argv, "histaug-report-levels")


if __name__ == "__main__":
    sys.exit(main())
