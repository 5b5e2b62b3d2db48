"""Rule labels: nuclear density per image, its levels, and the label used downstream."""
from pathlib import Path

from histaug.labels import build_label_table
from histaug.rulekit import run_rule


def main(smk, log):
    splits = {Path(p).stem: p for p in smk.input.h5}
    build_label_table(smk.input.table, splits, dict(smk.params.labels), smk.output.csv, smk.output.meta, log)


run_rule(snakemake, main)  # noqa: F821
