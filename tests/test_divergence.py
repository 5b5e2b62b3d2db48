"""Faults a lab meets during training: diverging losses, forced reruns, corrupt and half-written
states, a kill during a save, and checkpoints with non-finite weights."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

import histaug.classifier_training as classifier_training
import histaug.gan_trainers as gan_trainers
from histaug.classifier_training import train_classifier
from histaug.classify import load_classifier
from histaug.generator_checkpoint import load_generator
from histaug.guard import DivergenceGuard, TrainingDiverged, divergence_settings, nonfinite_tensors
from histaug.losses import AdversarialObjective
from histaug.train_generator import train_generator
from histaug.utils import PipelineError
from models.hvitgan import DEMO_CONFIG
from models.hvitgan_objective import HViTGANObjective

from conftest import REPO, alternating_labels, capture_logger, tiny_cgan_cfg, tiny_cvae_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32", "downstream": "fp32",
                                                              "evaluation": "fp32"}}


def tiny_hvitgan_cfg(**over) -> dict:
    cfg = dict(DEMO_CONFIG)
    cfg.update(family="hvitgan", embed_dim=64, latent_dim=16, g_depth=1, batch_size=4, n_critic=1, lr=1e-4,
               betas=[0.0, 0.99], ema_decay=0.9, seed=0, **over)
    return cfg


CONFIGS = {"cgan": tiny_cgan_cfg, "cvae": tiny_cvae_cfg, "hvitgan": tiny_hvitgan_cfg}


@pytest.fixture(scope="module")
def patches(real_patches):
    return real_patches[:32], alternating_labels(32)


def poison(monkeypatch, owner, name: str, at_calls: set[int]):
    """Make ``owner.name`` (a loss function returning (loss, terms) or a loss) return NaN at the given calls."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] not in at_calls:
            return out
        if isinstance(out, tuple):
            loss, terms = out
            return loss * float("nan"), {k: v * float("nan") for k, v in terms.items()}
        return out * float("nan")

    monkeypatch.setattr(owner, name, poisoned)
    return calls


# which loss function each family's generator update goes through
GENERATOR_LOSS = {
    "cgan": (AdversarialObjective, "generator_loss"),
    "hvitgan": (HViTGANObjective, "generator_loss"),
    "cvae": (gan_trainers, "vae_loss"),
}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- the guard itself


def test_guard_names_the_first_bad_term_and_step_and_checks_weights():
    guard = DivergenceGuard("generator 'g' (family cgan)", "lower generators.g.lr (now 0.1)")
    guard.observe(1, {"d_loss": torch.tensor(1.0), "g_loss": torch.tensor(2.0)})
    guard.observe(2, {"d_loss": torch.tensor(float("inf")), "g_loss": torch.tensor(2.0)})
    guard.observe(3, {"d_loss": torch.tensor(float("nan")), "g_loss": torch.tensor(float("nan"))})
    with pytest.raises(TrainingDiverged) as exc:
        guard.check(4, note="No checkpoint was written.")
    msg = str(exc.value)
    assert exc.value.step == 4 and exc.value.term == "d_loss"
    assert "generator 'g' (family cgan)" in msg and "'d_loss' became inf at step 2" in msg
    assert "No checkpoint was written." in msg and "lower generators.g.lr (now 0.1)" in msg
    # a check resets what was observed; finite terms and weights pass
    guard.check(5, {"net": torch.nn.Linear(2, 2)})
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight[0, 1] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"weight tensor\(s\) of the net hold non-finite values \(first: weight, 1 of 6\)"):
        guard.check(6, {"net": net})
    assert nonfinite_tensors([("a", torch.ones(3)), ("b", torch.tensor([1.0, float("inf")]))]) == [("b", 1, 2)]


@pytest.mark.parametrize("cfg, message", [({"retries": -1}, "retries"), ({"lr_factor": 1.5}, "lr_factor"),
                                          ({"retry": 1}, "unknown")])
def test_divergence_settings_are_checked(cfg, message):
    with pytest.raises(PipelineError, match=message):
        divergence_settings(cfg)
    assert divergence_settings(None).retries == 0


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("family", ["cgan", "cvae", "hvitgan"])
def test_nan_in_a_generator_loss_stops_the_job_and_keeps_the_last_good_state(tmp_path, patches, monkeypatch, family):
    """NaN injected into the generator loss at step 3 (log every 4, states every 2): the job stops at the
    step-4 save, before it; nothing is written from the diverged state; the step-2 state stays."""
    x, y = patches
    owner, name = GENERATOR_LOSS[family]
    poison(monkeypatch, owner, name, {3})
    cfg = CONFIGS[family](steps=6, checkpoint_every=2, log_every=4)
    out = tmp_path / "g" / "checkpoint.pt"
    with pytest.raises(TrainingDiverged) as exc:
        train_generator(family, cfg, x, y, 2, out, tmp_path / "g" / "state", CPU)
    msg = str(exc.value)
    assert f"generator '{family}' (family {family})" in msg and "at step 3" in msg and "by step 4" in msg
    # a term of the poisoned loss is named (not the gradient norm it caused)
    assert "grad_norm" not in exc.value.term and f"loss term {exc.value.term!r}" in msg
    assert f"generators.{family}.lr" in msg and "divergence.retries" in msg
    assert "the last good training state (step 2) is kept" in msg
    assert not out.exists() and not (out.parent / "history.csv").exists()
    state = torch.load(tmp_path / "g" / "state" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert not nonfinite_tensors(*(part.items() for part in state["trainer"].values() if isinstance(part, dict)
                                   and all(torch.is_tensor(v) for v in part.values())))
    assert all(np.isfinite([v for k, v in row.items() if k != "step"]).all() for row in state["history"])


def test_diverging_cvae_at_a_huge_learning_rate_is_an_error_naming_the_lr(tmp_path, patches):
    x, y = patches
    cfg = tiny_cvae_cfg(steps=40, lr=1e6, log_every=10, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match=r"lower generators\.cvae\.lr \(now 1000000\.0\)"):
        train_generator("cvae", cfg, x, y, 2, tmp_path / "checkpoint.pt", tmp_path / "state", CPU)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_retry_resumes_from_the_last_good_state_at_a_lower_learning_rate(tmp_path, patches, monkeypatch):
    x, y = patches
    poison(monkeypatch, AdversarialObjective, "generator_loss", {3})
    log, messages = capture_logger("retry")
    cfg = tiny_cgan_cfg(steps=6, checkpoint_every=2, log_every=1, keep_state=True)
    out = tmp_path / "checkpoint.pt"
    summary = train_generator("cgan", cfg, x, y, 2, out, tmp_path / "state", CPU, log=log,
                              divergence={"retries": 2, "lr_factor": 0.25})
    assert summary["divergence_retries"] == [{"step": 3, "term": "g_adv", "lr_scale": 0.25}]
    assert summary["lr_scale"] == 0.25 and summary["resumed_from"] == 2
    assert any("retry 1 of 2" in m for m in messages.messages)
    assert torch.load(out, weights_only=True)["summary"]["lr_scale"] == 0.25
    state = torch.load(tmp_path / "state" / "last.pt", weights_only=True)
    assert state["lr_scale"] == 0.25
    assert [g["lr"] for g in state["trainer"]["opt_g"]["param_groups"]] == [pytest.approx(2e-4 * 0.25)]
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["step"].tolist() == list(range(1, 7)) and np.isfinite(hist.drop(columns="step").to_numpy()).all()


def test_retries_that_keep_diverging_end_in_the_error(tmp_path, patches):
    x, y = patches
    cfg = tiny_cvae_cfg(steps=20, lr=1e6, log_every=5, checkpoint_every=5)
    with pytest.raises(TrainingDiverged, match="2 automatic retries"):
        train_generator("cvae", cfg, x, y, 2, tmp_path / "c.pt", tmp_path / "s", CPU,
                        divergence={"retries": 2, "lr_factor": 0.9})


# --------------------------------------------------------------------------- reruns and state files


def test_a_rerun_after_completion_trains_afresh(tmp_path, patches):
    """--forcerun on a finished generator: the state is gone, so it trains all steps again (same result)."""
    x, y = patches
    cfg = tiny_cgan_cfg(steps=4, checkpoint_every=2)
    out = tmp_path / "checkpoint.pt"
    first = train_generator("cgan", cfg, x, y, 2, out, tmp_path / "state", CPU)
    assert not (tmp_path / "state").exists()
    weights = torch.load(out, weights_only=True)["generator_state"]
    again = train_generator("cgan", cfg, x, y, 2, out, tmp_path / "state", CPU)
    assert (first["steps_run"], again["steps_run"], again["resumed_from"]) == (4, 4, 0)
    assert states_equal(weights, torch.load(out, weights_only=True)["generator_state"])


def test_a_kept_finished_state_is_not_resumed_by_a_rerun(tmp_path, patches):
    x, y = patches
    cfg = tiny_cgan_cfg(steps=4, checkpoint_every=2, keep_state=True)
    train_generator("cgan", cfg, x, y, 2, tmp_path / "c.pt", tmp_path / "state", CPU)
    assert torch.load(tmp_path / "state" / "last.pt", weights_only=True)["step"] == 4
    log, messages = capture_logger("finished")
    again = train_generator("cgan", cfg, x, y, 2, tmp_path / "c.pt", tmp_path / "state", CPU, log=log)
    assert again["resumed_from"] == 0 and again["steps_run"] == 4
    assert any("finished run" in m for m in messages.messages)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_state_is_moved_aside_with_a_warning(tmp_path, patches, damage):
    x, y = patches
    cfg = tiny_cvae_cfg(steps=4, checkpoint_every=2, keep_state=True)
    state_dir = tmp_path / "state"
    train_generator("cvae", tiny_cvae_cfg(steps=2, keep_state=True), x, y, 2, tmp_path / "c.pt", state_dir, CPU)
    last = state_dir / "last.pt"
    data = last.read_bytes()
    last.write_bytes(b"not a torch file" if damage == "garbage" else data[: len(data) // 2])
    log, messages = capture_logger(damage)
    summary = train_generator("cvae", cfg, x, y, 2, tmp_path / "c.pt", state_dir, CPU, log=log)
    assert summary["resumed_from"] == 0 and summary["steps_run"] == 4
    aside = list(state_dir.glob("last.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes()[:16] == (b"not a torch file" if damage == "garbage" else data[:16])
    assert any("cannot read the saved training state" in m and aside[0].name in m for m in messages.messages)


def test_orphan_temporary_files_are_removed(tmp_path, patches):
    x, y = patches
    (tmp_path / "state").mkdir()
    orphan = tmp_path / "state" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a file")
    out_orphan = tmp_path / ".checkpoint.pt.xyz.tmp"
    out_orphan.write_bytes(b"half a checkpoint")
    train_generator("cvae", tiny_cvae_cfg(steps=2), x, y, 2, tmp_path / "checkpoint.pt", tmp_path / "state", CPU)
    assert not orphan.exists() and not out_orphan.exists()


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import numpy as np, torch
    import histaug.training_state as ts
    from histaug.train_generator import train_generator
    from conftest import tiny_cgan_cfg
    x = np.load({data!r}); y = (np.arange(len(x)) % 2).astype(np.int64)
    real_save, calls = torch.save, {{"n": 0}}
    def slow_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if isinstance(obj, dict) and "trainer" in obj:
            calls["n"] += 1
            if calls["n"] == 2:  # the step-4 state is in its temporary file, not yet renamed
                open({marker!r}, "w").close()
                time.sleep(600)
    ts.torch.save = slow_save
    torch.set_num_threads(1)
    train_generator("cgan", tiny_cgan_cfg(steps=6, checkpoint_every=2), x, y, 2, {out!r}, {state!r},
                    {{"device": "cpu", "channels_last": False, "precision": {{"generators": "fp32"}}}})
""")


def test_a_kill_during_a_save_then_a_rerun_equals_an_uninterrupted_run(tmp_path, patches):
    x, y = patches
    cfg = tiny_cgan_cfg(steps=6, checkpoint_every=2)
    straight = tmp_path / "straight" / "checkpoint.pt"
    train_generator("cgan", cfg, x, y, 2, straight, tmp_path / "straight" / "state", CPU)

    np.save(tmp_path / "x.npy", x)
    out, state, marker = tmp_path / "killed" / "checkpoint.pt", tmp_path / "killed" / "state", tmp_path / "saving"
    script = KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(tmp_path / "x.npy"),
                                marker=str(marker), out=str(out), state=str(state))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HISTAUG_NO_PROGRESS": "1"})
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, "the training process ended before its second save"
        assert time.time() < deadline, "no second save within 240 s"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    orphans = list(state.glob(".last.pt.*.tmp"))
    assert len(orphans) == 1 and torch.load(state / "last.pt", weights_only=True)["step"] == 2
    assert not out.exists()

    summary = train_generator("cgan", cfg, x, y, 2, out, state, CPU)
    assert summary["resumed_from"] == 2 and not orphans[0].exists()
    a, b = torch.load(straight, weights_only=True), torch.load(out, weights_only=True)
    for key in ("generator_state", "discriminator_state"):
        assert states_equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(straight.parent / "history.csv"), pd.read_csv(out.parent / "history.csv"))


# --------------------------------------------------------------------------- non-finite checkpoints


def test_sampling_refuses_a_checkpoint_with_non_finite_weights(tmp_path, patches):
    x, y = patches
    out = tmp_path / "checkpoint.pt"
    train_generator("cvae", tiny_cvae_cfg(steps=2), x, y, 2, out, tmp_path / "state", CPU)
    load_generator(out)  # fine as trained
    ckpt = torch.load(out, weights_only=True)
    key = next(iter(ckpt["generator_state"]))
    ckpt["generator_state"][key] = ckpt["generator_state"][key].clone().fill_(float("nan"))
    torch.save(ckpt, out)
    with pytest.raises(PipelineError, match=r"non-finite weight.*diverged"):
        load_generator(out)


# --------------------------------------------------------------------------- the classifier


@pytest.fixture(scope="module")
def split(real_patches):
    x = real_patches[:96]
    y = (x.reshape(len(x), -1).mean(axis=1) > np.median(x.reshape(len(x), -1).mean(axis=1))).astype(np.int64)
    return x[:64], y[:64], x[64:], y[64:]


CLS_CFG = {"image_size": 16, "epochs": 3, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4, "augment": False,
           "pretrained": {}}


def test_nan_in_the_classifier_loss_stops_after_the_epoch(tmp_path, split, monkeypatch):
    poison(monkeypatch, classifier_training.F, "cross_entropy", {6})  # epoch 2 (4 steps per epoch), step 6
    with pytest.raises(TrainingDiverged) as exc:
        train_classifier("resnet34", *split, CLS_CFG, CPU, seed=0, out_dir=tmp_path)
    msg = str(exc.value)
    assert "classifier resnet34 (seed 0)" in msg and "at step 6" in msg and "by step 8" in msg
    assert exc.value.term == "loss" and "downstream.lr" in msg and "epoch 1" in msg
    assert not (tmp_path / "model.pt").exists()
    assert torch.load(tmp_path / "state" / "last.pt", weights_only=True)["epoch"] == 1


def test_classifier_retry_and_corrupt_state(tmp_path, split, monkeypatch):
    poison(monkeypatch, classifier_training.F, "cross_entropy", {6})
    log, messages = capture_logger("cls")
    summary = train_classifier("resnet34", *split, CLS_CFG, CPU, seed=0, out_dir=tmp_path / "a", log=log,
                               divergence={"retries": 1, "lr_factor": 0.5})
    assert summary["finished"] and summary["lr_scale"] == 0.5 and summary["divergence_retries"][0]["step"] == 8
    model, meta = load_classifier(tmp_path / "a" / "model.pt")
    assert meta["lr_scale"] == 0.5
    monkeypatch.undo()

    train_classifier("resnet34", *split, CLS_CFG, CPU, seed=0, out_dir=tmp_path / "b", stop_after=1)
    (tmp_path / "b" / "state" / "last.pt").write_bytes(b"\x00" * 100)
    log, messages = capture_logger("cls_corrupt")
    result = train_classifier("resnet34", *split, CLS_CFG, CPU, seed=0, out_dir=tmp_path / "b", log=log)
    assert result["resumed_from_epoch"] == 0 and result["finished"]
    # the finished run removes its state, but the corrupt file stays for inspection
    assert not (tmp_path / "b" / "state" / "last.pt").exists()
    aside = list((tmp_path / "b" / "state").glob("last.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"\x00" * 100
    assert any("moved it to" in m and aside[0].name in m for m in messages.messages)


def test_load_classifier_refuses_non_finite_weights(tmp_path, split):
    train_classifier("resnet34", *split, {**CLS_CFG, "epochs": 1}, CPU, seed=0, out_dir=tmp_path)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key].clone().fill_(float("inf"))
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(PipelineError, match="non-finite"):
        load_classifier(tmp_path / "model.pt")


def test_generate_refuses_non_finite_images():
    from histaug.sampling import generate

    class Broken(torch.nn.Module):
        latent_dim, image_size = 4, 8

        def forward(self, z, y):
            out = torch.zeros(len(z), 3, 8, 8)
            out[0, 0, 0, 0] = float("nan")
            return out

    with pytest.raises(PipelineError, match="non-finite pixel values"):
        generate(Broken(), {0: 2, 1: 2}, tau=0.7, seed=0)
