"""Rule pixel_baseline: logistic regression on downsampled pixels, the sanity row of every downstream table."""
import numpy as np
import pandas as pd

from histaug import pixel_baseline as pb
from histaug.labels import load_labelled
from histaug.metrics import classification_metrics
from histaug.rulekit import run_rule
from histaug.utils import read_json, write_csv, write_json


def main(smk, log):
    seed = int(smk.wildcards.seed)
    x, y = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    xv, yv = load_labelled(smk.input.valid, smk.input.labels, "valid")
    xt, yt = load_labelled(smk.input.test, smk.input.labels, "test")
    k = int(read_json(smk.input.labels_meta)["num_classes"])
    fitted = pb.fit_pixel_baseline(x, y, xv, yv, int(smk.params.baseline.get("size", 8)), seed)
    prob = pb.predict_proba(fitted, xt, k)
    metrics = classification_metrics(yt, prob)
    pred = prob.argmax(axis=1)
    columns = {"index": np.arange(len(yt)), "label": yt, **{f"prob_{c}": prob[:, c] for c in range(k)}}
    if k == 2:
        columns["prob_pos"] = prob[:, 1]
    pb.save(fitted, smk.output.model)
    write_csv(pd.DataFrame(columns), smk.output.predictions)
    write_json({"arch": pb.ARCH, "variant": "real", "kind": "real", "generator": None, "seed": seed, **metrics,
                "best_epoch": None, "valid_auc": fitted["valid_auc"], "n_real": len(x), "n_synthetic": 0,
                "degenerate": bool(len(np.unique(pred)) == 1), "C": fitted["C"], "pixels": int(fitted["size"])},
               smk.output.metrics)
    log.info("%s (%dx%d px, C=%g chosen on validation AUC %.4f): test %s", pb.LABEL, fitted["size"], fitted["size"],
             fitted["C"], fitted["valid_auc"], {m: round(v, 4) for m, v in metrics.items()})


run_rule(snakemake, main)  # noqa: F821
