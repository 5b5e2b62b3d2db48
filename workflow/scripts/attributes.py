"""Rule attributes: one attribute-level row per image (pixels, annotation file or pathologist reports)."""
from pathlib import Path

from histaug.attribute_table import build_attribute_table
from histaug.rulekit import run_rule


def main(smk, log):
    splits = {Path(p).stem: p for p in smk.input.h5}
    build_attribute_table(dict(smk.params.attributes), smk.input.labels, splits, smk.output.csv, smk.output.meta, log)


run_rule(snakemake, main)  # noqa: F821
