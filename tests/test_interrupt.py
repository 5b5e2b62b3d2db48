"""A generator job killed with SIGKILL (Snakemake and the job together), then `--unlock` and a rerun
with `--rerun-incomplete`, as the README says: the rerun resumes from the last training state and
writes the same final checkpoint, bit for bit, as an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 240, 20


def command(results: Path, data_dir: Path, layer: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/demo.yaml", "tests/e2e.yaml",
            str(layer), "--config", f"data_dir={data_dir}", f"results_dir={results}", *extra, "--",
            f"{results}/generators/cgan/checkpoint.pt"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, HISTAUG_NO_PROGRESS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def networks(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {"generator": ckpt["generator_state"], "discriminator": ckpt["discriminator_state"], "step": ckpt["step"]}


def test_kill_9_unlock_rerun_gives_the_uninterrupted_checkpoint(tmp_path, shared_patches_dir):
    layer = tmp_path / "layer.yaml"
    layer.write_text(yaml.safe_dump({"generators": {"cgan": {"steps": STEPS, "checkpoint_every": EVERY,
                                                                "log_every": EVERY}}}))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    res = run(command(reference, shared_patches_dir, layer))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]

    # the same run, killed with SIGKILL once the job has saved a training state
    cmd = command(killed, shared_patches_dir, layer)
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, HISTAUG_NO_PROGRESS="1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "generators/cgan/state/last.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "the job ended before it saved a training state; raise STEPS"
    checkpoint = killed / "generators/cgan/checkpoint.pt"
    assert not checkpoint.exists(), "the job finished before the kill; raise STEPS"

    # the killed Snakemake left its lock: the same command refuses to run and names --unlock
    locked = run(cmd)
    message = locked.stdout + locked.stderr
    assert locked.returncode != 0 and "cannot be locked" in message and "--unlock" in message, message[-2000:]
    unlocked = run(command(killed, shared_patches_dir, layer, "--unlock"))
    assert unlocked.returncode == 0, (unlocked.stdout + unlocked.stderr)[-4000:]
    rerun = run(command(killed, shared_patches_dir, layer, "--rerun-incomplete"))
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]

    log = (killed / "logs/train_generator/cgan.log").read_text()
    resumed = [line for line in log.splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and f"/{STEPS}" in resumed[0], log[-3000:]
    step = int(resumed[0].split(" at step ")[1].split("/")[0])
    assert 0 < step < STEPS and step % EVERY == 0
    a, b = networks(reference / "generators/cgan/checkpoint.pt"), networks(checkpoint)
    assert a["step"] == b["step"] == STEPS
    for net in ("generator", "discriminator"):
        assert a[net].keys() == b[net].keys()
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), f"{net} differs after the resume"
    assert not state.parent.exists()  # the finished job removed its training state
