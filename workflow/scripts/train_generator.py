"""Rule train_generator: train one configured generator on the real training subset (resumable)."""
from histaug.labels import load_labelled
from histaug.rulekit import run_rule
from histaug.train_generator import train_generator
from histaug.utils import read_json


def main(smk, log):
    x, y = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    num_classes = read_json(smk.input.labels_meta)["num_classes"]
    log.info("training generator %s (%s) on %d real images", smk.wildcards.gen, smk.params.gen_cfg["family"], len(x))
    train_generator(smk.wildcards.gen, dict(smk.params.gen_cfg), x, y, num_classes, smk.output.checkpoint,
                    smk.params.state_dir, dict(smk.params.compute), log=log)


run_rule(snakemake, main)  # noqa: F821
