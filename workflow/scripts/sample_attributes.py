"""Rule sample_attributes: images from an attribute-conditioned generator for requested attribute levels
drawn from the kept training combinations (`attributes.sampling`), stored as `levels` next to the images
(`y` holds their contrastive class, or for a single-attribute run the level itself)."""
import pandas as pd

from histaug.generator_checkpoint import load_generator
from histaug.io import write_images
from histaug.rulekit import run_rule
from histaug.sampling import draw_combinations, generate_for
from histaug.utils import get_device


def main(smk, log):
    cfg, sampling = dict(smk.params.attribute_sampling or {}), smk.params.sampling
    device = get_device(smk.params.compute)
    net = load_generator(smk.input.checkpoint, device=device)
    subset = pd.read_csv(smk.input.attribute_subset)
    single = smk.params.attribute  # the attribute of a single-attribute run, else None
    names = [single] if single else list(net.condition.names)
    n = len(subset) if cfg.get("n", "match") == "match" else int(cfg["n"])
    weights = cfg.get("weights", "frequency")
    levels = draw_combinations(subset[[f"{a}_level" for a in names]].to_numpy(), n, weights, int(sampling["seed"]))
    labels = levels[:, 0] if single else levels
    x = generate_for(net, labels, -1.0, int(sampling["seed"]), int(sampling.get("batch_size", 256)), device)
    y = labels if single else net.condition.contrastive_class(levels).numpy()
    write_images(smk.output.normal, x, y, attrs={"tau": -1.0, "seed": int(sampling["seed"]), "attribute_names": names},
                 levels=levels)
    log.info("generated %d images for %s (levels drawn by %s) at %dpx", len(x), names, weights, x.shape[1])


run_rule(snakemake, main)  # noqa: F821
