"""The state of the one-machine Slurm stand-in: its cluster description, job records and call log.

Everything lives in the directory named by the environment variable STANDIN_SLURM_STATE (not a
SLURM_* name: the plugin's job step drops SLURM_* variables other than the job's id before srun):

    cluster.json    {"accounts": [...], "partitions": {name: {"cpus", "mem_mb", "gpus", "max_minutes",
                    "default"}}, "config": {...}}: what sbatch accepts and what `scontrol show config`
                    adds (written by the test; DEFAULT_CLUSTER when absent)
    calls.jsonl     one JSON line per command call: {"tool", "argv", "job"}
    jobs/<id>.json  one record per job: name, comment, partition, account, cpus, gpus, mem_mb,
                    minutes, state, exit code, submit/start/end times
    next_jobid      the job id counter

Only the standard library is used, so the commands start fast under any Python 3.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

FIRST_JOBID = 4000
STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
DEFAULT_CLUSTER = {
    "accounts": ["standin_lab"],
    "partitions": {
        "cpu": {"cpus": 64, "mem_mb": 256000, "gpus": 0, "max_minutes": 7 * 24 * 60, "default": True},
        "gpu": {"cpus": 64, "mem_mb": 512000, "gpus": 4, "max_minutes": 7 * 24 * 60},
    },
}


class SlurmError(Exception):
    """A request the stand-in refuses, as Slurm would: the message goes to stderr, exit code 1."""


def state_dir() -> Path:
    value = os.environ.get("STANDIN_SLURM_STATE")
    if not value:
        raise SlurmError("STANDIN_SLURM_STATE is not set: point it at the stand-in's state directory")
    path = Path(value)
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def cluster() -> dict:
    """The cluster description from cluster.json (DEFAULT_CLUSTER when the file does not exist)."""
    path = state_dir() / "cluster.json"
    if not path.exists():
        return DEFAULT_CLUSTER
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SlurmError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc


def default_partition(description: dict) -> str:
    names = [name for name, spec in description["partitions"].items() if spec.get("default")]
    return names[0] if names else next(iter(description["partitions"]))


@contextmanager
def locked(name: str):
    """An exclusive lock on <state dir>/<name>.lock: sbatch calls may run at the same time."""
    with open(state_dir() / f"{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_call(tool: str, argv: list[str], job: str | None = None) -> None:
    line = json.dumps({"tool": tool, "argv": argv, "job": job})
    with locked("calls"), open(state_dir() / "calls.jsonl", "a") as fh:
        fh.write(line + "\n")


def new_jobid() -> str:
    counter = state_dir() / "next_jobid"
    with locked("next_jobid"):
        jobid = int(counter.read_text()) if counter.exists() else FIRST_JOBID
        counter.write_text(str(jobid + 1))
    return str(jobid)


def job_path(jobid: str) -> Path:
    return state_dir() / "jobs" / f"{jobid}.json"


def write_job(record: dict) -> None:
    path = job_path(record["id"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def read_job(jobid: str) -> dict | None:
    path = job_path(jobid)
    return json.loads(path.read_text()) if path.exists() else None


def all_jobs() -> list[dict]:
    jobs = [json.loads(p.read_text()) for p in (state_dir() / "jobs").glob("*.json")]
    return sorted(jobs, key=lambda job: int(job["id"]))


def set_state(jobid: str, state: str, **fields) -> None:
    """Move a job to `state`, recording any other fields given (exit_code, start, end times)."""
    if state not in STATES:
        raise SlurmError(f"unknown job state {state!r}")
    record = read_job(jobid)
    record.update(state=state, **fields)
    write_job(record)


_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")


def minutes(value: str) -> int:
    """A Slurm time limit in minutes: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S (seconds round up)."""
    match = _TIME.match(str(value).strip())
    if not match:
        raise SlurmError(f"Invalid time limit specification: {value!r}")
    parts = [int(p) for p in match.group("rest").split(":")]
    days = int(match.group("days") or 0)
    if match.group("days") is not None:
        hours, mins, secs = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, mins, secs = parts
    else:
        hours, mins, secs = 0, parts[0], (parts + [0])[1]
    return days * 1440 + hours * 60 + mins + (1 if secs else 0)


def megabytes(value: str) -> int:
    """A Slurm memory size in MB: a number with an optional K, M, G or T suffix (M when none)."""
    match = re.match(r"^(\d+)([KMGT]?)B?$", str(value).strip(), re.IGNORECASE)
    if not match:
        raise SlurmError(f"Invalid --mem specification: {value!r}")
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2).upper()]
    return int(int(match.group(1)) * factor)


def command(tool: str):
    """Run a command's function on sys.argv[1:]; a SlurmError becomes `<tool>: error: ...` and exit 1."""
    def wrap(func):
        @functools.wraps(func)
        def run(argv: list[str]) -> None:
            try:
                func(argv)
            except SlurmError as exc:
                print(f"{tool}: error: {exc}", file=sys.stderr)
                sys.exit(1)
        return run
    return wrap
