"""Rule attribute_sweep: AttributeGAN Fig. 2 for one attribute-conditioned generator, one figure per attribute."""
import pandas as pd

from histaug.attribute_figures import most_frequent_combination, plot_attribute_sweep
from histaug.generator_checkpoint import load_generator
from histaug.io import read_images
from histaug.rulekit import run_rule
from histaug.utils import get_device, read_json


def main(smk, log):
    meta = read_json(smk.input.meta)
    names = meta["names"]
    device = get_device(smk.params.compute)
    generator = load_generator(smk.input.checkpoint, device=device)
    subset = pd.read_csv(smk.input.subset)
    levels = subset[[f"{n}_level" for n in names]].to_numpy()
    base = most_frequent_combination(levels)
    x, _ = read_images(smk.input.train, indices=subset["index"].to_numpy())
    for a, (attribute, out) in enumerate(zip(names, smk.output)):
        level_names = meta["attributes"][a]["level_names"]
        plot_attribute_sweep(generator, a, names, level_names, base, x, levels, out,
                             f"{smk.params.label}: {attribute}", int(smk.params.columns), seed=0, device=device)
        log.info("%s: sweep of %s over %d levels -> %s", smk.wildcards.gen, attribute, len(level_names), out)


run_rule(snakemake, main)  # noqa: F821
