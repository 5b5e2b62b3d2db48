# Stage 5, evaluation: FID/KID in Inception space (torch-fidelity, offline weights) and in the
# feature space of the pipeline's own real-data classifier. Real features are cached per split.

rule inception_weights:
    output:
        f"{R}/metrics/inception.json",
    params:
        inception=EV["inception"],
    log:
        f"{R}/logs/inception_weights.log",
    benchmark:
        f"{R}/benchmarks/inception_weights.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/inception_weights.py"


rule real_features:
    input:
        images=f"{R}/data/{{split}}.h5",
        inception=f"{R}/metrics/inception.json",
        classifier=f"{R}/downstream/{FS['arch']}/real/seed{FS['seed']}/model.pt",
    output:
        inception=f"{R}/metrics/real/{{split}}_{{size}}px_inception.npz",
        classifier=f"{R}/metrics/real/{{split}}_{{size}}px_classifier.npz",
    wildcard_constraints:
        size=r"\d+",
    params:
        evaluation=EV,
        compute=config["compute"],
    threads: THREADS
    resources:
        gpu=1,  # the GPU when the cluster profile submits it; no limit locally unless --resources gpu=N
    log:
        f"{R}/logs/real_features/{{split}}_{{size}}px.log",
    benchmark:
        f"{R}/benchmarks/real_features/{{split}}_{{size}}px.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/real_features.py"


rule evaluate_generator:
    input:
        unpack(selected_input),
        samples=f"{R}/samples/{{gen}}/normal.h5",
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
        inception=f"{R}/metrics/inception.json",
        classifier=f"{R}/downstream/{FS['arch']}/real/seed{FS['seed']}/model.pt",
        real_inception=real_features_file("inception"),
        real_classifier=real_features_file("classifier"),
        test=f"{R}/data/test.h5",
        labels=f"{R}/data/labels.csv",
    output:
        f"{R}/metrics/{{gen}}/generation.json",
    params:
        evaluation=EV,
        compute=config["compute"],
        gen_cfg=lambda wc: config["generators"][wc.gen],
        selection=config["selection"],
        selector=lambda wc: selector_for(config, wc.gen) if wc.gen in CLASS_GENERATORS else None,
        has_head=has_class_head,
        sampling=config["sampling"],
    threads: THREADS
    resources:
        gpu=1,  # the GPU when the cluster profile submits it; no limit locally unless --resources gpu=N
    log:
        f"{R}/logs/evaluate_generator/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_generator/{{gen}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/evaluate_generator.py"
