"""Rule train_classifier: one (architecture or GAN class head, training set) run per seed, or every seed in turn
when they share a job (downstream.seeds_in_one_job); metrics on the real test split."""
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
    arch, variant = smk.wildcards.arch, smk.wildcards.variant
    seeds = [int(smk.wildcards.seed)] if "seed" in smk.wildcards.keys() else [int(s) for s in smk.params.downstream["seeds"]]
    files = {k: [smk.output[k]] if isinstance(smk.output[k], str) else list(smk.output[k])
             for k in ("metrics", "predictions", "model")}
    real = load_labelled(smk.input.train, smk.input.labels, "train", smk.input.subset)
    x, y, n_syn, gen, kind = training_set(variant, real, list(smk.input.synthetic), log)
    data = {"train": (x, y), "valid": load_labelled(smk.input.valid, smk.input.labels, "valid"),
            "test": load_labelled(smk.input.test, smk.input.labels, "test")}
    head = head_source(smk.input.head[0]) if smk.input.head else None
    if head is not None:
        log.info("%s: fine-tuning the class head of %s (discriminator from %s)", arch, head["generator"], smk.input.head[0])
    for i, seed in enumerate(seeds):
        log.info("%s on %s (seed %d): %d training images (%d synthetic), %d valid, %d test",
                 arch, variant, seed, len(x), n_syn, len(data["valid"][0]), len(data["test"][0]))
        metrics = run_seed(smk, log, arch, seed, data, head, {k: v[i] for k, v in files.items()})
        write_json({"arch": arch, "variant": variant, "kind": kind, "generator": gen, "seed": seed, **metrics,
                    "n_real": 0 if kind == "synthetic" else len(real[0]), "n_synthetic": n_syn}, files["metrics"][i])


def run_seed(smk, log, arch, seed, data, head, out):
    """Train one seed, score its best epoch on the test split, write its predictions; returns its metrics."""
    cfg, compute = dict(smk.params.downstream), dict(smk.params.compute)
    num_classes = int(read_json(smk.input.labels_meta)["num_classes"])
    summary = train_classifier(arch, *data["train"], *data["valid"], cfg, compute, seed, out["model"].rsplit("/", 1)[0],
                               log=log, head=head, num_classes=num_classes, divergence=dict(smk.params.divergence))
    model, meta = load_classifier(out["model"], device=get_device(compute))
    xt, yt = data["test"]
    prob = predict_proba(model, meta, xt, compute=compute)
    metrics = classification_metrics(yt, prob)
    columns = {"index": np.arange(len(yt)), "label": yt, **{f"prob_{k}": prob[:, k] for k in range(prob.shape[1])}}
    if prob.shape[1] == 2:
        columns["prob_pos"] = prob[:, 1]  # the positive class of a binary task
    write_csv(pd.DataFrame(columns), out["predictions"])
    degenerate = bool(len(np.unique(prob.argmax(axis=1))) == 1)
    if degenerate:
        log.warning("%s on %s (seed %d) predicts one class for every test image: a degenerate classifier; the "
                    "report flags it", arch, smk.wildcards.variant, seed)
    log.info("seed %d test: %s", seed, {k: round(v, 4) for k, v in metrics.items()})
    return {**metrics, "degenerate": degenerate, "epochs_trained": meta.get("epochs_trained"),
            "stopped_early": meta.get("stopped_early"), "best_epoch": meta.get("best_epoch"),
            "valid_auc": meta.get("valid_auc"),
            "train_seconds": summary.get("seconds") if isinstance(summary, dict) else None}


run_rule(snakemake, main)  # noqa: F821
