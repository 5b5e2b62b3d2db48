"""Per-attribute runs (one config entry -> one run per attribute) and AttributeGAN's Table 1."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histaug.attribute_error import REAL
from histaug.attributegan_table import PAPER_TABLE1, build_table, paper_markdown, table_rows, to_latex, to_markdown
from histaug.config import load_config, validate_config
from histaug.generator_runs import attribute_conditioned, condition_attribute, expand_per_attribute, generator_group
from histaug.utils import PipelineError

from conftest import REPO  # noqa: E402

NAMES = ["density", "crowding", "stroma"]


def config_with(**generators) -> dict:
    cfg = {"run_generators": list(generators), "generators": generators}
    return cfg


def test_per_attribute_entry_expands_into_one_run_per_attribute():
    cfg = config_with(biggan={"family": "cgan", "label": "BigGAN", "condition": "per_attribute", "steps": 5},
                      ag={"family": "cvae", "condition": "attributes"})
    expand_per_attribute(cfg, NAMES)
    assert cfg["run_generators"] == ["biggan_density", "biggan_crowding", "biggan_stroma", "ag"]
    run = cfg["generators"]["biggan_crowding"]
    assert run["condition"] == {"attribute": "crowding"} and run["label"] == "BigGAN (crowding)" and run["steps"] == 5
    assert generator_group(cfg, "biggan_crowding") == "biggan" and generator_group(cfg, "ag") == "ag"
    assert condition_attribute(cfg, "biggan_stroma") == "stroma" and condition_attribute(cfg, "ag") is None
    assert attribute_conditioned(cfg, "biggan_density") and attribute_conditioned(cfg, "ag")
    with pytest.raises(PipelineError, match="needs attributes"):
        expand_per_attribute(config_with(b={"family": "cgan", "condition": "per_attribute"}), [])


def test_the_demo_config_expands_biggan_and_validates(tmp_path):
    cfg = load_config(REPO / "config/config.yaml", REPO / "config/demo.yaml")
    cfg["results_dir"] = str(tmp_path)
    validate_config(cfg)
    biggan = [g for g in cfg["run_generators"] if generator_group(cfg, g) == "biggan"]
    assert biggan == [f"biggan_{a['name']}" for a in cfg["attributes"]["pixels"]["attributes"]]
    rows = [r["generators"] for r in cfg["report"]["attributegan_table"]]
    assert rows == ["biggan", "attributegan_noea", "attributegan_noccl", "attributegan"]


def _errors(models_attributes: dict) -> pd.DataFrame:
    rows = []
    for model, values in models_attributes.items():
        for attribute, (err, oracle) in values.items():
            rows.append({"model": model, "attribute": attribute, "error": err, "oracle_error": oracle, "n_images": 10})
    return pd.DataFrame(rows)


def test_table_averages_fid_over_runs_and_takes_each_runs_own_attribute(tmp_path):
    runs_of = {"biggan": ["biggan_density", "biggan_crowding", "biggan_stroma"], "ag": ["ag"]}
    rows = table_rows([{"generators": "biggan", "label": "BigGAN"}, {"generators": "ag", "label": "AttributeGAN"}], runs_of)
    fids = {"biggan_density": 100.0, "biggan_crowding": 120.0, "biggan_stroma": 140.0, "ag": 50.0}
    files = {}
    for run, fid in fids.items():
        files[run] = tmp_path / f"{run}.json"
        files[run].write_text(json.dumps({"generator": run, "fid": fid}))
    errors = _errors({REAL: {a: (0.01, 0.0) for a in NAMES},
                      "biggan_density": {"density": (0.3, 0.2)}, "biggan_crowding": {"crowding": (0.4, 0.5)},
                      "biggan_stroma": {"stroma": (0.5, 0.6)},
                      "ag": {"density": (0.1, 0.11), "crowding": (0.2, 0.21), "stroma": (0.05, 0.06)}})
    table = build_table(rows, files, errors, NAMES)
    assert table["model"].tolist() == [REAL, "BigGAN", "AttributeGAN"]
    big = table.set_index("model").loc["BigGAN"]
    assert big["FID"] == pytest.approx(120.0) and big["FID_runs"] == 3
    assert (big["density"], big["crowding"], big["stroma"]) == (0.3, 0.4, 0.5)
    assert big["crowding (oracle)"] == 0.5
    assert np.isnan(table.set_index("model").loc[REAL, "FID"])
    md = to_markdown(table)
    assert "120.00 (mean of 3)" in md and "| Real images | – | .010 |" in md
    assert r"\begin{tabular}" in to_latex(table, "caption")
    with pytest.raises(PipelineError, match=r"attributegan_table\[0\]\.generators='nope'"):
        table_rows([{"generators": "nope"}], runs_of)


def test_paper_numbers_are_the_published_table():
    assert PAPER_TABLE1.set_index("model").loc["AttributeGAN", "FID"] == 53.689
    assert PAPER_TABLE1.set_index("model").loc["BigGAN", "cell crowding"] == 0.112
    md = paper_markdown()
    assert "| AttributeGAN w/o CCL | 55.77 |" in md and "| Real Images | – | .011 |" in md


def test_rows_of_entries_that_this_run_does_not_train_are_left_out():
    rows = table_rows([{"generators": "biggan"}, {"generators": "ag"}], {"ag": ["ag"]}, defined=["biggan", "ag"])
    assert [r["entry"] for r in rows] == ["ag"]
    with pytest.raises(PipelineError, match="'typo'"):
        table_rows([{"generators": "typo"}], {"ag": ["ag"]}, defined=["biggan", "ag"])
