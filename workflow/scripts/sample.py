"""Rule sample: per-class images from a trained generator, plain normal (`normal`) or truncated (`truncated`) latents."""
import pandas as pd

from histaug.io import write_images
from histaug.rulekit import run_rule
from histaug.sampling import generate, n_per_class_from_config
from histaug.generator_checkpoint import load_generator
from histaug.utils import get_device, read_json


def main(smk, log):
    cfg = smk.params.sampling
    device = get_device(smk.params.compute)
    net = load_generator(smk.input.checkpoint, device=device)
    num_classes = read_json(smk.input.labels_meta)["num_classes"]
    subset_labels = pd.read_csv(smk.input.subset)["label"].to_numpy()
    per_class = n_per_class_from_config(cfg["n_per_class"], subset_labels, num_classes)
    tau = float(smk.params.tau)
    x, y = generate(net, per_class, tau, int(cfg["seed"]), int(cfg.get("batch_size", 256)), device)
    write_images(smk.output[0], x, y, attrs={"tau": tau, "seed": int(cfg["seed"])})
    log.info("generated %d images per class %s at %dpx (%s latents, tau=%s)", len(x), per_class, x.shape[1],
             smk.wildcards.source, tau)


run_rule(snakemake, main)  # noqa: F821
