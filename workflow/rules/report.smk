# Stage 6, report: tables shaped like HViTGAN's Table 1, generation table, figures, report.md.

# HViTGAN Fig. 3 (report.tsne; TSNE_PANELS in common.smk): no panels = no rule, no figure.
TSNE_OUTPUTS = dict(
    figure=report(f"{R}/figures/tsne_loss_scenarios.png", caption="../report/tsne.rst", category="Evaluation"),
    scores=report(f"{R}/tables/tsne_scores.csv", caption="../report/tsne_scores.rst", category="Evaluation"),
    scores_md=f"{R}/tables/tsne_scores.md",
    coordinates=f"{R}/tables/tsne_coordinates.csv",
) if TSNE_PANELS else {}


# Attributes (when attributes.source is set): the table of levels, the combinations, the attribute-error
# table and one sweep figure per attribute-conditioned generator and attribute.
ATTRIBUTE_REPORT_INPUTS = dict(
    attributes_meta=f"{R}/data/attributes.json",
    combinations=f"{R}/data/combinations.csv",
    attribute_error=f"{R}/tables/attribute_error.csv",
    attribute_error_md=f"{R}/tables/attribute_error.md",
    sweeps=[f"{R}/figures/attribute_sweep_{g}_{a}.png" for g in SWEEP_GENERATORS for a in ATTR_NAMES],
) if ATTR.get("source") else {}
if AG_ROWS:
    ATTRIBUTE_REPORT_INPUTS.update(attributegan_table=f"{R}/tables/attributegan_table1.md",
                                   attributegan_figure=f"{R}/figures/attributegan_fig3.png")


rule report:
    input:
        metrics=[f"{d}/metrics.json" for d in DOWNSTREAM_RUNS],
        predictions=[f"{d}/predictions.csv" for d in DOWNSTREAM_RUNS],
        generation=expand(f"{R}/metrics/{{gen}}/generation.json", gen=GENERATORS),
        samples=expand(f"{R}/samples/{{gen}}/normal.h5", gen=CLASS_GENERATORS),
        selected=expand(f"{R}/samples/{{gen}}/selected.h5", gen=CLASS_GENERATORS),
        **ATTRIBUTE_REPORT_INPUTS,
        labels_meta=f"{R}/data/labels.json",
        labels=f"{R}/data/labels.csv",
        subset=f"{R}/data/train_subset.csv",
        histories=expand(f"{R}/generators/{{gen}}/history.csv", gen=GENERATORS),
        **{f"tsne_{k}": v for k, v in TSNE_OUTPUTS.items()},
    output:
        # every file write_report makes is declared here; tables and figures also go into `snakemake --report`
        report=f"{R}/report.md",
        downstream=report(f"{R}/tables/downstream.csv", caption="../report/downstream.rst", category="Downstream"),
        summary=report(f"{R}/tables/downstream_summary.csv", caption="../report/downstream_summary.rst",
                       category="Downstream"),
        summary_md=f"{R}/tables/downstream_summary.md",
        summary_tex=f"{R}/tables/downstream_summary.tex",
        generation=report(f"{R}/tables/generation.csv", caption="../report/generation.rst", category="Generators"),
        generation_md=f"{R}/tables/generation.md",
        gains=report(f"{R}/tables/augmentation_gain.csv", caption="../report/augmentation_gain.rst",
                     category="Downstream"),
        gains_md=f"{R}/tables/augmentation_gain.md",
        gains_tex=f"{R}/tables/augmentation_gain.tex",
        synthetic=report(f"{R}/tables/synthetic_only.csv", caption="../report/synthetic_only.rst", category="Downstream"),
        synthetic_md=f"{R}/tables/synthetic_only.md",
        per_class=report(f"{R}/tables/downstream_per_class.csv", caption="../report/per_class.rst", category="Downstream"),
        per_class_md=f"{R}/tables/downstream_per_class.md",
        roc=report(f"{R}/figures/roc_curves.png", caption="../report/roc_curves.rst", category="Downstream"),
        auc_bars=report(f"{R}/figures/auc_bars.png", caption="../report/auc_bars.rst", category="Downstream"),
        training=report(f"{R}/figures/generator_training.png", caption="../report/generator_training.rst",
                        category="Generators"),
        samples=[report(f"{R}/figures/samples_{g}.png", caption="../report/samples.rst", category="Generators",
                        subcategory=g) for g in CLASS_GENERATORS],
        selected=[report(f"{R}/figures/selected_{g}.png", caption="../report/selected.rst", category="Generators",
                         subcategory=g) for g in CLASS_GENERATORS],
    params:
        generators=GENERATORS,
        class_generators=CLASS_GENERATORS,
        attribute_generators=ATTR_GENERATORS,
        attribute_names=ATTR_NAMES,
        archs=REPORT_ARCHS,
        selectors={g: selector_for(config, g) for g in CLASS_GENERATORS},
        config=config,
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/report.py"


if TSNE_PANELS:

    rule tsne:
        """One t-SNE per panel of report.tsne (or one joint map), points coloured by intended class, and a
        separation score per panel computed in feature space (histaug/embedding.py)."""
        input:
            samples=[p.samples_file(R) for p in TSNE_PANELS],
            labels_meta=f"{R}/data/labels.json",
            features=(f"{R}/downstream/{FS['arch']}/real/seed{FS['seed']}/model.pt"
                      if TSNE_SETTINGS["features"] == "classifier" else f"{R}/metrics/inception.json"),
        output:
            **TSNE_OUTPUTS,
        params:
            panels=[{"samples": p.samples, "label": p.label} for p in TSNE_PANELS],
            settings=TSNE_SETTINGS,
            compute=config["compute"],
            batch_size=EV.get("batch_size", 64),
        threads: THREADS
        resources:
            gpu=1,  # the GPU when the cluster profile submits it; no limit locally unless --resources gpu=N
        log:
            f"{R}/logs/tsne.log",
        benchmark:
            f"{R}/benchmarks/tsne.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/tsne.py"
