"""Attribute error (AttributeGAN §3, Table 1): how well images show the attribute levels they were made for.

An attribute predictor (:class:`histaug.classify.AttributePredictor`, a timm ResNet18 with one
classification head per attribute, trained on the real training split, best epoch on the
validation split) reads every image. Per attribute, the predicted level is the expected value of
its softmax, normalised to [0, 1] (E[level] / (L - 1)); the attribute error is the mean squared
error between it and the requested (for real images: the annotated) level, normalised the same way.

* "Real images": the real test split against its own levels (the paper's held-out row).
* one row per attribute-conditioned generator: its samples against the levels they were
  requested with (``samples/<G>/normal.h5`` stores them as ``levels``).
* oracle error, where the attributes are pixel-derived: the images are measured again with the
  same measurement and the training quantile edges (:func:`histaug.attribute_table.measure_levels`)
  and compared with the requested levels in the same way. For real images it is 0 up to the
  resizing to the measurement size; for generated images it says whether the pixels carry the
  attribute without a learned predictor in between.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


REAL = "Real images"
COLUMNS = ["model", "attribute", "error", "oracle_error", "n_images"]


def normalised(levels: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Levels (N, A) divided by L - 1 per attribute (so they lie in [0, 1])."""
    return np.asarray(levels, np.float64) / np.maximum(np.asarray(counts, np.float64) - 1, 1)


def predict_probabilities(model, meta: Mapping, images: np.ndarray, compute: Mapping | None = None,
                          batch_size: int = 256) -> np.ndarray:
    """Per-attribute softmax blocks (N, L_1 + ... + L_A) of an attribute predictor for uint8 images."""
    from .classifier_training import multi_head_softmax
    from .classify import _batched, _prepare_inference

    precision, channels_last = _prepare_inference(model, dict(compute) if compute else None, None)
    return _batched(model, meta, images, batch_size, precision, channels_last, multi_head_softmax(meta["heads"]))


def select_blocks(prob: np.ndarray, counts: Sequence[int], keep: Sequence[int]) -> np.ndarray:
    """The softmax blocks of the attributes ``keep`` (indices) out of all attributes' blocks."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.concatenate([prob[:, starts[a]:starts[a] + counts[a]] for a in keep], axis=1)


def sample_attribute_names(path) -> list[str]:
    """The attributes a generated-image file was made for (its ``attribute_names``)."""
    import h5py

    with h5py.File(path, "r") as f:
        return [str(n.decode() if isinstance(n, bytes) else n) for n in f.attrs["attribute_names"]]


def error_rows(model_name: str, prob: np.ndarray, requested: np.ndarray, counts: Sequence[int], names: Sequence[str],
               oracle_levels: np.ndarray | None = None) -> list[dict]:
    """One row per attribute: the predictor's error and (with ``oracle_levels``) the oracle error."""
    from .classifier_training import attribute_mse

    requested = np.asarray(requested, np.int64)
    errors = attribute_mse(prob, requested, counts)
    oracle = None
    if oracle_levels is not None:
        oracle = np.mean((normalised(oracle_levels, counts) - normalised(requested, counts)) ** 2, axis=0)
    return [{"model": model_name, "attribute": name, "error": float(errors[a]),
             "oracle_error": float(oracle[a]) if oracle is not None else None, "n_images": int(len(requested))}
            for a, name in enumerate(names)]


def error_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def wide_table(table: pd.DataFrame, labels: Mapping[str, str] | None = None, oracle: bool = True) -> pd.DataFrame:
    """Rows = models (Real images first), one column per attribute error (and per oracle error)."""
    labels = dict(labels or {})
    order = list(dict.fromkeys(table["model"]))
    out = pd.DataFrame({"model": [labels.get(m, m) for m in order]})
    for attribute in dict.fromkeys(table["attribute"]):  # a single-attribute run has one attribute's row only
        part = table[table["attribute"] == attribute].set_index("model")
        out[attribute] = [part["error"].get(m, np.nan) for m in order]
        if oracle and part["oracle_error"].notna().any():
            out[f"{attribute} (oracle)"] = [part["oracle_error"].get(m, np.nan) for m in order]
    out["images"] = [int(table[table["model"] == m]["n_images"].iloc[0]) for m in order]
    return out


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("0.") else text  # the paper's style: .021


def to_markdown(wide: pd.DataFrame, digits: int = 3) -> str:
    headers = ["Model", *[c for c in wide.columns if c not in ("model", "images")], "Images"]
    lines = ["| " + " | ".join(headers) + " |", "| --- | " + " | ".join([":---:"] * (len(headers) - 2)) + " | ---: |"]
    for _, row in wide.iterrows():
        cells = [str(row["model"])] + [_cell(row[c], digits) for c in headers[1:-1]] + [str(int(row["images"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(wide: pd.DataFrame, caption: str, label: str = "tab:attribute_error", digits: int = 3) -> str:
    cols = [c for c in wide.columns if c not in ("model", "images")]
    esc = lambda t: str(t).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")  # noqa: E731
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
           r"\begin{tabular}{l" + "c" * len(cols) + "r}", r"\toprule",
           " & ".join(["Model", *map(esc, cols), "Images"]) + r" \\", r"\midrule"]
    for _, row in wide.iterrows():
        out.append(" & ".join([esc(row["model"]), *(_cell(row[c], digits) for c in cols), str(int(row["images"]))]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
