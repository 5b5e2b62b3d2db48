# Stage 2-3, generators and sampling: train -> sample (truncated latents) -> select (confidence >= lambda).

DATA_INPUTS = dict(
    train=f"{R}/data/train.h5",
    labels=f"{R}/data/labels.csv",
    labels_meta=f"{R}/data/labels.json",
    subset=f"{R}/data/train_subset.csv",
)


rule train_generator:
    input:
        **DATA_INPUTS,
    output:
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
        history=f"{R}/generators/{{gen}}/history.csv",
    params:
        gen_cfg=lambda wc: config["generators"][wc.gen],
        compute=config["compute"],
        state_dir=lambda wc: f"{R}/generators/{wc.gen}/state",
    threads: THREADS
    priority: 10  # the longest chain starts here: schedule generators before classifiers
    resources:
        gpu=1,
    log:
        f"{R}/logs/train_generator/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/train_generator/{{gen}}.tsv"
    script:
        "../scripts/train_generator.py"


rule sample:
    input:
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
        labels_meta=f"{R}/data/labels.json",
        subset=f"{R}/data/train_subset.csv",
    output:
        f"{R}/samples/{{gen}}/all.h5",
    params:
        sampling=config["sampling"],
        compute=config["compute"],
    threads: THREADS
    priority: 10
    log:
        f"{R}/logs/sample/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{gen}}.tsv"
    script:
        "../scripts/sample.py"


def selector_input(wildcards):
    """`baseline`: the real-data classifier; `head`: the generator's own classification head."""
    if config["selection"]["selector"] == "head":
        return f"{R}/generators/{wildcards.gen}/checkpoint.pt"
    return f"{R}/downstream/{SEL_ARCH}/real/seed{SEL_SEED}/model.pt"


rule select:
    input:
        samples=f"{R}/samples/{{gen}}/all.h5",
        selector=selector_input,
    output:
        selected=f"{R}/samples/{{gen}}/selected.h5",
        table=f"{R}/samples/{{gen}}/selection.csv",
    params:
        selection=config["selection"],
        compute=config["compute"],
    threads: THREADS
    priority: 10
    log:
        f"{R}/logs/select/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/select/{{gen}}.tsv"
    script:
        "../scripts/select.py"
