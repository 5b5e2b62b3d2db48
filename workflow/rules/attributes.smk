# Multi-attribute conditions (AttributeGAN): attribute levels per image -> rare-combination filter on the
# training subset -> (attribute-conditioned generators, rule train_generator) -> attribute-error evaluator
# and table, attribute sweeps. Present when attributes.source is set.

if ATTR.get("source"):

    rule attributes:
        input:
            h5=expand(f"{R}/data/{{split}}.h5", split=SPLITS),
            labels=f"{R}/data/labels.csv",
            source=attribute_source_files,
        output:
            csv=report(f"{R}/data/attributes.csv", caption="../report/attributes.rst", category="Data"),
            meta=f"{R}/data/attributes.json",
        params:
            attributes=ATTR,
        log:
            f"{R}/logs/attributes.log",
        benchmark:
            f"{R}/benchmarks/attributes.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attributes.py"

    rule combinations:
        input:
            attributes=f"{R}/data/attributes.csv",
            meta=f"{R}/data/attributes.json",
            subset=f"{R}/data/train_subset.csv",
        output:
            combinations=report(f"{R}/data/combinations.csv", caption="../report/combinations.rst", category="Data"),
            subset=f"{R}/data/attribute_subset.csv",
        params:
            rare=ATTR.get("rare") or {},
        log:
            f"{R}/logs/combinations.log",
        benchmark:
            f"{R}/benchmarks/combinations.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/combinations.py"

    rule attribute_predictor:
        input:
            train=f"{R}/data/train.h5",
            valid=f"{R}/data/valid.h5",
            attributes=f"{R}/data/attributes.csv",
            meta=f"{R}/data/attributes.json",
        output:
            model=f"{R}/attributes/predictor/model.pt",
            history=f"{R}/attributes/predictor/history.csv",
        params:
            predictor=ATTR["predictor"],
            compute=config["compute"],
            divergence=config.get("divergence", {}),
        threads: THREADS
        resources:
            gpu=1,
        log:
            f"{R}/logs/attribute_predictor.log",
        benchmark:
            f"{R}/benchmarks/attribute_predictor.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attribute_predictor.py"

    rule attribute_error:
        input:
            predictor=f"{R}/attributes/predictor/model.pt",
            test=f"{R}/data/test.h5",
            attributes=f"{R}/data/attributes.csv",
            meta=f"{R}/data/attributes.json",
            samples=expand(f"{R}/samples/{{gen}}/normal.h5", gen=ATTR_GENERATORS),
        output:
            csv=report(f"{R}/tables/attribute_error.csv", caption="../report/attribute_error.rst", category="Evaluation"),
            md=f"{R}/tables/attribute_error.md",
            tex=f"{R}/tables/attribute_error.tex",
        params:
            generators=ATTR_GENERATORS,
            labels={g: config["generators"][g].get("label", g) for g in ATTR_GENERATORS},
            compute=config["compute"],
        threads: THREADS
        resources:
            gpu=1,
        log:
            f"{R}/logs/attribute_error.log",
        benchmark:
            f"{R}/benchmarks/attribute_error.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attribute_error.py"

    rule attribute_sweep:
        """AttributeGAN Fig. 2: per attribute, its levels with z fixed per column, and real images per level."""
        input:
            checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
            train=f"{R}/data/train.h5",
            meta=f"{R}/data/attributes.json",
            subset=f"{R}/data/attribute_subset.csv",
        output:
            [report(f"{R}/figures/attribute_sweep_{{gen}}_{a}.png", caption="../report/attribute_sweep.rst",
                    category="Evaluation", subcategory="Attribute sweeps") for a in ATTR_NAMES],
        params:
            label=lambda wc: config["generators"][wc.gen].get("label", wc.gen),
            columns=ATTR.get("sweep_columns", 6),
            compute=config["compute"],
        threads: THREADS
        log:
            f"{R}/logs/attribute_sweep/{{gen}}.log",
        benchmark:
            f"{R}/benchmarks/attribute_sweep/{{gen}}.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attribute_sweep.py"


# AttributeGAN Table 1 and Fig. 3 (report.attributegan_table / attributegan_figure): rows are config entries of
# attribute-conditioned generators (AG_ROWS, AG_FIGURE_RUNS in common.smk).
if AG_ROWS:

    rule attributegan_table:
        input:
            generation=[f"{R}/metrics/{r}/generation.json" for row in AG_ROWS for r in row["runs"]],
            errors=f"{R}/tables/attribute_error.csv",
            meta=f"{R}/data/attributes.json",
        output:
            csv=report(f"{R}/tables/attributegan_table1.csv", caption="../report/attributegan_table.rst",
                       category="Evaluation"),
            md=f"{R}/tables/attributegan_table1.md",
            tex=f"{R}/tables/attributegan_table1.tex",
        params:
            rows=AG_ROWS,
            runs=[r for row in AG_ROWS for r in row["runs"]],
        log:
            f"{R}/logs/attributegan_table.log",
        benchmark:
            f"{R}/benchmarks/attributegan_table.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attributegan_table.py"

    rule attributegan_figure:
        input:
            checkpoints=[f"{R}/generators/{run}/checkpoint.pt" for _, run in AG_FIGURE_RUNS],
            train=f"{R}/data/train.h5",
            meta=f"{R}/data/attributes.json",
            subset=f"{R}/data/attribute_subset.csv",
        output:
            report(f"{R}/figures/attributegan_fig3.png", caption="../report/attributegan_figure.rst", category="Evaluation"),
        params:
            rows=[(label, condition_attribute(config, run) is not None) for label, run in AG_FIGURE_RUNS],
            attribute=AG_FIGURE["attribute"],
            per_level=AG_FIGURE.get("per_level", 2),
            compute=config["compute"],
        threads: THREADS
        log:
            f"{R}/logs/attributegan_figure.log",
        benchmark:
            f"{R}/benchmarks/attributegan_figure.tsv"
        conda:
            HISTAUG_ENV
        script:
            "../scripts/attributegan_figure.py"
