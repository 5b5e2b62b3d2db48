# Stage 2-3, generators and sampling: train -> sample (normal and truncated latents) -> select (truncated, confidence >= lambda).


rule train_generator:
    input:
        unpack(model_selection_inputs),
        unpack(attribute_inputs),
        **DATA_INPUTS,
    output:
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
        history=f"{R}/generators/{{gen}}/history.csv",
    params:
        gen_cfg=lambda wc: config["generators"][wc.gen],
        condition=lambda wc: generator_condition(config, wc.gen),
        attribute=lambda wc: condition_attribute(config, wc.gen),
        compute=config["compute"],
        divergence=config.get("divergence", {}),
        state_dir=state_folder,
        inception_precision=config["evaluation"].get("inception_precision", "fp32"),
    threads: THREADS
    priority: 10  # the longest chain starts here: schedule generators before classifiers
    resources:
        gpu=generator_gpus,  # generators.<gen>.gpus (default 1); more than 1 trains with torchrun
    log:
        f"{R}/logs/train_generator/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/train_generator/{{gen}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/train_generator.py"


rule sample:
    """Class-conditioned generators, one job (one model load): `normal.h5` from plain normal latents (what the
    generator learned; FID, SA off) and `truncated.h5` from latents truncated at sampling.tau (the first half
    of selective augmentation)."""
    input:
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
        labels_meta=f"{R}/data/labels.json",
        subset=f"{R}/data/train_subset.csv",
    output:
        normal=f"{R}/samples/{{gen}}/normal.h5",
        truncated=f"{R}/samples/{{gen}}/truncated.h5",
    wildcard_constraints:
        gen=only(CLASS_GENERATORS),
    params:
        sampling=config["sampling"],
        tau=float(config["sampling"]["tau"]),
        compute=config["compute"],
    threads: THREADS
    resources:
        gpu=1,  # the GPU when the cluster profile submits it; no limit locally unless --resources gpu=N
    priority: 10
    log:
        f"{R}/logs/sample/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{gen}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/sample.py"


rule sample_attributes:
    """Attribute-conditioned generators: `normal.h5` for requested attribute levels drawn from the kept
    training combinations (attributes.sampling), with the levels stored next to the images."""
    input:
        unpack(attribute_inputs),
        checkpoint=f"{R}/generators/{{gen}}/checkpoint.pt",
    output:
        normal=f"{R}/samples/{{gen}}/normal.h5",
    wildcard_constraints:
        gen=only(ATTR_GENERATORS),
    params:
        sampling=config["sampling"],
        attribute_sampling=ATTR.get("sampling") or {},
        attribute=lambda wc: condition_attribute(config, wc.gen),
        compute=config["compute"],
    threads: THREADS
    resources:
        gpu=1,
    priority: 10
    log:
        f"{R}/logs/sample/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{gen}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/sample_attributes.py"


rule select:
    input:
        samples=f"{R}/samples/{{gen}}/truncated.h5",
        selector=selector_input,
    output:
        selected=f"{R}/samples/{{gen}}/selected.h5",
        table=f"{R}/samples/{{gen}}/selection.csv",
    params:
        selection=config["selection"],
        selector=lambda wc: selector_for(config, wc.gen),
        compute=config["compute"],
    threads: THREADS
    resources:
        gpu=1,  # the GPU when the cluster profile submits it; no limit locally unless --resources gpu=N
    priority: 10
    log:
        f"{R}/logs/select/{{gen}}.log",
    benchmark:
        f"{R}/benchmarks/select/{{gen}}.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/select.py"
