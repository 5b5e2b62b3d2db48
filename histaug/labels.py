"""The label table every later stage reads: results_dir/data/labels.csv (+ labels.json).

labels.csv columns: split, index, id, source_label, nuclear_density, density_level, label
  `label` is the class used downstream: the data's own label (labels.source = data) or the derived
  nuclear-density class (labels.source = derived; `auto` derives when the data has a single class).
labels.json records the choice, the fitted median / level edges, the class names and num_classes K.
With the data's labels, K and the names come from config labels.classes (null: K = largest label
+ 1; an integer K; or a list of names, K = its length); unnamed classes are PCam's
["normal", "tumour"] when K = 2, else "class 0", "class 1", ...
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import attributes
from .data import check_classes_present, check_label_values, declared_classes
from .io import read_images
from .utils import PipelineError, progress, write_csv, write_json

PCAM_CLASS_NAMES = ["normal", "tumour"]


def build_label_table(source_labels_csv, split_files: dict, labels_cfg: dict, out_csv, out_json, log=None) -> pd.DataFrame:
    table = pd.read_csv(source_labels_csv, dtype={"id": str})
    density = np.empty(len(table))
    for split, path in progress(list(split_files.items()), desc="nuclear density"):
        mask = (table["split"] == split).to_numpy()
        x, _ = read_images(path)
        if len(x) != mask.sum():
            raise PipelineError(f"{path}: {len(x)} images but {source_labels_csv} lists {mask.sum()} for split {split}; "
                                "rerun the ingest rule")
        density[np.flatnonzero(mask)[table.loc[mask, "index"].to_numpy()]] = attributes.nuclear_density(x)
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
