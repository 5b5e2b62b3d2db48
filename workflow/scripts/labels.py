"""Rule labels: nuclear density per image, its levels, and the label used downstream.

Images are read in slabs; the rule's threads measure that many slabs side by side."""
from pathlib import Path

from histaug.labels import build_label_table
from histaug.rulekit import run_rule


def main(smk, log):
    splits = {Path(p).stem: p for p in smk.input.h5}
    build_label_table(smk.input.table, splits, dict(smk.params.labels), smk.output.csv, smk.output.meta, log,
                      workers=int(smk.threads or 1))


run_rule(snakemake, main)  # noqa: F821
