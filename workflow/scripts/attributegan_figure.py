"""Rule attributegan_figure: AttributeGAN Fig. 3, one attribute's levels for every model of the table and real images."""
import numpy as np
import pandas as pd

from histaug.attribute_figures import level_row, most_frequent_combination, plot_level_comparison, real_rows
from histaug.generator_checkpoint import load_generator
from histaug.io import read_images, resize_images
from histaug.rulekit import run_rule
from histaug.utils import get_device, read_json


def main(smk, log):
    meta = read_json(smk.input.meta)
    names, attribute = meta["names"], smk.params.attribute
    a = names.index(attribute)
    level_names = meta["attributes"][a]["level_names"]
    per_level = int(smk.params.per_level)
    subset = pd.read_csv(smk.input.subset)
    levels = subset[[f"{n}_level" for n in names]].to_numpy()
    device = get_device(smk.params.compute)
    rows = []
    for (label, single), checkpoint in zip(smk.params.rows, smk.input.checkpoints):
        generator = load_generator(checkpoint, device=device)
        rows.append((label, level_row(generator, None if single else a, most_frequent_combination(levels),
                                      len(level_names), per_level, seed=0, device=device)))
    x, _ = read_images(smk.input.train, indices=subset["index"].to_numpy())
    real = real_rows(x, levels, a, len(level_names), per_level, seed=0)
    size = rows[0][1].shape[1] if rows else x.shape[1]
    real = [resize_images(r, size) if len(r) else np.zeros((0, size, size, 3), np.uint8) for r in real]
    blank = np.full((1, size, size, 3), 255, np.uint8)  # a level with fewer real images keeps its columns
    rows.append(("Real images", np.concatenate([np.concatenate([r] + [blank] * (per_level - len(r))) for r in real])))
    plot_level_comparison(rows, attribute, level_names, per_level, smk.output[0])
    log.info("Fig. 3 for %s: rows %s", attribute, [r[0] for r in rows])


run_rule(snakemake, main)  # noqa: F821
