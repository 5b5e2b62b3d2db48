"""downstream.seeds_in_one_job: one train_classifier job trains every seed in turn and gives each seed the
same files, byte for byte, as a job of its own."""
from __future__ import annotations

import json
import re

import yaml

from test_pipeline import snakemake

SETTINGS = {"downstream": {"archs": ["resnet34"], "seeds": [0, 1], "trainsets": ["real"], "head_classifiers": [],
                           "epochs": 1, "arch_overrides": {"resnet34": {"epochs": 1}}}}


def _run(tmp_path, shared_patches_dir, name, one_job, *targets):
    settings = json.loads(json.dumps(SETTINGS))
    settings["downstream"]["seeds_in_one_job"] = one_job
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    out = tmp_path / name
    res = snakemake("--configfile", "config/demo.yaml", "tests/e2e.yaml", str(cfg),
                    "--config", f"data_dir={shared_patches_dir}", f"results_dir={out}",
                    "--", *[str(out / t) for t in targets])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    jobs = re.search(r"^train_classifier\s+(\d+)\s*$", res.stdout + res.stderr, flags=re.M)
    return out, int(jobs.group(1)) if jobs else 0


def test_one_job_for_all_seeds_equals_a_job_per_seed(tmp_path, shared_patches_dir):
    files = [f"downstream/resnet34/real/seed{s}/{f}" for s in (0, 1) for f in ("metrics.json", "predictions.csv")]
    together, n_together = _run(tmp_path, shared_patches_dir, "together", True, *files)
    alone, n_alone = _run(tmp_path, shared_patches_dir, "alone", False, "downstream/resnet34/real/seed1/metrics.json")
    assert (n_together, n_alone) == (1, 1)
    log = (together / "logs/train_classifier/resnet34/real/all_seeds.log").read_text()
    assert "seed 0 test:" in log and "seed 1 test:" in log
    assert (alone / "logs/train_classifier/resnet34/real/seed1.log").exists()
    assert not (alone / "downstream/resnet34/real/seed0").exists()

    def metrics(root):
        m = json.loads((root / "downstream/resnet34/real/seed1/metrics.json").read_text())
        m.pop("train_seconds")
        return m

    assert metrics(together) == metrics(alone)
    assert metrics(together)["seed"] == 1
    pred = "downstream/resnet34/real/seed1/predictions.csv"
    assert (together / pred).read_bytes() == (alone / pred).read_bytes()
    seed0 = (together / "downstream/resnet34/real/seed0/predictions.csv").read_bytes()
    assert seed0 != (together / pred).read_bytes()  # the seeds really differ
