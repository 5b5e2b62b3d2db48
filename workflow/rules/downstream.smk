# Stage 4, downstream: one job per (architecture, training set, seed); checkpoint chosen on the
# real validation split, metrics on the real test split.


def synthetic_input(wildcards):
    v = wildcards.variant
    if v == "real":
        return []
    gen = v.removeprefix("real+").removesuffix(".selected")
    return [f"{R}/samples/{gen}/{'selected' if v.endswith('.selected') else 'all'}.h5"]


rule train_classifier:
    input:
        **DATA_INPUTS,
        valid=f"{R}/data/valid.h5",
        test=f"{R}/data/test.h5",
        synthetic=synthetic_input,
    output:
        metrics=f"{R}/downstream/{{arch}}/{{variant}}/seed{{seed}}/metrics.json",
        predictions=f"{R}/downstream/{{arch}}/{{variant}}/seed{{seed}}/predictions.csv",
        model=f"{R}/downstream/{{arch}}/{{variant}}/seed{{seed}}/model.pt",
    params:
        downstream=DS,
        compute=config["compute"],
    threads: THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/train_classifier/{{arch}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_classifier/{{arch}}/{{variant}}/seed{{seed}}.tsv"
    script:
        "../scripts/train_classifier.py"
