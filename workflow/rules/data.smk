# Stage 1, data: download (PCam only) -> ingest -> labels (+ pixel-derived attributes) -> subset.

PCAM_RAW = [f"{config['pcam_dir']}/camelyonpatch_level_2_split_{s}_{k}.h5"
            for s in (config["pcam"]["splits"] if not (config["pcam"].get("sample")) else [config["pcam"]["sample"]["split"]])
            for k in ("x", "y")]


def ingest_inputs(wildcards):
    """PCam files to download, or the user's folder (read only, never written)."""
    if config.get("data_dir"):
        d = Path(config["data_dir"])
        return [str(d / "labels.csv")] if (d / "labels.csv").exists() else sorted(str(p) for p in d.glob("camelyonpatch_level_2_split_*.h5"))
    return PCAM_RAW


rule download_pcam:
    output:
        f"{config['pcam_dir']}/camelyonpatch_level_2_split_{{split}}_{{xy}}.h5",
    wildcard_constraints:
        xy="x|y",
    params:
        url=lambda wc: config["pcam"]["url"],
        dest=config["pcam_dir"],
    log:
        f"{config['pcam_dir']}/logs/download_{{split}}_{{xy}}.log",
    benchmark:
        f"{config['pcam_dir']}/logs/download_{{split}}_{{xy}}.benchmark.tsv"
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
    log:
        f"{R}/logs/ingest.log",
    benchmark:
        f"{R}/benchmarks/ingest.tsv"
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
    log:
        f"{R}/logs/labels.log",
    benchmark:
        f"{R}/benchmarks/labels.tsv"
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
    script:
        "../scripts/subset.py"
