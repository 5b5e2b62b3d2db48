"""profiles/slurm through the real snakemake-executor-plugin-slurm, on stand-in Slurm commands.

tests/slurm_standin/ holds sbatch, srun, squeue, sacct, scontrol, scancel, sinfo and sacctmgr: they
record every call, check each request against a two-partition cluster (cpu without GPUs, gpu with
four) and sbatch runs each job here. The data rules (ingest, labels, subset) first run locally on the
shared real patches; then `snakemake --profile profiles/slurm` submits a two-GPU rule (train_generator
of a generator with `gpus: 2`, which trains in two torchrun processes) and a CPU rule on the profile's defaults (pixel_baseline) side by side, and each submission is
checked against what its rule asks for: partition, GPUs, CPUs = threads, memory, time limit, account.
(Every job costs two Snakemake start-ups and a torch import, so the run keeps to two jobs.)
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "slurm_standin"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TINY = STANDIN / "tiny.yaml"
PLACEHOLDER = "EDIT_ME_ACCOUNT"
ACCOUNT = "histaug_ci"
CLUSTER = {
    "accounts": [ACCOUNT],
    "partitions": {
        "cpu": {"cpus": 64, "mem_mb": 256000, "gpus": 0, "max_minutes": 7 * 24 * 60, "default": True},
        "gpu": {"cpus": 64, "mem_mb": 512000, "gpus": 4, "max_minutes": 7 * 24 * 60},
    },
}
RUN_RULES = {"train_generator", "pixel_baseline"}
BOOLEAN_FLAGS = {"--parsable", "--requeue", "--no-requeue", "--exclusive"}


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def gpu_rules() -> dict[str, str]:
    """Rules whose body in workflow/rules/*.smk declares GPUs under resources, with what they ask for:
    `1`, or `generator_gpus` (generators.<gen>.gpus)."""
    rules = {}
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        bodies = re.split(r"^\s*rule (\w+):", path.read_text(), flags=re.M)
        for name, body in zip(bodies[1::2], bodies[2::2]):
            match = re.search(r"^\s*gpu\s*=\s*(1|generator_gpus)\b", body, re.M)
            if match:
                rules[name] = match.group(1)
    return rules


def expected_gpus(rule: str) -> str:
    """The GPUs a submitted job of ``rule`` must ask for in this test's run (tiny.yaml: the cVAE asks for 2)."""
    return str(yaml.safe_load(TINY.read_text())["generators"]["cvae"]["gpus"]) if gpu_rules()[rule] != "1" else "1"


def account_override(cfg: dict, account: str) -> list[str]:
    """The profile's default-resources with another account, as `--default-resources` takes them."""
    return [f"{key}={account if key == 'slurm_account' else value}" for key, value in cfg["default-resources"].items()]


def flags(argv: list[str]) -> dict[str, str]:
    """sbatch/srun options as {option: value}: `--opt=value`, `--opt value`, `-o value`, `-n1`."""
    out, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        token = argv[i]
        if "=" in token:
            key, value = token.split("=", 1)
        elif token in BOOLEAN_FLAGS:
            key, value = token, "true"
        elif re.fullmatch(r"-[a-zA-Z]\S+", token):
            key, value = token[:2], token[2:]
        else:
            key, value = token, argv[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def standin_env(state: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    path = os.pathsep.join([str(STANDIN), str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "PATH": path, "STANDIN_SLURM_STATE": str(state), "HISTAUG_NO_PROGRESS": "1"}


def config_args(results: Path, data_dir: Path) -> list[str]:
    return ["--configfile", "config/demo.yaml", "tests/slurm_standin/tiny.yaml",
            "--config", f"data_dir={data_dir}", f"results_dir={results}"]


def run_profile(state: Path, results: Path, data_dir: Path, targets: list[str], *extra: str):
    state.mkdir(parents=True, exist_ok=True)
    (state / "cluster.json").write_text(json.dumps(CLUSTER))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *config_args(results, data_dir),
           # the plugin first looks 40 s after a submission; the stand-in's jobs are done at once
           "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
           "--slurm-logdir", str(state / "slurm_logs"), "--slurm-keep-successful-logs", *extra, "--", *targets]
    return subprocess.run(cmd, cwd=REPO, env=standin_env(state), capture_output=True, text=True, timeout=300)


def calls(state: Path, tool: str) -> list[dict]:
    path = state / "calls.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [c for c in map(json.loads, lines) if c["tool"] == tool]


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, shared_patches_dir):
    tmp = tmp_path_factory.mktemp("slurm")
    results = tmp / "results"
    t0 = time.time()
    prep = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *config_args(results, shared_patches_dir),
                           "--", f"{results}/data/train_subset.csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, (prep.stdout + prep.stderr)[-4000:]
    t1 = time.time()
    targets = [f"{results}/generators/cvae/checkpoint.pt", f"{results}/downstream/pixel_logreg/real/seed0/metrics.json"]
    res = run_profile(tmp / "cluster", results, shared_patches_dir, targets,
                      "--default-resources", *account_override(profile(), ACCOUNT))
    print(f"data rules locally: {t1 - t0:.1f} s, two jobs through profiles/slurm: {time.time() - t1:.1f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return tmp / "cluster", results, res.stdout + res.stderr


def snakemake_threads(log: str) -> dict[str, int]:
    """Threads of each job as Snakemake itself reports them (`threads: N` in the job's block, 1 when absent)."""
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", log)[1:]:
        rule = re.match(r"rule (\w+):", block).group(1)
        head = block.split("\n\n")[0]
        match = re.search(r"^\s+threads: (\d+)$", head, re.M)
        jobs[rule] = int(match.group(1)) if match else 1
    return jobs


def submissions(state: Path) -> dict[str, dict]:
    """The sbatch options of each job, by rule (from the plugin's `--comment rule_<name>[_wildcards_...]`)."""
    by_rule = {}
    for call in calls(state, "sbatch"):
        options = flags(call["argv"])
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", options["--comment"]).group(1)
        assert rule not in by_rule, f"{rule} submitted twice"
        by_rule[rule] = {**options, "job": call["job"]}
    return by_rule


def test_every_job_is_submitted_with_its_rules_resources(slurm_run):
    state, _, log = slurm_run
    cfg = profile()
    defaults, per_rule, threads = cfg["default-resources"], cfg["set-resources"], cfg["set-threads"]
    submitted = submissions(state)
    assert set(submitted) == RUN_RULES
    assert snakemake_threads(log) == {rule: int(o["--cpus-per-task"]) for rule, o in submitted.items()}
    for rule, options in submitted.items():
        want = {**defaults, **per_rule.get(rule, {})}
        assert options["-A"] == ACCOUNT, rule
        assert options["-p"] == want["slurm_partition"], rule
        assert options["--mem"] == str(want["mem_mb"]), rule
        assert options["-t"] == str(want["runtime"]), rule
        # CPUs = threads: the set-threads entry, else 1 (pixel_baseline declares no threads)
        assert options.get("--cpus-per-task") == str(threads.get(rule, 1)), (rule, options)
        assert "--cpus-per-gpu" not in options
        if rule in gpu_rules():
            assert options.get("--gpus") == expected_gpus(rule), rule
            assert CLUSTER["partitions"][options["-p"]]["gpus"] >= 1, f"{rule}: a GPU on a partition without GPUs"
        else:
            assert "--gpus" not in options and "--gres" not in options, rule
    assert submitted["train_generator"]["--cpus-per-task"] == "8"  # the network rule is not left at the default


def test_each_job_ran_its_rule_in_one_step_within_its_allocation(slurm_run):
    """Inside each job the plugin's job step (srun) runs the rule on the job's CPUs, and the rule really
    ran: its outputs exist and the accounting says COMPLETED."""
    state, results, _ = slurm_run
    submitted = submissions(state)
    steps = {call["job"]: flags(call["argv"]) for call in calls(state, "srun")}
    assert set(steps) == {o["job"] for o in submitted.values()}
    for rule, options in submitted.items():
        step = steps[options["job"]]
        # the rule runs with as many threads as CPUs the job sees: its allocation, capped by this machine
        visible = min(int(options["--cpus-per-task"]), len(os.sched_getaffinity(0)))
        assert step["--cpus-per-task"] == str(visible), (rule, step)
        assert step.get("--gpus") == options.get("--gpus"), rule
    states = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State"],
                            env=standin_env(state), capture_output=True, text=True, check=True).stdout.split()
    assert sorted(states) == sorted(f"{o['job']}|COMPLETED" for o in submitted.values())
    assert (results / "generators/cvae/checkpoint.pt").stat().st_size > 0
    # the two-GPU generator job trained in two torchrun processes (rank 0 wrote the checkpoint)
    log = (results / "logs/train_generator/cvae.log").read_text()
    assert "launching 2 training processes" in log and "[train_generator rank 0/2]" in log, log[-2000:]
    assert "auc" in json.loads((results / "downstream/pixel_logreg/real/seed0/metrics.json").read_text())


def test_account_placeholder_is_refused_with_the_accounts_to_choose_from(tmp_path, monkeypatch):
    """Left unedited, EDIT_ME_ACCOUNT stops the first submission: the plugin checks the account with
    sacctmgr and names the valid ones."""
    from snakemake_executor_plugin_slurm.accounts import validate_account
    from snakemake_interface_common.exceptions import WorkflowError

    assert profile()["default-resources"]["slurm_account"] == PLACEHOLDER
    (tmp_path / "cluster.json").write_text(json.dumps(CLUSTER))
    for key, value in standin_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(WorkflowError, match=f"account {PLACEHOLDER} appears to be invalid") as err:
        validate_account(PLACEHOLDER, logging.getLogger("slurm-test"))
    assert ACCOUNT in str(err.value)
    assert validate_account(ACCOUNT, logging.getLogger("slurm-test")) == ACCOUNT


def test_profile_never_sets_cpus_apart_from_threads():
    """Static check over every rule: CPUs come from threads (no cpus_per_task/cpus_per_gpu), every GPU
    rule has a GPU partition, and the account override shown in the profile and the README repeats the
    whole default list (the command line replaces it)."""
    cfg = profile()
    for scope in [cfg["default-resources"], *cfg["set-resources"].values()]:
        assert not {"cpus_per_task", "cpus_per_gpu"} & set(scope), scope
    default_partition = cfg["default-resources"]["slurm_partition"]
    for rule in gpu_rules():
        assert cfg["set-resources"][rule]["slurm_partition"] != default_partition, rule
        assert rule in cfg["set-threads"], rule
    for doc in (PROFILE, REPO / "README.md"):
        override = re.search(r"--default-resources (slurm_account=[^`\n]+)", doc.read_text()).group(1).split()
        assert override == account_override(cfg, override[0].split("=", 1)[1]), doc
