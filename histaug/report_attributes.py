"""The "Attributes" section of report.md: where the levels came from, the rare-combination filter, the
attribute-error table and the attribute sweeps."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from .utils import read_json


def attribute_section(report_dir: str | Path, meta_json: str | Path, combinations_csv: str | Path,
                      error_md: str | Path, sweeps: Sequence[str | Path], table1_md: str | Path | None = None,
                      figure3: str | Path | None = None) -> str:
    """Markdown for report.md; figure and file links relative to ``report_dir``."""
    report_dir = Path(report_dir)
    meta = read_json(meta_json)
    combos = pd.read_csv(combinations_csv)

    def rel(p) -> str:
        return os.path.relpath(Path(p), report_dir)

    out = ["## Attributes", ""]
    rows = ["| Attribute | Levels | Level names | Source | Training counts per level |", "| --- | ---: | --- | --- | --- |"]
    for a in meta["attributes"]:
        rows.append(f"| {a['name']} | {a['levels']} | {', '.join(a['level_names'])} | {a['source']} | "
                    f"{', '.join(str(c) for c in a.get('train_counts', []))} |")
    out += rows + [""]
    if meta.get("source") == "pixels":
        out += ["Levels are quantile bins of pixel measurements (histaug/attribute_measures.py) fitted on the training "
                "split; they are measured properties of the patches, not pathologist annotations.", ""]
    kept, frequent = int(combos["kept"].sum()), int(combos["frequent"].sum())
    out += [f"Rare-combination filter on the training subset: {len(combos)} attribute combinations, {frequent} frequent, "
            f"{kept} kept for the attribute-conditioned generators (images per combination "
            f"{int(combos['count'].min())}..{int(combos['count'].max())}); "
            f"[combinations.csv]({rel(combinations_csv)}).", ""]
    out += ["### Attribute error", "",
            "Mean squared error between the level an attribute predictor (ResNet18, one head per attribute, trained on "
            "the real training split) reads from an image and the level the image was made for (real images: its own "
            "level), levels normalised to [0, 1]; lower is better. *Oracle*: the same images measured again on their "
            "pixels with the training thresholds and edges (pixel attributes only).", "",
            Path(error_md).read_text(), f"Files: [attribute_error.csv]({rel(Path(error_md).with_suffix('.csv'))})", ""]
    if table1_md:
        from .attributegan_table import paper_markdown

        out += ["### AttributeGAN Table 1", "",
                "FID against the real reference split and attribute error per model, shaped like the paper's Table 1. "
                "A model trained once per attribute (BigGAN) is one row: its FID is the mean over its runs and each "
                "attribute's error comes from the run made for that attribute.", "",
                Path(table1_md).read_text(), f"Files: [attributegan_table1.csv]({rel(Path(table1_md).with_suffix('.csv'))}), "
                f"[.tex]({rel(Path(table1_md).with_suffix('.tex'))})", "",
                "**The paper's numbers** (AttributeGAN, MICCAI 2021, Table 1: bladder-cancer patches at 512 px, attributes "
                "from pathologist reports). They are quoted for comparison, not produced by this run:", "",
                paper_markdown(), ""]
    if figure3:
        out += ["### Ablation figure (AttributeGAN Fig. 3)", "",
                f"![AttributeGAN Fig. 3: one attribute's levels per model]({rel(figure3)})", ""]
    if sweeps:
        out += ["### Attribute sweeps", "",
                "Each figure steps one attribute through its levels with the latent fixed per column and the other "
                "attributes at the most frequent training combination; under each generated row, real training images "
                "with that level.", ""]
        for p in sweeps:
            out += [f"![{Path(p).stem}]({rel(p)})", ""]
    return "\n".join(out)
