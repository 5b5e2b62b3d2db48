"""Rule select: selective augmentation, keep truncated-latent images whose intended-class confidence >= lambda."""
import pandas as pd

from histaug.io import read_images, write_images
from histaug.rulekit import run_rule
from histaug.sampling import select
from histaug.selectors import load_selector
from histaug.utils import write_csv


def main(smk, log):
    lam = float(smk.params.selection["lambda"])
    x, y = read_images(smk.input.samples)
    selector = load_selector(smk.params.selector, smk.input.selector, smk.params.compute)
    log.info("selector: %s (%s)", smk.params.selector, smk.input.selector)
    proba = selector(x)
    keep, conf = select(proba, y, lam)
    write_csv(pd.DataFrame({"index": range(len(y)), "label": y, "confidence": conf, "kept": keep}), smk.output.table)
    write_images(smk.output.selected, x[keep], y[keep], attrs={"lambda": lam}, confidence=conf[keep])
    log.info("kept %d of %d images (lambda=%.2f); per class %s", keep.sum(), len(y), lam,
             {int(c): int(keep[y == c].sum()) for c in sorted(set(y.tolist()))})


run_rule(snakemake, main)  # noqa: F821
