"""Data ingest: PatchCamelyon HDF5 files or a Kaggle-layout image folder -> one canonical HDF5 per split.

Canonical output (results_dir/data/):
  {train,valid,test}.h5   x uint8 (N,96,96,3), y int64 (N,) source label, id (N,) string
  source_labels.csv       split, index, id, source_label

Memory and disk stay bounded at any data size: PCam's own splits are not copied, their x is an
HDF5 external link to the source file (histaug.splitfiles); a PCam sample is copied and a folder's
images decoded `chunk` images at a time. PCam files are checked as in histaug.pcam (shapes,
dtypes, and the MD5 recorded at download).

Splits: PCam brings its own train/valid/test. Sources without splits (a Kaggle folder, or a
sample drawn from one PCam split) get a seeded, stratified split.
Input folders are only ever read, and only files that really lie inside data_dir (no symlinks out).

Labels are integers 0..K-1 (K from config labels.classes, else the largest label + 1); anything
else stops ingest naming the ids. When the data's own labels are used (labels.source data, or
auto with more than one class), every class must reach the training split (and, for sources split
here, every split). Images go through histaug.images.read_rgb (explicit per-mode conversion).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .images import UnsupportedImage, read_rgb, summarize_conversions
from .pcam import PATCH_SHAPE, open_pcam_split, pcam_filename, verify_checksums
from .pcam import PCAM_MD5, PCAM_RECORD, download_pcam_file, md5sum, validate_pcam_pair  # noqa: F401 (public here too)
from .splitfiles import CHUNK, copy_rows, link_split, split_writers
from .utils import PipelineError, progress, write_csv

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


# --------------------------------------------------------------------------- Kaggle folder


def detect_format(data_dir: str | os.PathLike) -> str:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PipelineError(f"data_dir={str(data_dir)!r} does not exist or is not a folder; set `data_dir` to a Kaggle-layout "
                            "folder (images/ + labels.csv) or a folder with the PCam HDF5 files, or to null for PCam download.")
    if (data_dir / "labels.csv").exists():
        return "folder"
    if all((data_dir / pcam_filename(s, k)).exists() for s in SPLITS for k in "xy"):
        return "pcam"
    raise PipelineError(f"data_dir={str(data_dir)!r}: found neither labels.csv (Kaggle layout: images/<id>.jpg|png|tif + "
                        "labels.csv with columns id,label) nor the six camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 files.")


def scan_folder(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read labels.csv and match every row to exactly one image file. Returns id, label, path."""
    data_dir = Path(data_dir)
    labels_csv = data_dir / "labels.csv"
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many kinds
        raise PipelineError(f"{labels_csv}: cannot be read as CSV ({exc})") from exc
    missing_cols = {"id", "label"} - set(table.columns)
    if missing_cols:
        raise PipelineError(f"{labels_csv}: missing column(s) {sorted(missing_cols)}; expected a header 'id,label' "
                            f"(found {list(table.columns)})")
    if (table["id"].str.strip() == "").any():
        lines = (np.flatnonzero(table["id"].str.strip() == "") + 2).tolist()
        raise PipelineError(f"{labels_csv}: empty id on line(s) {lines[:5]}; every row needs the image's id (file name "
                            "without extension)")
    if table["id"].duplicated().any():
        dup = table.loc[table["id"].duplicated(), "id"].tolist()
        raise PipelineError(f"{labels_csv}: duplicate ids, e.g. {dup[:5]}; each image must appear once")
    table["label"] = parse_int_labels(table["label"], table["id"].tolist(), str(labels_csv))
    image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise PipelineError(f"{image_dir}: folder not found; a Kaggle-layout data_dir holds images/<id>.jpg|png|tif")
    files = {}
    for p in image_dir.iterdir():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise PipelineError(f"{image_dir}: two files for id {p.stem!r} ({files[p.stem].name}, {p.name}); keep one")
            files[p.stem] = p
    ids = set(table["id"])
    no_image = [i for i in table["id"] if i not in files]
    no_row = sorted(set(files) - ids)
    if no_image:
        raise PipelineError(f"{labels_csv}: {len(no_image)} row(s) have no image in {image_dir}, e.g. {no_image[:5]}. "
                            "Add the images or remove those rows.")
    if no_row:
        raise PipelineError(f"{image_dir}: {len(no_row)} image(s) have no row in {labels_csv}, e.g. {no_row[:5]}. "
                            "Add rows (id,label) for them or move them out of images/.")
    check_inside(data_dir, [labels_csv] + [files[i] for i in table["id"]])
    table["path"] = [str(files[i]) for i in table["id"]]
    return table.reset_index(drop=True)


def check_inside(data_dir: str | os.PathLike, paths) -> None:
    """Reject files of data_dir (symlinks, or entries of a symlinked images/) that resolve outside it."""
    data_dir = Path(data_dir)
    root = data_dir.resolve()
    outside = []
    for p in paths:
        target = Path(p).resolve()
        if not target.is_relative_to(root):
            try:
                shown = Path(p).relative_to(data_dir)
            except ValueError:
                shown = Path(p)
            outside.append(f"{shown} -> {target}")
    if outside:
        raise PipelineError(f"data_dir={str(data_dir)!r}: {len(outside)} file(s) are symlinks that point outside data_dir "
                            f"({root}), e.g. {outside[:5]}. Only files inside data_dir are read: copy the files into "
                            "data_dir, or point data_dir at the folder that really holds them.")


# --------------------------------------------------------------------------- labels


def declared_classes(classes) -> tuple[int | None, list[str] | None]:
    """config labels.classes -> (K, class names): null -> (None, None) (K = largest label + 1);
    an integer K -> (K, None); a list of names -> (its length, the names)."""
    if classes is None:
        return None, None
    if isinstance(classes, str) and classes.strip().isdigit():  # `--config labels='{classes: 3}'` gives text
        classes = int(classes)
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer, list, tuple)):
        raise PipelineError(f"config labels.classes={classes!r}: expected null, an integer K or a list of class names")
    if isinstance(classes, (list, tuple)):
        names = [str(c) for c in classes]
        if len(names) < 2 or len(set(names)) < len(names):
            raise PipelineError(f"config labels.classes={classes!r}: a list needs at least two distinct class names")
        return len(names), names
    if int(classes) < 2:
        raise PipelineError(f"config labels.classes={classes!r}: needs at least 2 classes")
    return int(classes), None


def parse_int_labels(values, ids: list[str], where: str) -> np.ndarray:
    """Labels as int64, rejecting anything that is not a whole number >= 0 (1.5, -1, abc, empty, NaN)."""
    text = pd.Series(list(values), dtype=object).map(lambda v: "" if v is None else str(v).strip())
    num = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(num) | (num != np.floor(num)) | (num < 0) | (num > 2**31 - 1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = [f"{ids[i]} ({text.iloc[i]!r})" for i in rows[:5]]
        raise PipelineError(f"{where}: {len(rows)} label(s) are not integers 0..K-1: {', '.join(shown)}. "
                            "Labels must be whole numbers 0, 1, ..., K-1 (no decimals, negatives, text or empty "
                            "cells); fix those rows.")
    return num.astype(np.int64)


def check_label_values(labels: np.ndarray, ids, classes=None, where: str = "labels") -> int:
    """Check labels are integers in 0..K-1 and return K (config labels.classes, else max label + 1)."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"{where}: labels have dtype {labels.dtype}; they must be integers 0..K-1")
    neg = np.flatnonzero(labels < 0)
    if len(neg):
        raise PipelineError(f"{where}: {len(neg)} negative label(s), ids {[ids[i] for i in neg[:5]]} "
                            f"(values {labels[neg[:5]].tolist()}); labels must be integers 0..K-1, fix those rows.")
    k_declared, _ = declared_classes(classes)
    k = k_declared if k_declared is not None else (int(labels.max()) + 1 if labels.size else 0)
    high = np.flatnonzero(labels >= k)
    if len(high):
        raise PipelineError(f"{where}: {len(high)} label(s) >= {k}, ids {[ids[i] for i in high[:5]]} (values "
                            f"{labels[high[:5]].tolist()}), but config labels.classes={classes!r} declares {k} classes "
                            f"(labels 0..{k - 1}). Fix those labels or set labels.classes to the real number of classes.")
    return k


def _k_origin(classes) -> str:
    return "from config labels.classes" if classes is not None else "the largest label + 1; set labels.classes to declare it"


def check_classes_present(labels: np.ndarray, k: int, classes=None, where: str = "training split") -> None:
    """Every class 0..K-1 must occur in `labels` (the training split)."""
    missing = sorted(set(range(k)) - set(np.unique(labels).tolist()))
    if missing:
        raise PipelineError(f"{where}: class(es) {missing} have no training images, but K={k} ({_k_origin(classes)}). "
                            "Every class 0..K-1 must be present in the training split: add images of those classes, "
                            "renumber the labels 0..K-1 without gaps, or correct labels.classes.")


def check_classes_splittable(labels: np.ndarray, ids, k: int, fractions: dict, classes=None,
                             where: str = "labels") -> None:
    """For sources split here: every class 0..K-1 needs one image per split with a non-zero fraction."""
    labels = np.asarray(labels)
    parts = [n for n, f in fractions.items() if float(f) > 0]
    need = len(parts)
    short = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) < need:
            short.append(f"class {c}: {len(rows)} image(s) (ids {[ids[i] for i in rows[:5]]})" if len(rows)
                         else f"class {c}: no images")
    if short:
        raise PipelineError(f"{where}: every class 0..{k - 1} (K={k}, {_k_origin(classes)}) needs at least {need} "
                            f"image(s), one for each split {parts} of config split.fractions, but {'; '.join(short)}. "
                            "Add images of those classes, renumber the labels 0..K-1 without gaps, or correct "
                            "labels.classes.")


def uses_data_labels(labels_cfg: dict | None, labels: np.ndarray) -> bool:
    """True when later stages train on the data's own labels (labels.source data, or auto with >1 class)."""
    mode = (labels_cfg or {}).get("source", "data")
    return mode == "data" or (mode == "auto" and len(np.unique(labels)) > 1)


class ImageProblems:
    """Images that cannot be ingested, collected over every block and reported together in one error."""

    def __init__(self):
        self.rejected: list[str] = []
        self.unreadable: list[str] = []
        self.wrong: list[str] = []

    def raise_if_any(self, folder) -> None:
        if self.rejected:
            raise PipelineError(f"{len(self.rejected)} image(s) in {folder} have a pixel format that cannot be "
                                f"converted safely to 8-bit RGB, e.g. {self.rejected[:5]}; save them as 8-bit RGB PNG "
                                "or JPEG (one frame each).")
        if self.unreadable:
            raise PipelineError(f"{len(self.unreadable)} file(s) in {folder} cannot be read as images, e.g. "
                                f"{self.unreadable[:5]}; replace or remove them.")
        if self.wrong:
            raise PipelineError(f"{len(self.wrong)} image(s) are not 96x96 RGB patches, e.g. {self.wrong[:5]}; "
                                "PCam-style patches are 96x96 px. Crop or resize them before ingest.")


def decode_images(paths: list[str], problems: ImageProblems, conversions: dict | None = None, bar=None) -> np.ndarray:
    """One block of images as 96x96 RGB uint8 (histaug.images.read_rgb); images that fail are noted
    in `problems` (their rows stay zero) and `conversions` gets {conversion note: [ids]}."""
    out = np.zeros((len(paths),) + PATCH_SHAPE, dtype=np.uint8)
    for i, p in enumerate(paths):
        if bar is not None:
            bar.update(1)
        try:
            arr, note = read_rgb(p)
        except UnsupportedImage as exc:
            problems.rejected.append(f"{Path(p).stem} ({exc.mode}: {exc.reason})")
            continue
        except Exception as exc:
            problems.unreadable.append(f"{Path(p).name} ({exc})")
            continue
        if note and conversions is not None:
            conversions.setdefault(note, []).append(Path(p).stem)
        if arr.shape != PATCH_SHAPE:
            problems.wrong.append(f"{Path(p).name} {arr.shape[1]}x{arr.shape[0]}")
            continue
        out[i] = arr
    return out


def load_folder_images(paths: list[str], desc: str = "read images", conversions: dict | None = None) -> np.ndarray:
    """Read images as 96x96 RGB uint8 (histaug.images.read_rgb), checking each is 96x96.

    Unsupported modes, unreadable files and wrong sizes are collected and reported in one error
    listing the first offending files. `conversions`, when given, is filled with
    {conversion note: [ids]} for every image whose pixels were converted (16-bit, alpha, CMYK, ...).
    Holds every image in memory: ingest decodes folders block by block (write_folder_splits).
    """
    problems = ImageProblems()
    bar = progress(total=len(paths), desc=desc, unit="img")
    out = decode_images(paths, problems, conversions, bar)
    bar.close()
    problems.raise_if_any(Path(paths[0]).parent if paths else "the image list")
    return out


def write_folder_splits(table: pd.DataFrame, parts: dict, out_dir: Path, chunk: int = CHUNK,
                        conversions: dict | None = None, desc: str = "read images") -> None:
    """Decode the folder's images `chunk` at a time, in table order, into the split files.

    `parts` maps split -> sorted table rows, so the rows of one block that go to one split fill
    consecutive positions of its file. Problems of every image are collected first; with any,
    nothing is written and one error lists them.
    """
    n = len(table)
    split_of, pos_of = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    for k, split in enumerate(SPLITS):
        split_of[parts[split]] = k
        pos_of[parts[split]] = np.arange(len(parts[split]))
    paths, labels, ids = table["path"].tolist(), table["label"].to_numpy(), table["id"].to_numpy()
    problems = ImageProblems()
    bar = progress(total=n, desc=desc, unit="img")
    files = {s: out_dir / f"{s}.h5" for s in SPLITS}
    with split_writers(files, {s: labels[parts[s]] for s in SPLITS}, {s: ids[parts[s]] for s in SPLITS}) as xs:
        for start in range(0, n, chunk):
            block = decode_images(paths[start:start + chunk], problems, conversions, bar)
            where = split_of[start:start + len(block)]
            for k, split in enumerate(SPLITS):
                sel = np.flatnonzero(where == k)
                if len(sel):
                    pos = pos_of[start + sel]
                    xs[split][pos[0]:pos[-1] + 1] = block[sel]
        bar.close()
        problems.raise_if_any(Path(paths[0]).parent if paths else out_dir)


# --------------------------------------------------------------------------- splitting


def stratified_split(labels: np.ndarray, fractions: dict, seed: int) -> dict[str, np.ndarray]:
    """Seeded, stratified split of positions 0..N-1 into the named parts (sorted indices per part).

    Per class, counts are allocated by largest remainder so every part keeps the class ratio. A class
    with at least one image per part with a non-zero fraction gets at least one in each of them
    (taken from the largest parts; the allocation is unchanged when every part already has one).
    """
    labels = np.asarray(labels)
    names = list(fractions)
    fr = np.array([float(fractions[n]) for n in names])
    if np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise PipelineError(f"config split.fractions={fractions}: fractions must be >= 0 and sum to 1")
    rng = np.random.default_rng(seed)
    parts = {n: [] for n in names}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        nonzero = fr > 0
        counts = _allocate_min(len(idx), fr, 1 if len(idx) >= nonzero.sum() else 0, nonzero)
        start = 0
        for n, k in zip(names, counts):
            parts[n].append(idx[start:start + k])
            start += k
    return {n: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for n, v in parts.items()}


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    raw = fractions * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts


def _allocate_min(n: int, weights: np.ndarray, minimum: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """`_allocate`, but every eligible part gets at least `minimum` (needs n >= minimum x eligible parts).

    Parts below the minimum are pinned to it and the rest is re-allocated over the others by weight,
    until no part is below. When no part falls below the minimum the result is `_allocate`'s.
    """
    weights = np.asarray(weights, np.float64)
    eligible = weights > 0 if eligible is None else np.asarray(eligible, bool)
    counts = _allocate(n, weights)  # exactly the plain allocation (weights as the callers pass them)
    if minimum <= 0 or np.all(counts[eligible] >= minimum):
        return counts
    pinned = np.zeros(len(weights), bool)
    while True:
        low = eligible & ~pinned & (counts < minimum)
        if not low.any():
            return counts
        pinned |= low
        rest = n - minimum * int(pinned.sum())
        free = np.where(pinned, 0.0, weights)
        share = free if free.sum() > 0 else np.where(pinned, weights, 0.0)
        counts = _allocate(rest, share / share.sum()) + np.where(pinned, minimum, 0)


def stratified_subset(labels: np.ndarray, fraction: float | None, count: int | None, seed: int,
                      min_per_class: int = 1, ids=None) -> np.ndarray:
    """Seeded, stratified subset of positions; `count` (absolute) wins over `fraction`.

    Every class keeps at least `min_per_class` images (config subset.min_per_class): classes whose
    proportional share falls below it are raised to it, the others give up the difference. With no
    class below the minimum the allocation is the plain proportional one. `ids` (same order as
    labels) only name images in error messages.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if count is not None:
        if not 0 < count <= n:
            raise PipelineError(f"config subset.count={count}: must be between 1 and the training split size {n}")
        fraction = count / n
    elif fraction is None or not 0 < fraction <= 1:
        raise PipelineError(f"config subset.fraction={fraction}: must be in (0, 1]")
    target = int(round(fraction * n)) if count is None else int(count)
    rng = np.random.default_rng(seed)
    classes, class_counts = np.unique(labels, return_counts=True)
    m = int(min_per_class)
    short = [(c, k) for c, k in zip(classes.tolist(), class_counts.tolist()) if k < m]
    if short:
        def named(c):
            rows = np.flatnonzero(labels == c)[:5]
            return f" (ids {[ids[i] for i in rows]})" if ids is not None else ""
        detail = "; ".join(f"class {c} has {k}{named(c)}" for c, k in short)
        raise PipelineError(f"config subset.min_per_class={m}: the training split has fewer than {m} image(s) of some "
                            f"class: {detail}. Lower subset.min_per_class to {min(k for _, k in short)} or add training "
                            "images of that class.")
    if target < m * len(classes):
        key = f"subset.count={count}" if count is not None else f"subset.fraction={fraction}"
        need = m * len(classes)
        raise PipelineError(f"config {key} selects {target} of {n} training images, fewer than {len(classes)} classes x "
                            f"subset.min_per_class={m} = {need}. Raise subset.count to at least {need} (or "
                            f"subset.fraction to at least {need / n:.4g}), or lower subset.min_per_class.")
    want = _allocate_min(target, class_counts / n, m)
    chosen = []
    for c, k in zip(classes, want):
        idx = np.flatnonzero(labels == c)
        chosen.append(np.sort(rng.choice(idx, size=min(k, len(idx)), replace=False)))
    return np.sort(np.concatenate(chosen))


def subset_count(n: int, subset_cfg: dict, log=None) -> int | None:
    """config subset.count, or, when subset.fraction of the n training images falls below subset.min_count, that
    floor (all n images when there are fewer); None = the plain fraction. A small folder then still trains its
    classifiers on enough images, while a large one keeps its fraction."""
    count, floor, fraction = subset_cfg.get("count"), subset_cfg.get("min_count"), subset_cfg.get("fraction")
    if count is not None or not floor or fraction is None or round(float(fraction) * n) >= int(floor):
        return count
    if log:
        log.info("subset: subset.fraction=%s gives %d of %d training images, below subset.min_count=%d; taking %d",
                 fraction, round(float(fraction) * n), n, int(floor), min(int(floor), n))
    return min(int(floor), n)


def write_train_subset(labels_csv, subset_cfg: dict, out_csv, log=None) -> pd.DataFrame:
    """Rule subset: the seeded, stratified part of the training split (index, id, label) -> out_csv.
    Reads only the four columns it needs of labels.csv."""
    table = pd.read_csv(labels_csv, usecols=["split", "index", "id", "label"], dtype={"id": str})
    train = table[table["split"] == "train"].sort_values("index")
    count = subset_count(len(train), subset_cfg, log)
    rows = stratified_subset(train["label"].to_numpy(), subset_cfg.get("fraction"), count,
                             int(subset_cfg["seed"]), min_per_class=int(subset_cfg.get("min_per_class", 1)),
                             ids=train["id"].tolist())
    chosen = train.iloc[rows][["index", "id", "label"]]
    write_csv(chosen, out_csv)
    if log:
        log.info("subset: %d of %d training images, per class %s", len(chosen), len(train),
                 chosen["label"].value_counts().sort_index().to_dict())
    return chosen


# --------------------------------------------------------------------------- canonical output


def ingest(data_cfg: dict, out_dir: str | os.PathLike, log=None, chunk: int = CHUNK, threads: int = 1) -> pd.DataFrame:
    """Write results_dir/data/{split}.h5 and source_labels.csv from the configured source.

    data_cfg keys: data_dir (None = PCam in pcam_dir), pcam_dir, pcam.sample, split.{fractions,seed},
    labels.{source,classes} (optional; default: the data's own labels, K = largest label + 1).
    Memory stays bounded: whole PCam splits are linked, not copied (histaug.splitfiles.link_split);
    samples and folder images go through `chunk` images at a time. `threads` files are checksummed
    at once.
    """
    out_dir = Path(out_dir)
    data_dir = data_cfg.get("data_dir")
    source_dir = Path(data_dir) if data_dir else Path(data_cfg["pcam_dir"])
    fmt = detect_format(source_dir) if data_dir else "pcam"
    conversions: dict[str, list[str]] = {}
    if data_dir and fmt == "pcam":
        check_inside(source_dir, [source_dir / pcam_filename(s, k) for s in SPLITS for k in "xy"])
    sample = (data_cfg.get("pcam") or {}).get("sample")
    if fmt == "folder":
        rows_out, source = _ingest_folder(data_cfg, source_dir, out_dir, chunk, conversions)
    elif sample:
        _verify_pcam(source_dir, [sample["split"]], threads, log)
        rows_out, source = _ingest_pcam_sample(data_cfg, source_dir, out_dir, chunk)
    else:
        _verify_pcam(source_dir, SPLITS, threads, log)
        rows_out, source = _ingest_pcam_splits(data_cfg, source_dir, out_dir)
    table = pd.concat(rows_out, ignore_index=True)
    for split in SPLITS:
        if (table["split"] == split).sum() == 0:
            raise PipelineError(f"split {split!r} came out empty; the data has too few images for config split.fractions")
    write_csv(table, out_dir / "source_labels.csv")
    if log:
        for line in summarize_conversions(conversions):
            log.warning("%s", line)
        counts = table.groupby(["split", "source_label"]).size().to_dict()
        log.info("ingested %s: %s", source, counts)
    return table


def _verify_pcam(source_dir: Path, splits, threads: int, log) -> None:
    """MD5 of the PCam files that carry a download record (histaug.pcam.verify_checksums)."""
    files = [source_dir / pcam_filename(s, k) for s in splits for k in "xy"]
    verify_checksums([p for p in files if p.exists()], threads=threads, log=log)


def _ingest_folder(data_cfg: dict, source_dir: Path, out_dir: Path, chunk: int, conversions: dict):
    split_cfg, labels_cfg = data_cfg["split"], data_cfg.get("labels") or {}
    classes, fractions = labels_cfg.get("classes"), split_cfg["fractions"]
    table = scan_folder(source_dir)
    labels, ids = table["label"].to_numpy(), table["id"].tolist()
    k = check_label_values(labels, ids, classes, str(source_dir / "labels.csv"))
    if uses_data_labels(labels_cfg, labels):
        check_classes_splittable(labels, ids, k, fractions, classes, str(source_dir / "labels.csv"))
    parts = stratified_split(labels, fractions, split_cfg["seed"])
    write_folder_splits(table, parts, out_dir, chunk, conversions, desc=f"read {source_dir.name}")
    rows_out = []
    for split in SPLITS:
        sub = table.iloc[parts[split]]
        rows_out.append(pd.DataFrame({"split": split, "index": np.arange(len(sub)), "id": sub["id"].to_numpy(),
                                      "source_label": sub["label"].to_numpy()}))
    return rows_out, f"Kaggle-layout folder {source_dir}"


def _ingest_pcam_sample(data_cfg: dict, source_dir: Path, out_dir: Path, chunk: int):
    """A seeded, stratified sample of one PCam split, split here and copied `chunk` images at a time."""
    sample, split_cfg, labels_cfg = data_cfg["pcam"]["sample"], data_cfg["split"], data_cfg.get("labels") or {}
    classes, fractions = labels_cfg.get("classes"), split_cfg["fractions"]
    n_parts = sum(1 for f in fractions.values() if float(f) > 0)
    name = sample["split"]
    x_ds, y, fx = open_pcam_split(source_dir, name)
    rows_out = []
    try:
        where = str(source_dir / pcam_filename(name, "y"))
        pool_ids = [f"pcam_{name}_{i}" for i in range(len(y))]
        k = check_label_values(y, pool_ids, classes, where)
        used = uses_data_labels(labels_cfg, y)
        n = int(sample["n"])
        if n > len(y):
            raise PipelineError(f"config pcam.sample.n={n}: the PCam {name} split has only {len(y)} "
                                "images; lower pcam.sample.n")
        if used:
            check_classes_splittable(y, pool_ids, k, fractions, classes, where)
            if n < k * n_parts:
                raise PipelineError(f"config pcam.sample.n={n}: {k} classes x {n_parts} splits need at least "
                                    f"{k * n_parts} images (one per class in every split); raise pcam.sample.n")
        picked = stratified_subset(y, None, n, int(sample.get("seed", 0)),
                                   min_per_class=n_parts if used else 0, ids=pool_ids)
        y_mem = y[picked]
        ids = np.array([f"pcam_{name}_{i}" for i in picked], dtype=object)
        parts = stratified_split(y_mem, fractions, split_cfg["seed"])
        bar = progress(total=len(picked), desc=f"copy PCam {name} sample", unit="img")
        for split in SPLITS:
            idx = parts[split]
            copy_rows(out_dir / f"{split}.h5", x_ds, picked[idx], y_mem[idx], ids[idx], chunk=chunk, bar=bar)
            rows_out.append(pd.DataFrame({"split": split, "index": np.arange(len(idx)), "id": ids[idx],
                                          "source_label": y_mem[idx]}))
        bar.close()
    finally:
        fx.close()
    return rows_out, f"PCam {name} split, stratified sample of {sample['n']} (seed {sample.get('seed', 0)})"


def _ingest_pcam_splits(data_cfg: dict, source_dir: Path, out_dir: Path):
    """PCam's own three splits: labels checked, pixels linked (external links to the source x files)."""
    labels_cfg = data_cfg.get("labels") or {}
    classes = labels_cfg.get("classes")
    ys = {}
    for split in SPLITS:  # labels first: check them all before writing anything
        _, ys[split], fx = open_pcam_split(source_dir, split)
        fx.close()
    k = None
    if classes is None:  # K from the largest label over all splits
        k = int(max((y.max() for y in ys.values() if len(y)), default=-1)) + 1
    for split, y in ys.items():
        where = str(source_dir / pcam_filename(split, "y"))
        check_label_values(y, [f"pcam_{split}_{i}" for i in range(len(y))], classes if k is None else k, where)
    k = k if k is not None else declared_classes(classes)[0]
    if uses_data_labels(labels_cfg, ys["train"]):
        check_classes_present(ys["train"], k, classes, str(source_dir / pcam_filename("train", "y")))
    rows_out = []
    for split, y in ys.items():
        rows = np.arange(len(y))
        ids = np.array([f"pcam_{split}_{i}" for i in rows], dtype=object)
        link_split(out_dir / f"{split}.h5", source_dir / pcam_filename(split, "x"), y, ids)
        rows_out.append(pd.DataFrame({"split": split, "index": rows, "id": ids, "source_label": y}))
    return rows_out, f"PCam HDF5 files in {source_dir} (linked, not copied)"
