"""Rule sample: per-class images from a class-conditioned generator, plain normal latents (`normal.h5`) and
latents truncated at sampling.tau (`truncated.h5`), `sampling.n_per_class` per class each."""
import pandas as pd

from histaug.generator_checkpoint import load_generator
from histaug.io import write_images
from histaug.rulekit import run_rule
from histaug.sampling import generate, n_per_class_from_config
from histaug.utils import get_device, read_json


def main(smk, log):
    cfg = smk.params.sampling
    device = get_device(smk.params.compute)
    net = load_generator(smk.input.checkpoint, device=device)
    num_classes = read_json(smk.input.labels_meta)["num_classes"]
    subset_labels = pd.read_csv(smk.input.subset)["label"].to_numpy()
    per_class = n_per_class_from_config(cfg["n_per_class"], subset_labels, num_classes)
    for source, tau in (("normal", -1.0), ("truncated", float(smk.params.tau))):
        x, y = generate(net, per_class, tau, int(cfg["seed"]), int(cfg.get("batch_size", 256)), device)
        write_images(getattr(smk.output, source), x, y, attrs={"tau": tau, "seed": int(cfg["seed"])})
        log.info("%s: %d images per class %s at %dpx (tau=%s)", source, len(x), per_class, x.shape[1], tau)


run_rule(snakemake, main)  # noqa: F821
