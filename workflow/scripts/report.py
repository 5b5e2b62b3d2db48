"""Rule report: tables (CSV, Markdown, LaTeX), figures and report.md."""
from pathlib import Path

import pandas as pd

from histaug.report import write_report
from histaug.provenance import of_rule
from histaug.report_attributes import attribute_section
from histaug.rulekit import run_rule
from histaug.utils import read_json


def main(smk, log):
    cfg = smk.params.config
    meta = read_json(smk.input.labels_meta)
    labels = pd.read_csv(smk.input.labels, usecols=["split"])
    counts = labels["split"].value_counts().to_dict()
    context = {
        "label_source": meta["label_source"], "label_note": meta["label_note"], "class_names": meta["class_names"],
        "dataset": cfg.get("data_dir") or ("PCam sample: " + str(cfg["pcam"]["sample"]) if cfg["pcam"].get("sample") else "PCam"),
        "n_train_subset": len(pd.read_csv(smk.input.subset)), "n_train": counts.get("train", 0),
        "n_valid": counts.get("valid", 0), "n_test": counts.get("test", 0),
        "architectures": list(smk.params.archs), "trainsets": list(cfg["downstream"]["trainsets"]),
        "seeds": cfg["downstream"]["seeds"],
        "generator_labels": {g: c["label"] for g, c in cfg["generators"].items() if c.get("label")},
        "trainset_labels": dict(cfg["report"].get("trainset_labels") or {}),
        "config_name": cfg["results_dir"], "generators": list(smk.params.generators),
        "grid_per_class": cfg["report"].get("grid_per_class", 8),
        "tau": cfg["sampling"]["tau"], "lambda": cfg["selection"]["lambda"],
        "selector": ", ".join(f"{g}: {k}" for g, k in smk.params.selectors.items())
        + f" (baseline = {cfg['selection'].get('selector_arch')}, seed {cfg['selection'].get('selector_seed')})",
        "downstream_epochs": cfg["downstream"]["epochs"], "downstream_image_size": cfg["downstream"]["image_size"],
    }
    context["provenance"] = of_rule(smk)
    if hasattr(smk.input, "attributes_meta"):
        context["extra_sections"] = [attribute_section(
            Path(smk.output.report).parent, smk.input.attributes_meta, smk.input.combinations, smk.input.attribute_error_md,
            list(smk.input.sweeps), getattr(smk.input, "attributegan_table", None),
            getattr(smk.input, "attributegan_figure", None))]
    samples = {g: {"generated": a, "selected": s}
               for g, a, s in zip(smk.params.class_generators, smk.input.samples, smk.input.selected)}
    # rule tsne's files, present when report.tsne lists panels
    tsne = {k: getattr(smk.input, f"tsne_{k}") for k in ("figure", "scores", "coordinates")} if hasattr(smk.input, "tsne_figure") else None
    write_report(Path(smk.output.report).parent, list(smk.input.metrics), list(smk.input.predictions),
                 list(smk.input.generation), samples, context, tsne=tsne,
                 histories=dict(zip(smk.params.generators, smk.input.histories)))


run_rule(snakemake, main)  # noqa: F821
