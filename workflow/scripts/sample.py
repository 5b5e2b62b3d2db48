"""Rule sample: images from a trained generator, plain normal (`normal`) or truncated (`truncated`) latents.

Class-conditioned: `sampling.n_per_class` images per class. Attribute-conditioned: requested attribute
combinations drawn from the kept training combinations (`attributes.sampling`), stored as `levels`
next to the images (`y` holds their contrastive class).
"""
import pandas as pd

from histaug.generator_checkpoint import load_generator
from histaug.io import write_images
from histaug.rulekit import run_rule
from histaug.sampling import draw_combinations, generate, generate_for, n_per_class_from_config
from histaug.utils import get_device, read_json


def attribute_samples(smk, net, tau, device):
    cfg = dict(smk.params.attribute_sampling or {})
    subset = pd.read_csv(smk.input.attribute_subset)
    names = list(net.condition.names)
    n = len(subset) if cfg.get("n", "match") == "match" else int(cfg["n"])
    levels = draw_combinations(subset[[f"{a}_level" for a in names]].to_numpy(), n, cfg.get("weights", "frequency"),
                               int(smk.params.sampling["seed"]))
    x = generate_for(net, levels, tau, int(smk.params.sampling["seed"]), int(smk.params.sampling.get("batch_size", 256)),
                     device)
    y = net.condition.contrastive_class(levels).numpy()
    return x, y, {"levels": levels}, f"{n} images, combinations by {cfg.get('weights', 'frequency')}"


def main(smk, log):
    cfg = smk.params.sampling
    device = get_device(smk.params.compute)
    net = load_generator(smk.input.checkpoint, device=device)
    tau = float(smk.params.tau)
    if net.condition.kind == "attributes":
        x, y, extra, what = attribute_samples(smk, net, tau, device)
        attrs = {"attribute_names": list(net.condition.names)}
    else:
        num_classes = read_json(smk.input.labels_meta)["num_classes"]
        subset_labels = pd.read_csv(smk.input.subset)["label"].to_numpy()
        per_class = n_per_class_from_config(cfg["n_per_class"], subset_labels, num_classes)
        x, y = generate(net, per_class, tau, int(cfg["seed"]), int(cfg.get("batch_size", 256)), device)
        extra, attrs, what = {}, {}, f"per class {per_class}"
    write_images(smk.output[0], x, y, attrs={"tau": tau, "seed": int(cfg["seed"]), **attrs}, **extra)
    log.info("generated %d images (%s) at %dpx (%s latents, tau=%s)", len(x), what, x.shape[1] if len(x) else 0,
             smk.wildcards.source, tau)


run_rule(snakemake, main)  # noqa: F821
