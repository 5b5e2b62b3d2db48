"""Rule train_generator: train one configured generator on the real training subset (resumable).

With generators.<gen>.model_selection the best step is chosen by FID against the validation split,
in the space of the FID Inception network (inputs `valid` and `inception`).
"""
from histaug.labels import load_labelled
from histaug.model_selection import inception_feature_fn
from histaug.rulekit import run_rule
from histaug.train_generator import train_generator
from histaug.utils import get_device, read_json


def main(smk, log):
    x, y = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    num_classes = read_json(smk.input.labels_meta)["num_classes"]
    log.info("training generator %s (%s) on %d real images", smk.wildcards.gen, smk.params.gen_cfg["family"], len(x))
    selection = {}
    if smk.params.gen_cfg.get("model_selection"):
        feature_fn = inception_feature_fn(read_json(smk.input.inception), smk.wildcards.gen,
                                          get_device(smk.params.compute))
        x_valid, _ = load_labelled(smk.input.valid, smk.input.labels, "valid")
        ms = smk.params.gen_cfg["model_selection"]
        log.info("model selection every %d steps: FID of %d generated images against up to %d of the %d validation images",
                 ms["every"], ms["n_images"], ms["n_images"], len(x_valid))
        selection = dict(selection_images=x_valid, feature_fn=feature_fn)
    train_generator(smk.wildcards.gen, dict(smk.params.gen_cfg), x, y, num_classes, smk.output.checkpoint,
                    smk.params.state_dir, dict(smk.params.compute), log=log, divergence=dict(smk.params.divergence),
                    **selection)


run_rule(snakemake, main)  # noqa: F821
