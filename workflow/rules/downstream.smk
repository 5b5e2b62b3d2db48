# Stage 4, downstream: one job per (architecture, training set, seed), or per (architecture, training set)
# with downstream.seeds_in_one_job; checkpoint chosen on the real validation split, metrics on the real test split.


rule train_classifier:
    input:
        **DATA_INPUTS,
        valid=f"{R}/data/valid.h5",
        test=f"{R}/data/test.h5",
        synthetic=synthetic_input,
        head=head_input,
    output:
        metrics=classifier_run_files("output", "metrics.json"),
        predictions=classifier_run_files("output", "predictions.csv"),
        model=classifier_run_files("output", "model.pt"),
    params:
        downstream=DS,
        compute=config["compute"],
        divergence=config.get("divergence", {}),
    threads: THREADS
    resources:
        gpu=1,
    log:
        classifier_run_files("logs", None),
    benchmark:
        classifier_run_files("benchmarks", None)
    conda:
        HISTAUG_ENV
    script:
        "../scripts/train_classifier.py"


rule pixel_baseline:
    """The sanity row: logistic regression on downsampled pixels (histaug/pixel_baseline.py), trained on the same
    real subset and scored on the same test split as the CNNs."""
    input:
        **DATA_INPUTS,
        valid=f"{R}/data/valid.h5",
        test=f"{R}/data/test.h5",
    output:
        metrics=f"{R}/downstream/pixel_logreg/real/seed{{seed}}/metrics.json",
        predictions=f"{R}/downstream/pixel_logreg/real/seed{{seed}}/predictions.csv",
        model=f"{R}/downstream/pixel_logreg/real/seed{{seed}}/model.npz",
    params:
        baseline=DS.get("sanity_baseline") or {},
    log:
        f"{R}/logs/pixel_baseline/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/pixel_baseline/seed{{seed}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/pixel_baseline.py"
