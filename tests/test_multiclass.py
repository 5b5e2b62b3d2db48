"""K > 2 classes end to end in the library: metrics against scikit-learn, per-class tables, the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from histaug.metrics import binary_metrics, classification_metrics
from histaug.per_class import per_class_runs, summarize_per_class
from histaug.report import write_report
from histaug.report_tables import collect_downstream, summarize_downstream


def _probs(rng, y, k, skill=2.0):
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_three_class_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    p = _probs(rng, y, 3)
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    cm = confusion_matrix(y, p.argmax(1), labels=[0, 1, 2])
    for k in range(3):
        tp = cm[k, k]
        fn = cm[k].sum() - tp
        fp = cm[:, k].sum() - tp
        tn = cm.sum() - tp - fn - fp
        assert m[f"sensitivity_c{k}"] == pytest.approx(tp / (tp + fn))
        assert m[f"specificity_c{k}"] == pytest.approx(tn / (tn + fp))
        assert m[f"auc_c{k}"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
    assert m["sensitivity"] == pytest.approx(np.mean([m[f"sensitivity_c{k}"] for k in range(3)]))
    assert m["specificity"] == pytest.approx(np.mean([m[f"specificity_c{k}"] for k in range(3)]))


def test_two_classes_give_the_binary_metrics():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    p = _probs(rng, y, 2)
    assert classification_metrics(y, p) == binary_metrics(y, p[:, 1])


def test_per_class_values_of_a_binary_run_follow_from_sensitivity_and_specificity():
    runs = pd.DataFrame([{"arch": "resnet34", "variant": "real", "seed": 0, "accuracy": 0.8, "auc": 0.9,
                          "sensitivity": 0.7, "specificity": 0.95}])
    long = per_class_runs(runs, ["normal", "tumour"])
    assert long[["class", "sensitivity", "specificity", "auc"]].values.tolist() == [[0, 0.95, 0.7, 0.9],
                                                                                    [1, 0.7, 0.95, 0.9]]


def _write_runs(root, k, rng):
    files = {"metrics": [], "predictions": []}
    for arch in ("resnet34", "densenet169"):
        for variant in ("real", "real+cvae"):
            for seed in (0, 1):
                run = root / arch / variant / f"seed{seed}"
                run.mkdir(parents=True)
                y = np.repeat(np.arange(k), 20)
                p = _probs(rng, y, k)
                pd.DataFrame({"index": np.arange(len(y)), "label": y,
                              **{f"prob_{c}": p[:, c] for c in range(k)}}).to_csv(run / "predictions.csv", index=False)
                rec = {"arch": arch, "variant": variant, "seed": seed, **classification_metrics(y, p)}
                (run / "metrics.json").write_text(json.dumps(rec))
                files["metrics"].append(run / "metrics.json")
                files["predictions"].append(run / "predictions.csv")
    return files


def test_three_class_report_has_a_per_class_table_and_roc(tmp_path):
    rng = np.random.default_rng(3)
    files = _write_runs(tmp_path / "runs", 3, rng)
    downstream = collect_downstream(files["metrics"])
    summary = summarize_downstream(downstream, ["resnet34", "densenet169"], ["real", "real+cvae"])
    per_class = summarize_per_class(per_class_runs(downstream, ["tumour", "stroma", "lymph"]), summary)
    assert len(per_class) == len(summary) * 3
    first = per_class.iloc[0]
    seeds = downstream[(downstream["arch"] == first["arch"]) & (downstream["variant"] == first["variant"])]
    assert first["sensitivity_mean"] == pytest.approx(seeds["sensitivity_c0"].mean())
    assert first["auc_std"] == pytest.approx(seeds["auc_c0"].std(ddof=1))

    context = {"class_names": ["tumour", "stroma", "lymph"], "architectures": ["resnet34", "densenet169"],
               "trainsets": ["real", "real+cvae"], "seeds": [0, 1], "generators": []}
    written = write_report(tmp_path / "out", files["metrics"], files["predictions"], [], {}, context)
    assert "tables/downstream_per_class.md" in written and "figures/roc_curves.png" in written
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Per class (one-vs-rest)" in report and "1 = stroma" in report and "macro one-vs-rest AUC" in report
