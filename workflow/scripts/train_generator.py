"""Rule train_generator: train one configured generator on the real training subset (resumable).

Class-conditioned generators train on the training subset with the downstream labels; attribute-
conditioned ones on the subset after rare-combination filtering, with the attribute levels.
With generators.<gen>.model_selection the best step is chosen by FID against the validation split,
in the space of the FID Inception network (inputs `valid` and `inception`).
"""
import pandas as pd

from histaug.combinations import condition_from_files
from models.conditioning import Condition
from histaug.io import read_images
from histaug.labels import load_labelled
from histaug.model_selection import inception_feature_fn
from histaug.rulekit import run_rule
from histaug.train_generator import train_generator
from histaug.utils import get_device, read_json


def training_data(smk):
    """(images, labels, condition) of this generator's condition."""
    if smk.params.condition in ("attributes", "attribute"):
        subset = pd.read_csv(smk.input.attribute_subset)
        condition = condition_from_files(smk.input.attributes_meta, smk.input.combinations)
        x, _ = read_images(smk.input.train, indices=subset["index"].to_numpy())
        if smk.params.condition == "attribute":  # one attribute's levels as the class (per-attribute runs)
            a = condition.names.index(smk.params.attribute)
            single = Condition("class", (condition.levels[a],), (smk.params.attribute,))
            return x, subset[f"{smk.params.attribute}_level"].to_numpy(), single
        return x, subset[[f"{n}_level" for n in condition.names]].to_numpy(), condition
    x, y = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    return x, y, int(read_json(smk.input.labels_meta)["num_classes"])


def main(smk, log):
    x, y, condition = training_data(smk)
    log.info("training generator %s (%s, %s condition) on %d real images", smk.wildcards.gen,
             smk.params.gen_cfg["family"], smk.params.condition, len(x))
    selection = {}
    if smk.params.gen_cfg.get("model_selection"):
        feature_fn = inception_feature_fn(read_json(smk.input.inception), smk.wildcards.gen,
                                          get_device(smk.params.compute),
                                          bool(smk.params.compute.get("channels_last")), smk.params.inception_precision)
        x_valid, _ = load_labelled(smk.input.valid, smk.input.labels, "valid")
        ms = smk.params.gen_cfg["model_selection"]
        log.info("model selection every %d steps: FID of %d generated images against up to %d of the %d validation images",
                 ms["every"], ms["n_images"], ms["n_images"], len(x_valid))
        selection = dict(selection_images=x_valid, feature_fn=feature_fn)
    train_generator(smk.wildcards.gen, dict(smk.params.gen_cfg), x, y, condition, smk.output.checkpoint,
                    smk.params.state_dir, dict(smk.params.compute), log=log, divergence=dict(smk.params.divergence),
                    **selection)


run_rule(snakemake, main)  # noqa: F821
