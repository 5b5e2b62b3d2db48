"""Config validation: the shipped configs pass, mistakes are named."""
import copy
from pathlib import Path

import pytest
import yaml

from histaug.config import validate_config
from histaug.utils import PipelineError

REPO = Path(__file__).resolve().parents[1]


def load(*names):
    cfg = {}
    for n in names:
        cfg = merge(cfg, yaml.safe_load((REPO / n).read_text()))
    return cfg


def merge(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def paper():
    return load("config/config.yaml")


def test_shipped_configs_are_valid(paper):
    validate_config(paper)
    validate_config(load("config/config.yaml", "config/demo.yaml"))
    validate_config(load("config/config.yaml", "config/demo.yaml", "tests/e2e.yaml"))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["sampling"].update(bogus=1), r"sampling: .*'bogus'"),
    (lambda c: c["downstream"].update(archs=["resnet18"]), r"downstream\.archs\[0\]"),
    (lambda c: c["generators"]["cgan"].update(family="stylegan9"), r"generators\.cgan\.family='stylegan9'"),
    (lambda c: c["downstream"].update(generators=["nope"]), r"downstream\.generators lists 'nope'"),
    (lambda c: c.update(run_generators=["cgan", "ghost"]), r"run_generators lists 'ghost'"),
    (lambda c: c["selection"].update(selector="head"), r"selection\.selector='head'.*cgan"),
    (lambda c: c["selection"].update(selector_arch="densenet169") or c["downstream"].update(archs=["resnet34"]),
     r"selection\.selector_arch"),
    (lambda c: c["split"].update(fractions={"train": 0.5, "valid": 0.2, "test": 0.2}), r"split\.fractions"),
    (lambda c: c["compute"].update(device="tpu"), r"compute\.device"),
    (lambda c: c.update(data_dir="/nonexistent/folder"), r"data_dir=.*not found"),
])
def test_mistakes_are_named(paper, mutate, message):
    mutate(paper)
    with pytest.raises(PipelineError, match=message):
        validate_config(paper)


def test_head_selector_accepted_for_generators_with_a_class_head(paper):
    paper["generators"] = {"hv": {"family": "hvitgan", "image_size": 32, "latent_dim": 64, "batch_size": 12, "steps": 10}}
    paper["run_generators"] = ["hv"]
    paper["downstream"]["generators"] = ["hv"]
    paper["selection"]["selector"] = "head"
    validate_config(paper)
