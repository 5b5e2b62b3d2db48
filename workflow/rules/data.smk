# Stage 1, data: download (PCam only) -> ingest -> labels (+ pixel-derived attributes) -> subset.

rule download_pcam:
    output:
        f"{config['pcam_dir']}/camelyonpatch_level_2_split_{{split}}_{{xy}}.h5",
    wildcard_constraints:
        xy="x|y",
    params:
        url=lambda wc: config["pcam"]["url"],
        dest=output_folder,
    log:
        f"{config['pcam_dir']}/logs/download_{{split}}_{{xy}}.log",
    benchmark:
        f"{config['pcam_dir']}/logs/download_{{split}}_{{xy}}.benchmark.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/download_pcam.py"


rule ingest:
    input:
        ingest_inputs,
    output:
        h5=expand(f"{R}/data/{{split}}.h5", split=SPLITS),
        table=f"{R}/data/source_labels.csv",
    params:
        data_dir=config.get("data_dir"),
        pcam_dir=config["pcam_dir"],
        pcam=config["pcam"],
        split=config["split"],
        labels=config["labels"],
    threads: 2  # checksums of the PCam files side by side
    resources:
        mem_mb=2000,  # streams in slabs: < 1 GB at full PCam size (benchmarks/bench_data.py)
    log:
        f"{R}/logs/ingest.log",
    benchmark:
        f"{R}/benchmarks/ingest.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/ingest.py"


rule labels:
    input:
        h5=expand(f"{R}/data/{{split}}.h5", split=SPLITS),
        table=f"{R}/data/source_labels.csv",
    output:
        csv=f"{R}/data/labels.csv",
        meta=f"{R}/data/labels.json",
    params:
        labels=config["labels"],
    threads: 2  # pixel measurements of slabs side by side
    resources:
        mem_mb=2000,  # streams in slabs: 0.7 GB at full PCam size (benchmarks/bench_data.py)
    log:
        f"{R}/logs/labels.log",
    benchmark:
        f"{R}/benchmarks/labels.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/labels.py"


rule subset:
    input:
        f"{R}/data/labels.csv",
    output:
        f"{R}/data/train_subset.csv",
    params:
        subset=config["subset"],
    log:
        f"{R}/logs/subset.log",
    benchmark:
        f"{R}/benchmarks/subset.tsv"
    conda:
        HISTAUG_ENV
    script:
        "../scripts/subset.py"
