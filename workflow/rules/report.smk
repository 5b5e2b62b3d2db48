# Stage 6, report: tables shaped like HViTGAN's Table 1, generation table, figures, report.md.

DOWNSTREAM_RUNS = expand(f"{R}/downstream/{{arch}}/{{variant}}/seed{{seed}}", arch=DS["archs"], variant=VARIANTS, seed=DS["seeds"])


rule report:
    input:
        metrics=[f"{d}/metrics.json" for d in DOWNSTREAM_RUNS],
        predictions=[f"{d}/predictions.csv" for d in DOWNSTREAM_RUNS],
        generation=expand(f"{R}/metrics/{{gen}}/generation.json", gen=GENERATORS),
        samples=expand(f"{R}/samples/{{gen}}/all.h5", gen=GENERATORS),
        selected=expand(f"{R}/samples/{{gen}}/selected.h5", gen=GENERATORS),
        labels_meta=f"{R}/data/labels.json",
        labels=f"{R}/data/labels.csv",
        subset=f"{R}/data/train_subset.csv",
    output:
        report=f"{R}/report.md",
        downstream=f"{R}/tables/downstream.csv",
        summary_md=f"{R}/tables/downstream_summary.md",
        summary_tex=f"{R}/tables/downstream_summary.tex",
        generation=f"{R}/tables/generation.csv",
    params:
        generators=GENERATORS,
        config=config,
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    script:
        "../scripts/report.py"
