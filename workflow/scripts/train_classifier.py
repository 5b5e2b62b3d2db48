"""Rule train_classifier: one (architecture or GAN class head, training set, seed) run; metrics on the real test split."""
import numpy as np
import pandas as pd

from histaug.classifier_training import train_classifier
from histaug.classify import head_source, load_classifier, predict_proba
from histaug.labels import load_labelled
from histaug.trainsets import training_set
from histaug.metrics import classification_metrics
from histaug.rulekit import run_rule
from histaug.utils import get_device, read_json, write_csv, write_json


def main(smk, log):
    arch, variant, seed = smk.wildcards.arch, smk.wildcards.variant, int(smk.wildcards.seed)
    real = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    x, y, n_syn, gen, kind = training_set(variant, real, list(smk.input.synthetic), log)
    xv, yv = load_labelled(smk.input.valid, smk.input.labels, "valid")
    xt, yt = load_labelled(smk.input.test, smk.input.labels, "test")
    out_dir = smk.output.model.rsplit("/", 1)[0]
    log.info("%s on %s (seed %d): %d training images (%d synthetic), %d valid, %d test",
             arch, variant, seed, len(x), n_syn, len(xv), len(xt))
    cfg = dict(smk.params.downstream)
    compute = dict(smk.params.compute)
    head = head_source(smk.input.head[0]) if smk.input.head else None
    if head is not None:
        log.info("%s: fine-tuning the class head of %s (discriminator from %s)", arch, head["generator"], smk.input.head[0])
    num_classes = int(read_json(smk.input.labels_meta)["num_classes"])
    summary = train_classifier(arch, x, y, xv, yv, cfg, compute, seed, out_dir, log=log, head=head,
                               num_classes=num_classes, divergence=dict(smk.params.divergence))
    model, meta = load_classifier(smk.output.model, device=get_device(compute))
    prob = predict_proba(model, meta, xt, compute=compute)
    metrics = classification_metrics(yt, prob)
    columns = {"index": np.arange(len(yt)), "label": yt, **{f"prob_{k}": prob[:, k] for k in range(prob.shape[1])}}
    if prob.shape[1] == 2:
        columns["prob_pos"] = prob[:, 1]  # the positive class of a binary task
    write_csv(pd.DataFrame(columns), smk.output.predictions)
    degenerate = bool(len(np.unique(prob.argmax(axis=1))) == 1)
    if degenerate:
        log.warning("%s on %s (seed %d) predicts one class for every test image: a degenerate classifier; the "
                    "report flags it", arch, variant, seed)
    write_json({"arch": arch, "variant": variant, "kind": kind, "generator": gen, "seed": seed, **metrics,
                "degenerate": degenerate, "epochs_trained": meta.get("epochs_trained"),
                "stopped_early": meta.get("stopped_early"),
                "best_epoch": meta.get("best_epoch"), "valid_auc": meta.get("valid_auc"),
                "n_real": 0 if kind == "synthetic" else len(real[0]), "n_synthetic": n_syn,
                "train_seconds": summary.get("seconds") if isinstance(summary, dict) else None},
               smk.output.metrics)
    log.info("test: %s", {k: round(v, 4) for k, v in metrics.items()})


run_rule(snakemake, main)  # noqa: F821
