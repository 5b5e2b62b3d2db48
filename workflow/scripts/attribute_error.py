"""Rule attribute_error: AttributeGAN's attribute error of the real test split and of every
attribute-conditioned generator's samples, plus the oracle error where attributes are pixel-derived."""
from histaug.attribute_error import (REAL, error_rows, error_table, predict_probabilities, sample_attribute_names,
                                    select_blocks, to_latex, to_markdown, wide_table)
from histaug.attribute_table import measure_levels, read_attribute_levels
from histaug.classify import load_classifier
from histaug.io import read_images
from histaug.rulekit import run_rule
from histaug.provenance import of_rule, write_stamped, write_table
from histaug.utils import get_device, read_json


def main(smk, log):
    meta = read_json(smk.input.meta)
    names, counts, pixels = meta["names"], meta["levels"], meta["source"] == "pixels"
    compute = dict(smk.params.compute)
    model, pmeta = load_classifier(smk.input.predictor, device=get_device(compute))
    xt, _ = read_images(smk.input.test)
    yt = read_attribute_levels(smk.input.attributes, "test")
    rows = error_rows(REAL, predict_probabilities(model, pmeta, xt, compute), yt, counts, names,
                      measure_levels(xt, meta) if pixels else None)
    for gen, path in zip(smk.params.generators, smk.input.samples):
        x, _, extra = read_images(path, with_extra=True)
        made_for = sample_attribute_names(path)  # all attributes, or the one of a single-attribute run
        keep = [names.index(n) for n in made_for]
        prob = select_blocks(predict_probabilities(model, pmeta, x, compute), counts, keep)
        oracle = measure_levels(x, meta)[:, keep] if pixels else None
        rows += error_rows(gen, prob, extra["levels"], [counts[a] for a in keep], made_for, oracle)
    table = error_table(rows)
    prov = of_rule(smk)
    write_table(table, smk.output.csv, prov)
    wide = wide_table(table, smk.params.labels, oracle=pixels)
    write_stamped(to_markdown(wide), smk.output.md, prov)
    write_stamped(to_latex(wide, "Attribute error (MSE of the normalised predicted level; lower is better) of real test "
                           "images and generated images" + ("; oracle = measured on the pixels" if pixels else "")),
                  smk.output.tex, prov)
    log.info("attribute error:\n%s", to_markdown(wide))


run_rule(snakemake, main)  # noqa: F821
