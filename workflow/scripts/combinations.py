"""Rule combinations: count the training subset's attribute combinations, filter the rare ones, assign
contrastive classes; writes the filtered subset the attribute-conditioned generators train on."""
from histaug.combinations import build_attribute_subset
from histaug.rulekit import run_rule


def main(smk, log):
    build_attribute_subset(smk.input.attributes, smk.input.meta, smk.input.subset, dict(smk.params.rare),
                           smk.output.combinations, smk.output.subset, log)


run_rule(snakemake, main)  # noqa: F821
