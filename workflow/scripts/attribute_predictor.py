"""Rule attribute_predictor: the attribute-error evaluator, a timm network with one head per attribute,
trained on the real training split; best epoch by attribute error on the validation split."""
from pathlib import Path

from histaug.attribute_table import read_attribute_levels
from histaug.classifier_training import train_classifier
from histaug.io import read_images
from histaug.rulekit import run_rule
from histaug.utils import read_json


def main(smk, log):
    meta = read_json(smk.input.meta)
    cfg = dict(smk.params.predictor)
    x, _ = read_images(smk.input.train)
    xv, _ = read_images(smk.input.valid)
    y, yv = read_attribute_levels(smk.input.attributes, "train"), read_attribute_levels(smk.input.attributes, "valid")
    log.info("attribute predictor %s for %s (levels %s) on %d training and %d validation images",
             cfg["arch"], meta["names"], meta["levels"], len(x), len(xv))
    train_classifier(cfg["arch"], x, y, xv, yv, {**cfg, "pretrained": {cfg["arch"]: cfg.get("pretrained")}},
                     dict(smk.params.compute), int(cfg.get("seed", 0)), Path(smk.output.model).parent, log=log,
                     heads=meta["levels"], divergence=dict(smk.params.divergence))


run_rule(snakemake, main)  # noqa: F821
