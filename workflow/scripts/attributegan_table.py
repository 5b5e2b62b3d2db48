"""Rule attributegan_table: AttributeGAN Table 1 (FID and attribute error per model, Real images first)."""
import pandas as pd

from histaug.attributegan_table import build_table, to_latex, to_markdown
from histaug.rulekit import run_rule
from histaug.provenance import of_rule, write_stamped, write_table
from histaug.utils import read_json


def main(smk, log):
    names = read_json(smk.input.meta)["names"]
    errors = pd.read_csv(smk.input.errors)
    table = build_table(smk.params.rows, dict(zip(smk.params.runs, smk.input.generation)), errors, names)
    prov = of_rule(smk)
    write_table(table, smk.output.csv, prov)
    write_stamped(to_markdown(table), smk.output.md, prov)
    write_stamped(to_latex(table, "FID and attribute error (MSE of the normalised predicted level) per model, as in "
                           "AttributeGAN's Table 1; per-attribute runs: FID averaged, each judged on its own attribute."),
                  smk.output.tex, prov)
    log.info("AttributeGAN Table 1:\n%s", to_markdown(table))


run_rule(snakemake, main)  # noqa: F821
