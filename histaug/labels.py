"""The label table every later stage reads: results_dir/data/labels.csv (+ labels.json).

labels.csv columns: split, index, id, source_label, nuclear_density, density_level, label
  `label` is the class used downstream: the data's own label (labels.source = data) or the derived
  nuclear-density class (labels.source = derived; `auto` derives when the data has a single class).
labels.json records the choice, the fitted median / level edges, the class names and num_classes K.
The pixels are read in slabs (`chunk` images), never a whole split at once.
With the data's labels, K and the names come from config labels.classes (null: K = largest label
+ 1; an integer K; or a list of names, K = its length); unnamed classes are PCam's
["normal", "tumour"] when K = 2, else "class 0", "class 1", ...
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pandas as pd

from . import attributes
from .data import check_classes_present, check_label_values, declared_classes
from .io import check_linked_source
from .utils import PipelineError, progress, write_csv, write_json

PCAM_CLASS_NAMES = ["normal", "tumour"]
CHUNK = 2048  # images per slab: 57 MiB of pixels, about 0.4 GiB while measured
DENSITY_BATCH = 256  # images per colour-deconvolution pass inside a slab


def split_density(path, chunk: int = CHUNK, workers: int = 1, bar=None) -> np.ndarray:
    """Nuclear density of every image of a split file, read `chunk` images at a time.

    `workers` threads measure slabs side by side (numpy releases the GIL in the heavy steps); at
    most `workers` slabs are in memory. Each image's value does not depend on the slabs it was
    read in, so any chunk size gives the same numbers.
    """
    with h5py.File(path, "r") as f:
        x = f["x"]
        starts = range(0, x.shape[0], chunk)
        out = np.empty(x.shape[0], np.float64)

        def measure(start: int) -> int:
            slab = x[start:start + chunk]  # h5py serialises reads itself
            out[start:start + len(slab)] = attributes.nuclear_density(slab, batch=min(chunk, DENSITY_BATCH))
            if bar is not None:
                bar.update(len(slab))
            return start

        if workers <= 1:
            for start in starts:
                measure(start)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(measure, starts))
    return out


def count_split_images(path) -> int:
    with h5py.File(path, "r") as f:
        if "x" not in f:
            raise PipelineError(f"{path}: expected a dataset 'x', found {list(f.keys())}; rerun the ingest rule")
        check_linked_source(f, path)
        return int(f["x"].shape[0])


def build_label_table(source_labels_csv, split_files: dict, labels_cfg: dict, out_csv, out_json, log=None,
                      chunk: int = CHUNK, workers: int = 1) -> pd.DataFrame:
    table = pd.read_csv(source_labels_csv, dtype={"id": str})
    density = np.empty(len(table))
    masks = {split: (table["split"] == split).to_numpy() for split in split_files}
    for split, path in split_files.items():  # every count first: a mismatch stops before the long pass
        n = count_split_images(path)
        if n != masks[split].sum():
            raise PipelineError(f"{path}: {n} images but {source_labels_csv} lists {masks[split].sum()} for split "
                                f"{split}; rerun the ingest rule")
    bar = progress(total=int(sum(m.sum() for m in masks.values())), desc="nuclear density", unit="img")
    for split, path in split_files.items():
        mask = masks[split]
        density[np.flatnonzero(mask)[table.loc[mask, "index"].to_numpy()]] = split_density(path, chunk, workers, bar)
    bar.close()
    table["nuclear_density"] = density
    train = (table["split"] == "train").to_numpy()
    edges = attributes.fit_levels(density[train], int(labels_cfg.get("derived_levels", 4)))
    table["density_level"] = attributes.assign_levels(density, edges)
    median = float(np.median(density[train]))

    mode = labels_cfg.get("source", "data")
    n_source_classes = table.loc[train, "source_label"].nunique()
    if mode == "auto":
        mode = "derived" if n_source_classes < 2 else "data"
    if mode == "derived":
        table["label"] = attributes.derived_binary_label(density, median)
        class_names = list(attributes.DERIVED_CLASS_NAMES)
        note = attributes.DERIVED_LABEL_NOTE
    elif mode == "data":
        if n_source_classes < 2:
            raise PipelineError(f"config labels.source='data' but the training split has a single class "
                                f"({sorted(table.loc[train, 'source_label'].unique())}); a classifier cannot be trained. "
                                "Set labels.source to 'derived' or 'auto'.")
        table["label"] = table["source_label"]
        classes = labels_cfg.get("classes")
        k = check_label_values(table["label"].to_numpy(), table["id"].tolist(), classes, str(source_labels_csv))
        check_classes_present(table.loc[train, "label"].to_numpy(), k, classes, f"{source_labels_csv} (train)")
        class_names = data_class_names(k, classes)
        note = "Labels are the data's own labels."
    else:
        raise PipelineError(f"config labels.source={mode!r}: expected data, derived or auto")
    for split in table["split"].unique():
        counts = table.loc[table["split"] == split, "label"].value_counts().sort_index().to_dict()
        if log:
            log.info("split %s: %d images, label counts %s", split, (table["split"] == split).sum(), counts)
    write_csv(table, out_csv)
    write_json({"label_source": mode, "class_names": class_names, "num_classes": len(class_names),
                "label_note": note, "train_median_density": median, "density_level_edges": edges.tolist()}, out_json)
    return table


def data_class_names(k: int, classes=None) -> list[str]:
    """Names of the data's K classes: labels.classes when it is a list, else PCam's for K = 2."""
    _, names = declared_classes(classes)
    if names is not None:
        return list(names)
    return list(PCAM_CLASS_NAMES) if k == 2 else [f"class {i}" for i in range(k)]


def load_split_labels(labels_csv, split: str) -> np.ndarray:
    """Labels of one split in file order."""
    t = pd.read_csv(labels_csv, usecols=["split", "index", "label"])
    t = t[t["split"] == split].sort_values("index")
    return t["label"].to_numpy(np.int64)


def load_labelled(split_h5, labels_csv, split: str, subset_csv=None):
    """Images of one split with the downstream labels; optionally only the rows in subset_csv."""
    from .io import read_images

    labels = load_split_labels(labels_csv, split)
    if subset_csv is None:
        x, _ = read_images(split_h5)
        if len(x) != len(labels):
            raise PipelineError(f"{split_h5}: {len(x)} images but {labels_csv} has {len(labels)} rows for {split}; "
                                "rerun from the ingest rule")
        return x, labels
    rows = pd.read_csv(subset_csv)["index"].to_numpy(np.int64)
    x, _ = read_images(split_h5, indices=rows)
    return x, labels[rows]
