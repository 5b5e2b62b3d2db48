"""The whole DAG on the shared real patches with tiny settings, plus DAG-level behaviour."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd=REPO, timeout=1500):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    env = dict(os.environ, HISTAUG_NO_PROGRESS="1")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def listing(d: Path):
    return sorted((str(p.relative_to(d)), p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*"))


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, shared_patches_dir):
    out = tmp_path_factory.mktemp("e2e") / "results"
    before = listing(shared_patches_dir)
    res = snakemake("--configfile", "config/demo.yaml", "tests/e2e.yaml",
                    "--config", f"data_dir={shared_patches_dir}", f"results_dir={out}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    assert listing(shared_patches_dir) == before, "the pipeline wrote inside data_dir"
    return out


def test_end_to_end_outputs(e2e_run):
    out = e2e_run
    meta = json.loads((out / "data/labels.json").read_text())
    assert meta["label_source"] == "derived"  # the shared patches are all one class
    df = pd.read_csv(out / "tables/downstream.csv")
    assert {"arch", "variant", "seed", "accuracy", "auc", "sensitivity", "specificity"} <= set(df.columns)
    # the CNNs, the class head and the sanity row that needs no deep learning
    assert set(df["arch"]) == {"resnet34", "resnet50_cbam", "densenet169", "hvitgan_head", "pixel_logreg"}
    assert set(df["variant"]) == {"real", "real+cvae.selected", "cvae", "real+hvitgan.selected"}
    assert set(df.loc[df["arch"] == "hvitgan_head", "variant"]) == {"real+hvitgan.selected"}
    rows = pd.read_csv(out / "tables/downstream_summary.csv")["row"].tolist()
    # Table 1 vocabulary; the Cls Head block comes after the three CNN blocks
    assert rows[-1] == "HViTGAN Cls Head+Aug(CP+SA)" and "ResNet34+Aug(CP+SA)" in rows and "ResNet34+Aug(cVAE, SA)" in rows
    # selector `auto`: HViTGAN's images are judged by its own class head, cVAE's by the real-data ResNet34
    assert "selector: head" in (out / "logs/select/hvitgan.log").read_text()
    assert "selector: baseline" in (out / "logs/select/cvae.log").read_text()
    # SA off reads plain-latent samples, SA on the truncated + selected ones
    for source in ("normal", "truncated", "selected"):
        assert (out / f"samples/hvitgan/{source}.h5").exists()
    # the HViTGAN checkpoint is the best step by validation FID
    hist = pd.read_csv(out / "generators/hvitgan/history.csv")
    assert hist["fid_valid"].notna().sum() == 2
    assert df[["accuracy", "auc", "sensitivity", "specificity"]].apply(lambda c: c.between(0, 1)).all().all()
    gen = pd.read_csv(out / "tables/generation.csv")
    assert {"cgan", "cvae", "hvitgan", "cvae_attr", "attributegan", "biggan_nuclear_density"} <= set(gen["generator"])
    by_gen = gen.set_index("generator")
    best = int(hist.loc[hist["fid_valid"].idxmin(), "step"])
    assert by_gen.loc["hvitgan", "checkpoint"].startswith(f"{best} of 6 (best valid FID")
    assert by_gen.loc["cvae", "checkpoint"] == "12 of 12"
    assert (by_gen.loc["hvitgan", "selector"], by_gen.loc["cvae", "selector"]) == ("head", "baseline")
    # the GAN's class head, unchanged, scored on the real test split; generators without a head have none
    assert 0 <= by_gen.loc["hvitgan", "head_auc"] <= 1 and pd.isna(by_gen.loc["cvae", "head_auc"])
    assert "Class heads as the GAN trained them" in (out / "report.md").read_text()
    for f in ["tables/downstream_summary.md", "tables/downstream_summary.tex", "report.md"]:
        assert (out / f).stat().st_size > 0
    assert "nuclear density" in (out / "report.md").read_text()
    assert list((out / "figures").glob("*.png"))
    # Fig. 3 t-SNE panels (report.tsne in tests/e2e.yaml): figure, one score row per panel, report section
    assert (out / "figures/tsne_loss_scenarios.png").stat().st_size > 0
    assert pd.read_csv(out / "tables/tsne_scores.csv")["samples"].tolist() == ["cvae", "hvitgan.selected"]
    assert len(pd.read_csv(out / "tables/tsne_coordinates.csv")) > 0
    assert "## Loss scenarios (t-SNE)" in (out / "report.md").read_text()
    subset = pd.read_csv(out / "data/train_subset.csv")
    labels = pd.read_csv(out / "data/labels.csv")
    assert len(subset) == round(0.15 * (labels["split"] == "train").sum())
    # every rule left a log
    assert (out / "logs/ingest.log").exists() and list((out / "logs/train_classifier").rglob("*.log"))


def test_end_to_end_attributes(e2e_run):
    """Pixel attributes, the rare-combination filter, an attribute-conditioned cVAE, attribute error, sweeps."""
    out = e2e_run
    attributes = pd.read_csv(out / "data/attributes.csv")
    names = ["nuclear_density", "nuclear_crowding", "stroma_fraction"]
    assert {f"{n}_level" for n in names} <= set(attributes.columns)
    assert len(attributes) == len(pd.read_csv(out / "data/labels.csv"))
    combos = pd.read_csv(out / "data/combinations.csv")
    assert {"combination", "count", "kept", "contrastive_class"} <= set(combos.columns) and combos["kept"].any()
    kept_subset = pd.read_csv(out / "data/attribute_subset.csv")
    assert len(kept_subset) == combos.loc[combos["kept"], "count"].sum()
    error = pd.read_csv(out / "tables/attribute_error.csv")
    assert list(error.columns) == ["model", "attribute", "error", "oracle_error", "n_images", "commit", "config_hash", "date"]
    biggan_runs = {f"biggan_{n}" for n in names}
    assert set(error["model"]) == {"Real images", "cvae_attr", "attributegan"} | biggan_runs
    assert set(error["attribute"]) == set(names)
    for n in names:  # each single-attribute BigGAN is judged on its own attribute only
        assert error.loc[error["model"] == f"biggan_{n}", "attribute"].tolist() == [n]
    real = error[error["model"] == "Real images"]
    assert (real["oracle_error"] == 0).all() and error["error"].between(0, 1).all()
    assert (error.loc[error["model"] == "cvae_attr", "n_images"] == 40).all()
    for n in names:
        assert (out / f"figures/attribute_sweep_cvae_attr_{n}.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Attributes" in report and "### Attribute error" in report and "attribute_sweep_cvae_attr" in report
    gen = pd.read_csv(out / "tables/generation.csv").set_index("generator")
    assert pd.isna(gen.loc["cvae_attr", "n_selected"]) and gen.loc["cvae_attr", "n_generated"] == 40
    # AttributeGAN Table 1: Real images, BigGAN (FID averaged over its three runs), AttributeGAN
    table = pd.read_csv(out / "tables/attributegan_table1.csv")
    assert table["model"].tolist() == ["Real images", "BigGAN", "AttributeGAN"]
    big = table.set_index("model").loc["BigGAN"]
    assert big["FID_runs"] == 3 and big["FID"] == pytest.approx(gen.loc[sorted(biggan_runs), "fid"].mean())
    assert (out / "figures/attributegan_fig3.png").stat().st_size > 0
    assert "### AttributeGAN Table 1" in report and "The paper's numbers" in report and "53.69" in report
    # AttributeGAN is swept (all attributes at once); the per-attribute BigGANs are not
    assert (out / "figures/attribute_sweep_attributegan_nuclear_density.png").exists()
    assert not list((out / "figures").glob("attribute_sweep_biggan*"))


def test_forcerun_reruns_only_downstream_of_the_rule(e2e_run, shared_patches_dir):
    res = snakemake("-n", "--forcerun", "sample", "--configfile", "config/demo.yaml", "tests/e2e.yaml",
                    "--config", f"data_dir={shared_patches_dir}", f"results_dir={e2e_run}")
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    table = text[text.index("Job stats"):]
    jobs = {line.split()[0] for line in table.splitlines()[3:] if line.strip() and line.split()[-1].isdigit()}
    assert {"sample", "select", "train_classifier", "evaluate_generator", "report"} <= jobs
    assert not jobs & {"ingest", "labels", "subset", "train_generator", "download_pcam", "real_features"}


def test_bad_config_value_names_the_key(tmp_path):
    res = snakemake("-n", "--configfile", "config/demo.yaml", "--config", "results_dir=" + str(tmp_path),
                    "sampling={'n_per_class': 'match', 'tau': 0.7, 'seed': 0, 'bogus': 1}")
    assert res.returncode != 0
    assert "sampling" in res.stderr + res.stdout and "bogus" in res.stderr + res.stdout


def test_missing_data_dir_is_a_clear_error(tmp_path):
    res = snakemake("-n", "--configfile", "config/demo.yaml", "--config", f"data_dir={tmp_path}/nowhere")
    assert res.returncode != 0
    assert "data_dir" in res.stderr + res.stdout and "not found" in res.stderr + res.stdout


@pytest.mark.parametrize("profile", ["workstation", "slurm"])
def test_profiles_plan_the_whole_study(profile, tmp_path):
    """Both profiles load and plan the paper DAG; on Slurm every network rule asks for a GPU partition and one GPU."""
    res = snakemake("-n", "--profile", f"profiles/{profile}", "--config", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "train_generator" in text and "train_classifier" in text and "tsne" in text
    if profile == "slurm":
        import yaml

        cfg = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
        assert cfg["executor"] == "slurm"
        network_rules = {"train_generator", "train_classifier", "sample", "select", "real_features", "evaluate_generator", "tsne"}
        assert all(cfg["set-resources"][r]["slurm_partition"] == "gpu" for r in network_rules)
        # ...and those rules declare the GPU that the plugin turns into --gpus=1 (a generator: its `gpus`, default 1)
        rules = "".join((REPO / "workflow/rules" / f).read_text() for f in ("generate.smk", "downstream.smk", "evaluate.smk", "report.smk"))
        for rule in network_rules:
            body = rules[rules.index(f"rule {rule}:"):]
            body = body[: body.index("script:")]
            assert ("gpu=generator_gpus" if rule == "train_generator" else "gpu=1") in body, rule


def test_end_to_end_results_a_reviewer_can_trust(e2e_run):
    """Paired gains, the pixel baseline row, synthetic-only table, honest FID columns, provenance everywhere."""
    out = e2e_run
    gains = pd.read_csv(out / "tables/augmentation_gain.csv")
    assert {"arch", "trainset", "metric", "mean_gain", "ci_low", "ci_high", "n_seeds"} <= set(gains.columns)
    assert set(gains["metric"]) == {"auc", "accuracy"} and "cvae" not in set(gains["trainset"])  # synthetic-only
    runs = pd.read_csv(out / "tables/downstream.csv")
    r34 = runs[runs["arch"] == "resnet34"].set_index("variant")
    g = gains[(gains["arch"] == "resnet34") & (gains["trainset"] == "real+cvae.selected") & (gains["metric"] == "auc")]
    assert g["mean_gain"].iloc[0] == pytest.approx(r34.loc["real+cvae.selected", "auc"] - r34.loc["real", "auc"])
    assert "degenerate" in runs.columns and "pixel_logreg" in set(runs["arch"])
    summary = pd.read_csv(out / "tables/downstream_summary.csv")
    assert summary["row"].iloc[0] == "Logistic regression (pixels)"
    assert "Trained on synthetic images only" in (out / "report.md").read_text()
    assert set(pd.read_csv(out / "tables/synthetic_only.csv")["variant"]) == {"cvae", "real"}
    gen_md = (out / "tables/generation.md").read_text()
    # KID first below 2,048 images per side, FID marked as biased; the demo's bf16 Inception is named in both headers
    assert "KID ↓ [bf16 Inception] | FID ↓ (biased: N < 2048) [bf16 Inception]" in gen_md and "N real / generated" in gen_md
    gen = pd.read_csv(out / "tables/generation.csv").set_index("generator")
    assert gen.loc["cvae", "n_real"] == 50 and gen.loc["cvae", "n_fid"] == 50  # evaluation.max_images of e2e.yaml
    for table in ("downstream_summary.csv", "generation.csv", "augmentation_gain.csv", "attribute_error.csv"):
        stamped = pd.read_csv(out / "tables" / table)
        assert {"commit", "config_hash", "date"} <= set(stamped.columns) and stamped["commit"].str.len().min() >= 40
    assert (out / "report.md").read_text().rstrip().endswith("._") and "_Produced by commit" in (out / "report.md").read_text()
    assert (out / "tables/downstream_summary.tex").read_text().startswith("% produced by commit")


def test_snakemake_html_report_holds_every_table_and_figure(e2e_run, shared_patches_dir, tmp_path):
    html = tmp_path / "report.html"
    res = snakemake("--report", str(html), "--configfile", "config/demo.yaml", "tests/e2e.yaml",
                    "--config", f"data_dir={shared_patches_dir}", f"results_dir={e2e_run}")
    assert res.returncode == 0, res.stderr[-3000:]
    text = html.read_text(errors="replace")
    figures = sorted(p.name for p in (e2e_run / "figures").glob("*.png"))
    assert figures and all(name in text for name in figures), [n for n in figures if n not in text]
    for table in ("downstream_summary.csv", "augmentation_gain.csv", "attribute_error.csv", "attributegan_table1.csv"):
        assert table in text
    # every file under tables/ and figures/ is a declared output of some rule (so the DAG knows it)
    listed = snakemake("-n", "--forceall", "--configfile", "config/demo.yaml",
                       "tests/e2e.yaml", "--config", f"data_dir={shared_patches_dir}", f"results_dir={e2e_run}")
    planned = listed.stdout + listed.stderr
    for path in [*(e2e_run / "tables").iterdir(), *(e2e_run / "figures").iterdir()]:
        assert str(path) in planned, f"{path} is written but not declared as a rule output"
