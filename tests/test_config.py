"""Config validation: the shipped configs pass, mistakes are named."""
from pathlib import Path

import pytest

from histaug.config import downstream_runs, head_generator, load_config, selector_for, validate_config
from histaug.utils import PipelineError

REPO = Path(__file__).resolve().parents[1]


def load(*names):
    return load_config(*(REPO / n for n in names))


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
    (lambda c: c["downstream"].update(trainsets=["real", "real+nope.selected"]), r"downstream\.trainsets lists 'real\+nope\.selected'.*'nope'"),
    (lambda c: c["downstream"].update(trainsets=["real", "real+cgan.best"]), r"downstream\.trainsets\[1\]"),
    (lambda c: c["downstream"].update(head_classifiers=[{"generator": "cgan", "trainsets": ["real"]}]),
     r"head_classifiers\.cgan: family 'cgan' has no classification head"),
    (lambda c: c["downstream"].update(head_classifiers=[{"generator": "ghost", "trainsets": ["real"]}]),
     r"head_classifiers\.ghost: 'ghost' is not in run_generators"),
    (lambda c: c["downstream"].update(head_classifiers=[{"generator": "hvitgan", "trainsets": ["real+nope"]}]),
     r"head_classifiers\.hvitgan lists 'real\+nope'"),
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
    paper["downstream"]["trainsets"] = ["real", "real+hv.selected"]
    paper["downstream"]["head_classifiers"] = [{"generator": "hv", "trainsets": ["real"]}]
    paper["report"]["tsne"] = [{"samples": "hv.selected"}]
    paper["selection"]["selector"] = "head"
    validate_config(paper)


def test_auto_selector_and_runs(paper):
    """`auto` picks the generator's own head where its family has one (HViTGAN 2.3), the real-data classifier elsewhere;
    the paper config lists Table 1's rows and the slides' (3 CNNs x 11 training sets, four of them synthetic-only),
    then the two Cls Head blocks."""
    assert selector_for(paper, "hvitgan") == "head" and selector_for(paper, "medvitgan") == "head"
    assert selector_for(paper, "cgan") == "baseline"
    paper["selection"]["selector"] = "baseline"
    assert selector_for(paper, "hvitgan") == "baseline"
    runs = downstream_runs(paper)
    assert len(runs) == 3 * 11 + 1 + 4
    assert runs[:5] == [("resnet34", t) for t in ["real", "real+medvitgan", "real+hvitgan", "real+hvitgan_nocp.selected",
                                                   "real+hvitgan.selected"]]
    assert runs[33] == ("medvitgan_head", "real") and runs[-1] == ("hvitgan_head", "real+hvitgan.selected")
    assert head_generator("hvitgan_nocp_head") == "hvitgan_nocp" and head_generator("resnet50_cbam") is None


def test_paper_config_sizes(paper):
    """The paper's stated sizes: a subset of 32,768 (its count, see the comment in config.yaml), 96 px, batch 12,
    Adam(0, 0.99) at 1e-4, tau 0.7, lambda 0.6, five seeds; Fig. 3's loss scenarios are all defined."""
    assert paper["subset"]["count"] == 32768
    g = paper["generators"]
    for name in ("hvitgan", "hvitgan_nocp", "medvitgan"):
        assert (g[name]["image_size"], g[name]["batch_size"], g[name]["lr"], g[name]["betas"]) == (96, 12, 1e-4, [0.0, 0.99])
    assert g["hvitgan"]["class_projection"] and not g["hvitgan_nocp"]["class_projection"]
    assert {g[n]["weighing"] for n in paper["run_generators"] if g[n]["family"] == "hvitgan"} == {"hvitgan", "none", "all", "kendall"}
    assert (paper["sampling"]["tau"], paper["selection"]["lambda"], len(paper["downstream"]["seeds"])) == (0.7, 0.6, 5)


def test_layered_files_merge_like_snakemake():
    """Mappings merge key by key, lists are replaced: the demo's head_classifiers list replaces the paper's."""
    demo = load("config/config.yaml", "config/demo.yaml")
    assert [h["generator"] for h in demo["downstream"]["head_classifiers"]] == ["medvitgan", "hvitgan"]
    assert demo["generators"]["hvitgan"]["label"] == "HViTGAN"          # kept from the paper entry
    assert demo["generators"]["hvitgan"]["image_size"] == 32            # overridden by the demo
    # every generator of HViTGAN's Table 1 runs in the demo, the ablation inheriting the demo's ViT sizes
    assert {"medvitgan", "hvitgan", "hvitgan_nocp"} <= set(demo["run_generators"])
    assert demo["generators"]["hvitgan_nocp"]["image_size"] == 32 and not demo["generators"]["hvitgan_nocp"]["class_projection"]


def test_synthetic_only_sets_run_on_synthetic_archs(paper):
    """`downstream.synthetic_archs` limits the train-on-synthetic sets (the slides train one classifier); the sets
    with real images still run on every architecture; an architecture outside `archs` is refused."""
    ds = paper["downstream"]
    ds.update(archs=["resnet34", "densenet169"], trainsets=["real", "real+cvae", "cvae", "hvitgan.selected"],
              head_classifiers=None, synthetic_archs=["resnet34"])
    assert downstream_runs(paper) == [("resnet34", "real"), ("resnet34", "real+cvae"), ("resnet34", "cvae"),
                                      ("resnet34", "hvitgan.selected"), ("densenet169", "real"), ("densenet169", "real+cvae")]
    ds["synthetic_archs"] = None
    assert len(downstream_runs(paper)) == 8
    ds["synthetic_archs"] = ["resnet50_cbam"]
    with pytest.raises(PipelineError, match="synthetic_archs"):
        validate_config(paper)


@pytest.mark.parametrize("files", [["config/config.yaml"], ["config/config.yaml", "config/demo.yaml"]])
def test_every_configured_generator_builds(files):
    """Each run_generators entry of the shipped configs gives networks (built on the meta device: the
    shapes and the config checks, no memory), so no entry fails only when its job starts on a cluster."""
    import torch

    from histaug.generator_runs import condition_attribute, generator_condition
    from models.conditioning import Condition
    from models.registry import build_generator

    from histaug.generator_runs import generator_group

    cfg = validate_config(load(*files))
    levels = {a["name"]: a["levels"] for a in cfg["attributes"]["pixels"]["attributes"]}
    # one run per expanded entry (the per-attribute BigGANs differ only in their condition's levels)
    runs = {generator_group(cfg, gen): gen for gen in reversed(cfg["run_generators"])}
    for gen in runs.values():
        kind = generator_condition(cfg, gen)
        condition = {"class": Condition.classes(2),
                     "attributes": Condition.attributes(list(levels), list(levels.values())),
                     "attribute": Condition("class", (levels.get(condition_attribute(cfg, gen), 2),),
                                            (str(condition_attribute(cfg, gen)),))}[kind]
        with torch.device("meta"):
            parts = build_generator(cfg["generators"][gen], condition, name=gen)
        assert parts.generator.latent_dim == (cfg["generators"][gen].get("latent_dim") or parts.generator.latent_dim)
