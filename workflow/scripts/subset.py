"""Rule subset: seeded, stratified part of the training split, written out for auditing."""
from histaug.data import write_train_subset
from histaug.rulekit import run_rule


def main(smk, log):
    write_train_subset(smk.input[0], smk.params.subset, smk.output[0], log)


run_rule(snakemake, main)  # noqa: F821
