"""Tests for histaug.report: per-seed collection, mean ± std summaries, tables, figures and report.md."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histaug.io import write_images
from histaug.report import write_report
from histaug.report_figures import (
    group_prediction_files,
    kept_step,
    plot_metric_bars,
    plot_roc_curves,
    plot_sample_grid,
)
from histaug.report_format import format_mean_std, pretty_arch, row_label, variant_label
from histaug.report_tables import (
    collect_downstream,
    collect_generation,
    generation_to_markdown,
    heads_to_markdown,
    summarize_downstream,
    to_latex_table,
    to_markdown_table,
)
from histaug.trainsets import parse_variant
from histaug.utils import PipelineError

METRICS = ("accuracy", "auc", "sensitivity", "specificity")
ARCHS = ["resnet34", "densenet169"]
GENERATORS = ["cgan", "cvae"]
SEEDS = [0, 1, 2]
N_TEST = 60


def variants_for(generators):
    out = ["real"]
    for g in generators:
        out += [f"real+{g}", f"real+{g}.selected", g]
    return out


TRAINSETS = variants_for(GENERATORS)


def _metrics_record(arch, variant, seed, rng):
    kind, generator = parse_variant(variant)
    return {
        "arch": arch,
        "variant": variant,
        "kind": kind,
        "generator": generator,
        "seed": seed,
        # continuous random values: no ties between rows, so exactly one best per block
        "accuracy": float(rng.uniform(0.6, 0.95)),
        "auc": float(rng.uniform(0.6, 0.99)),
        "sensitivity": float(rng.uniform(0.5, 0.95)),
        "specificity": float(rng.uniform(0.5, 0.95)),
        "best_epoch": int(rng.integers(1, 30)),
        "valid_auc": float(rng.uniform(0.6, 0.99)),
        "n_real": 0 if kind == "synthetic" else 200,
        "n_synthetic": 0 if kind == "real" else (150 if kind == "selected" else 200),
    }


def _write_run(root: Path, arch, variant, seed, rng):
    run = root / "downstream" / arch / variant / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    rec = _metrics_record(arch, variant, seed, rng)
    (run / "metrics.json").write_text(json.dumps(rec))
    labels = np.array([0, 1] * (N_TEST // 2))
    probs = np.clip(labels * 0.4 + rng.uniform(0, 0.6, N_TEST), 0, 1)
    pd.DataFrame({"index": np.arange(N_TEST), "label": labels, "prob_pos": probs}).to_csv(run / "predictions.csv", index=False)
    return run / "metrics.json", run / "predictions.csv"


@pytest.fixture()
def runs(tmp_path):
    """Fake downstream results: 2 archs x 7 variants x 3 seeds, plus a single-seed extra arch."""
    rng = np.random.default_rng(123)
    metrics, predictions = [], []
    for arch in ARCHS:
        for variant in variants_for(GENERATORS):
            for seed in SEEDS:
                m, p = _write_run(tmp_path, arch, variant, seed, rng)
                metrics.append(m)
                predictions.append(p)
    m, p = _write_run(tmp_path, "hvitgan_head", "real", 0, rng)
    metrics.append(m)
    predictions.append(p)
    return {"root": tmp_path, "metrics": metrics, "predictions": predictions}


@pytest.fixture()
def generation_files(tmp_path):
    base = {"lambda": 0.6, "tau": 0.7, "real_split": "test", "feature_space": "resnet34 real-data classifier (seed 0)"}
    ok = dict(base, generator="cgan", family="cgan", n_generated=400, n_selected=300, fid=87.654, kid_mean=0.05123,
              selector="head", step=200, steps=300, best_fid_valid=101.26,
              head_test={"accuracy": 0.9, "auc": 0.95, "sensitivity": 0.85, "specificity": 0.875},
              kid_std=0.00456, inception_status="ok", feature_fid=12.5, feature_kid_mean=0.3, feature_kid_std=0.02)
    na = dict(base, generator="cvae", family="cvae", n_generated=400, n_selected=100, fid=None, kid_mean=None,
              kid_std=None, inception_status="n/a: Inception weights not found at resources/inception",
              feature_fid=20.25, feature_kid_mean=0.5, feature_kid_std=0.01)
    paths = []
    for rec in (ok, na):
        path = tmp_path / "metrics" / rec["generator"] / "generation.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
        paths.append(path)
    return paths


@pytest.fixture()
def sample_files(tmp_path):
    rng = np.random.default_rng(5)
    out = {}
    for gen in GENERATORS:
        folder = tmp_path / "samples" / gen
        x = rng.integers(0, 256, (20, 96, 96, 3), dtype=np.uint8)
        y = np.array([0, 1] * 10)
        write_images(folder / "normal.h5", x, y)
        write_images(folder / "selected.h5", x[:7], y[:7], confidence=rng.uniform(0.6, 1, 7))
        out[gen] = {"generated": folder / "normal.h5", "selected": folder / "selected.h5"}
    return out


def _is_png(path: Path) -> tuple[int, int]:
    assert path.exists(), path
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


# --------------------------------------------------------------------------- naming


def test_names():
    assert pretty_arch("resnet34") == "ResNet34"
    assert pretty_arch("resnet50_cbam") == "ResNet50-CBAM"
    assert pretty_arch("densenet169") == "DenseNet169"
    assert pretty_arch("hvitgan_head") == "HViTGAN-Head"
    assert parse_variant("real") == ("real", None)
    assert parse_variant("real+cgan") == ("augmented", "cgan")
    assert parse_variant("real+my_gan.selected") == ("selected", "my_gan")
    assert parse_variant("cvae") == ("synthetic", "cvae")
    assert parse_variant("real+cgan.truncated") == ("truncated", "cgan")
    assert row_label("resnet34", "real+cgan.selected") == "ResNet34+Aug(cgan, SA)"
    assert row_label("resnet34", "real+cgan.truncated") == "ResNet34+Aug(cgan, truncated)"
    assert row_label("densenet169", "cgan") == "DenseNet169 trained on cgan only"
    # Table 1 vocabulary: generator labels and training-set labels from the config
    gl, tl = {"hvitgan": "HViTGAN", "medvitgan": "MedViTGAN"}, {"real+hvitgan.selected": "CP+SA"}
    assert row_label("resnet34", "real+medvitgan", gl, tl) == "ResNet34+Aug(MedViTGAN)"
    assert row_label("resnet50_cbam", "real+hvitgan.selected", gl, tl) == "ResNet50-CBAM+Aug(CP+SA)"
    assert row_label("hvitgan_head", "real", gl, tl) == "HViTGAN Cls Head"
    assert row_label("hvitgan_head", "real+hvitgan.selected", gl, tl) == "HViTGAN Cls Head+Aug(CP+SA)"
    assert row_label("medvitgan_head", "real") == "medvitgan Cls Head"
    assert variant_label("real+hvitgan.selected", gl, tl) == "+Aug(CP+SA)"
    assert variant_label("real+hvitgan", gl, tl) == "+Aug(HViTGAN)"
    assert variant_label("cgan.selected") == "cgan, SA only"
    assert format_mean_std(0.8814, 0.0791) == "0.881 ± 0.079"
    assert format_mean_std(0.8814, float("nan")) == "0.881 ± –"


# --------------------------------------------------------------------------- downstream


def test_collect_downstream(runs):
    df = collect_downstream(runs["metrics"])
    assert len(df) == len(runs["metrics"])
    for col in ("arch", "variant", "kind", "generator", "seed", *METRICS, "n_real", "n_synthetic"):
        assert col in df.columns
    keys = list(zip(df["arch"], df["variant"], df["seed"]))
    assert keys == sorted(keys)


def test_collect_downstream_rejects_incomplete_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"arch": "resnet34", "variant": "real", "seed": 0, "accuracy": 0.5}))
    with pytest.raises(PipelineError, match=str(bad)):
        collect_downstream([bad])


def test_summary_matches_numpy(runs):
    df = collect_downstream(runs["metrics"])
    summary = summarize_downstream(df, ARCHS, TRAINSETS)
    assert len(summary) == len(ARCHS) * len(variants_for(GENERATORS)) + 1
    for _, row in summary.iterrows():
        group = df[(df["arch"] == row["arch"]) & (df["variant"] == row["variant"])]
        assert row["n_seeds"] == len(group)
        for metric in METRICS:
            values = group[metric].to_numpy()
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            if len(values) > 1:
                assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
                assert row[metric] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
            else:
                assert np.isnan(row[f"{metric}_std"])
                assert row[metric].endswith("± –")


def test_row_names_and_order(runs):
    summary = summarize_downstream(collect_downstream(runs["metrics"]), ARCHS, TRAINSETS)
    expected = []
    for name in ("ResNet34", "DenseNet169"):
        expected.append(name)
        for g in GENERATORS:
            expected += [f"{name}+Aug({g})", f"{name}+Aug({g}, SA)", f"{name} trained on {g} only"]
    expected.append("hvitgan Cls Head")  # not in the configured order: appended after the configured archs
    assert summary["row"].tolist() == expected

    # rows follow the configured training-set order; unlisted sets come after, by kind then name
    order = ["real", "real+cvae.selected", "real+cgan"]
    custom = summarize_downstream(collect_downstream(runs["metrics"]), ARCHS, order)
    assert custom["row"].tolist()[:7] == ["ResNet34", "ResNet34+Aug(cvae, SA)", "ResNet34+Aug(cgan)", "ResNet34+Aug(cvae)",
                                          "ResNet34+Aug(cgan, SA)", "ResNet34 trained on cgan only",
                                          "ResNet34 trained on cvae only"]


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [l for l in markdown.strip().splitlines() if l.startswith("|")]
    return [[c.strip() for c in l.strip("|").split(" | ")] for l in lines[2:]]


def test_markdown_table(runs):
    summary = summarize_downstream(collect_downstream(runs["metrics"]), ARCHS, TRAINSETS)
    md = to_markdown_table(summary)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(summary)
    assert lines[0].startswith("| Model | Accuracy | AUC | Sensitivity | Specificity |")
    rows = _table_rows(md)
    assert [r[0] for r in rows] == summary["row"].tolist()
    for r in rows:
        assert all("±" in cell for cell in r[1:5])
    # exactly one bold cell per metric column in each multi-row architecture block, on the max mean
    for j, metric in enumerate(METRICS, start=1):
        for arch in ARCHS:
            idx = summary.index[summary["arch"] == arch]
            bold = [i for i in idx if rows[i][j].startswith("**")]
            assert bold == [summary.loc[idx, f"{metric}_mean"].idxmax()]
        single = summary.index[summary["arch"] == "hvitgan_head"][0]
        assert not rows[single][j].startswith("**")
    assert rows[-1][1].endswith("± –")


def test_latex_table(runs):
    df = collect_downstream(runs["metrics"])
    summary = summarize_downstream(df, ARCHS, TRAINSETS, generator_labels={"cgan": "my_gan"})
    tex = to_latex_table(summary, caption="Results", label="tab:x")
    for token in (r"\begin{table}", r"\toprule", r"\bottomrule", r"\end{tabular}", r"\label{tab:x}", r"\caption{Results}"):
        assert token in tex
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    data_lines = [l for l in body.splitlines() if l.endswith(r"\\")]
    assert len(data_lines) == len(summary)
    # one \midrule after the header plus one between each pair of architecture blocks
    assert tex.count(r"\midrule") == 1 + (summary["arch"].nunique() - 1)
    assert all(l.count(r"$\pm$") == 4 for l in data_lines)
    assert r"ResNet34+Aug(my\_gan)" in tex
    resnet_auc = summary.loc[summary["arch"] == "resnet34", "auc_mean"]
    best = resnet_auc.max()
    best_row = data_lines[resnet_auc.idxmax()]
    assert rf"\textbf{{{best:.3f} $\pm$" in best_row.split(" & ")[2]
    assert tex.count(r"\textbf{") == 4 * len(ARCHS)
    assert data_lines[-1].split(" & ")[1].endswith("$\\pm$ --")


# --------------------------------------------------------------------------- generation


def test_generation_table(generation_files):
    gen = collect_generation(generation_files, ["cvae", "cgan"])
    assert gen["generator"].tolist() == ["cvae", "cgan"]
    cvae, cgan = gen.iloc[0], gen.iloc[1]
    assert cgan["FID"] == "87.65"
    assert cgan["KID"] == "0.0512 ± 0.0046"
    assert cgan["selection_rate"] == pytest.approx(0.75)
    assert cvae["FID"] == "n/a: Inception weights not found at resources/inception"
    assert cvae["KID"].startswith("n/a: Inception weights")
    assert np.isnan(cvae["fid"])
    assert cvae["feature_FID"] == "20.25"
    md = generation_to_markdown(gen)
    rows = _table_rows(md)
    assert len(rows) == 2
    assert rows[0][2].startswith("n/a: Inception weights") and rows[0][3] == "n/a"
    assert rows[0][-3] == "25.0%" and rows[1][-3] == "75.0%"
    # which selector judged the images, and which training step the checkpoint holds
    assert rows[1][-2:] == ["head", "200 of 300 (best valid FID 101.3)"] and rows[0][-2:] == ["", ""]
    # the class head's own test metrics: a row for the generator that has them, none for the other
    heads = _table_rows(heads_to_markdown(gen))
    assert heads == [["cgan", "0.900", "0.950", "0.850", "0.875"]]
    assert heads_to_markdown(gen[gen["generator"] == "cvae"]) == ""
    assert generation_to_markdown(collect_generation([])).startswith("_No generators")


# --------------------------------------------------------------------------- figures


def test_sample_grid_native_size(sample_files, tmp_path):
    out = plot_sample_grid(sample_files["cgan"]["generated"], tmp_path / "grid.png", per_class=4,
                           class_names=["low density", "high density"], title="cgan samples")
    width, height = _is_png(out)
    assert width >= 4 * 96 and height >= 2 * 96
    # native size: the mosaic (4 x 96 px plus padding) is not shrunk or enlarged
    assert height < 2 * 96 + 80

    # a file with one class only still gets a row for the missing class
    x = np.zeros((3, 96, 96, 3), np.uint8)
    write_images(tmp_path / "one.h5", x, np.zeros(3))
    _is_png(plot_sample_grid(tmp_path / "one.h5", tmp_path / "one.png", 2, ["normal", "tumour"], None))


def test_roc_and_bars(runs, tmp_path):
    grouped = group_prediction_files(runs["predictions"])
    assert set(grouped) == {*ARCHS, "hvitgan_head"}
    assert len(grouped["resnet34"]["real+cgan.selected"]) == len(SEEDS)
    width, height = _is_png(plot_roc_curves(grouped, tmp_path / "roc.png", "ROC"))
    assert width > height  # three panels side by side
    summary = summarize_downstream(collect_downstream(runs["metrics"]), ARCHS, TRAINSETS)
    _is_png(plot_metric_bars(summary, tmp_path / "bars.png"))


# --------------------------------------------------------------------------- report


def test_write_report(runs, generation_files, sample_files, tmp_path):
    context = {
        "label_source": "derived",
        "label_note": "Labels derived from pixels: class 1 = nuclear density above the training-split median",
        "class_names": ["low density", "high density"],
        "dataset": "PCam demo sample",
        "n_train_subset": 200,
        "n_valid": 50,
        "n_test": N_TEST,
        "config_name": "demo",
        "architectures": ARCHS,
        "seeds": SEEDS,
        "trainsets": TRAINSETS,
        "generator_labels": {"hvitgan": "HViTGAN"},
        "trainset_labels": {"real+cvae.selected": "CP+SA"},
    }
    out_dir = tmp_path / "report"
    histories = {}
    for gen, fid in (("cgan", None), ("cvae", [None, 80.0, None, 60.0, 70.0])):  # cvae: model selection kept step 4
        histories[gen] = tmp_path / "hist" / gen / "history.csv"
        histories[gen].parent.mkdir(parents=True)
        frame = pd.DataFrame({"step": [1, 2, 3, 4, 5], "d_loss": [3, 2, 1.5, 1.2, 1.1], "g_loss": [1, 2, 2, 3, 3]})
        if fid:
            frame["fid_valid"] = fid
        frame.to_csv(histories[gen], index=False)
    written = write_report(out_dir, runs["metrics"], runs["predictions"], generation_files, sample_files, context,
                           per_class=3, histories=histories)
    expected = {"tables/downstream.csv", "tables/downstream_summary.csv", "tables/downstream_summary.md",
                "tables/downstream_summary.tex", "tables/generation.csv", "tables/generation.md",
                "tables/downstream_per_class.csv", "tables/downstream_per_class.md",
                "tables/augmentation_gain.csv", "tables/augmentation_gain.md", "tables/augmentation_gain.tex",
                "tables/synthetic_only.csv", "tables/synthetic_only.md",
                "figures/roc_curves.png", "figures/auc_bars.png", "figures/generator_training.png", "report.md"}
    expected |= {f"figures/{kind}_{g}.png" for g in GENERATORS for kind in ("samples", "selected")}
    assert set(written) == expected
    for rel, path in written.items():
        assert path == out_dir / rel and path.exists() and path.stat().st_size > 0
        if rel.endswith(".png"):
            _is_png(path)
    assert not list(out_dir.rglob("*.tmp"))

    report = (out_dir / "report.md").read_text()
    for heading in ("## Dataset and labels", "## Generation quality", "## Downstream classification",
                    "## Figures", "## How to read the tables", "## Settings"):
        assert heading in report
    assert context["label_note"] in report
    assert report.index(context["label_note"]) < report.index("## Generation quality")
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"figures/roc_curves.png", "figures/auc_bars.png", "figures/samples_cgan.png",
            "figures/selected_cvae.png", "tables/downstream_summary.tex"} <= set(links)
    for link in links:
        assert (out_dir / link).exists(), link
    assert "ResNet34+Aug(cgan, SA)" in report and "ResNet34+Aug(CP+SA)" in report
    assert "`+Aug(CP+SA)` = training set `real+cvae.selected`" in report  # configured labels are explained
    assert "n/a: Inception weights not found" in report
    assert "- 1 of 3 seeds: HViTGAN Cls Head" in report  # fewer seeds than configured are called out

    summary_csv = pd.read_csv(out_dir / "tables" / "downstream_summary.csv")
    assert summary_csv["row"].tolist()[0] == "ResNet34"
    assert len(pd.read_csv(out_dir / "tables" / "downstream.csv")) == len(runs["metrics"])


def test_write_report_with_tsne_section(runs, generation_files, sample_files, tmp_path):
    from histaug.embedding import parse_panels, write_tsne

    out_dir = tmp_path / "report"
    panels = parse_panels([{"samples": "cgan", "label": "(a) cGAN"}, {"samples": "cvae.selected", "label": "(b) cVAE, SA"}])
    files = {k: out_dir / rel for k, rel in (("figure", "figures/tsne_loss_scenarios.png"), ("scores", "tables/tsne_scores.csv"),
                                             ("coordinates", "tables/tsne_coordinates.csv"))}
    flat = lambda x: x.reshape(len(x), -1)[:, ::97].astype(float)  # noqa: E731
    write_tsne(panels, [sample_files["cgan"]["generated"], sample_files["cvae"]["selected"]], flat, ["neg", "pos"],
               {"points_per_panel": 20}, files["figure"], files["scores"], files["coordinates"])
    context = {"class_names": ["neg", "pos"], "architectures": ARCHS, "seeds": SEEDS, "trainsets": TRAINSETS}
    write_report(out_dir, runs["metrics"], runs["predictions"], generation_files, sample_files, context, per_class=2,
                 tsne=files)
    report = (out_dir / "report.md").read_text()
    assert "## Loss scenarios (t-SNE)" in report and report.index("## Loss scenarios") < report.index("## How to read")
    assert "| (a) cGAN | `cgan` | 20 of 20 |" in report and "(b) cVAE, SA" in report
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"figures/tsne_loss_scenarios.png", "tables/tsne_scores.csv", "tables/tsne_coordinates.csv"} <= set(links)
    for link in links:
        assert (out_dir / link).exists(), link


def test_kept_step_is_the_lowest_validation_fid():
    history = pd.DataFrame({"step": [100, 200, 300, 400], "g_loss": [1, 2, 3, 4], "fid_valid": [90.0, 70.0, float("nan"), 70.0]})
    assert kept_step(history) == (200, 70.0)  # ties keep the earlier step, as training does
    assert kept_step(history.drop(columns="fid_valid")) is None
    assert kept_step(history.assign(fid_valid=float("nan"))) is None
