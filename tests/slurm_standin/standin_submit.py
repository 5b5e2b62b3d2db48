"""sbatch and srun of the Slurm stand-in: check a request against cluster.json, then run it here.

sbatch runs the whole job before it answers (synchronously), so a job is COMPLETED or FAILED by the
time its id is printed; its output goes to the --output file as on a cluster, and like Slurm's CPU
binding it sees only its CPUs (at most those of this machine). Job arrays are not emulated (--array
is refused).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from standin_cluster import (SlurmError, cluster, command, default_partition, megabytes, minutes, new_jobid,
                             read_job, record_call, set_state, state_dir, write_job)


class Parser(argparse.ArgumentParser):
    """Refuses unknown options the way Slurm does (exit 1), instead of argparse's usage text."""

    def error(self, message):
        raise SlurmError(message)


SBATCH_FLAGS = ("--parsable", "--requeue", "--no-requeue")
SBATCH_OPTIONS = (
    ("-J", "--job-name"), ("-o", "--output"), ("-e", "--error"), (None, "--export"), (None, "--comment"),
    ("-A", "--account"), ("-p", "--partition"), ("-M", "--clusters"), ("-t", "--time"), ("-C", "--constraint"),
    (None, "--qos"), (None, "--mem"), (None, "--mem-per-cpu"), ("-N", "--nodes"), (None, "--reservation"),
    ("-x", "--exclude"), ("-n", "--ntasks"), (None, "--ntasks-per-gpu"), (None, "--ntasks-per-node"),
    ("-c", "--cpus-per-task"), (None, "--cpus-per-gpu"), ("-G", "--gpus"), (None, "--gres"), ("-D", "--chdir"),
    (None, "--wrap"), (None, "--array"),
)


def sbatch_parser() -> Parser:
    parser = Parser(prog="sbatch", add_help=False, allow_abbrev=False)
    for flag in SBATCH_FLAGS:
        parser.add_argument(flag, action="store_true")
    for short, long in SBATCH_OPTIONS:
        parser.add_argument(*[name for name in (short, long) if name])
    parser.add_argument("script", nargs="?")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    return parser


def positive_int(value, option: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SlurmError(f"Invalid numeric value {value!r} for {option}") from None
    if number < 1:
        raise SlurmError(f"{option} must be at least 1, got {number}")
    return number


def gpu_count(gpus: str | None, gres: str | None) -> int:
    """GPUs asked for with --gpus=[type:]N or --gres=gpu[:type][:N]."""
    if gpus:
        return positive_int(gpus.split(":")[-1], "--gpus")
    if gres and gres.split(":")[0] == "gpu":
        last = gres.split(":")[-1]
        return positive_int(last, "--gres") if last.isdigit() else 1
    return 0


def allocation(args) -> dict:
    """What the job gets, or the SlurmError sbatch gives when the cluster cannot or may not run it."""
    description = cluster()
    partition = args.partition or default_partition(description)
    spec = description["partitions"].get(partition)
    if spec is None:
        raise SlurmError(f"Batch job submission failed: Invalid partition name specified ({partition})")
    accounts = description.get("accounts") or []
    account = args.account or (accounts[0] if accounts else "")
    if accounts and account not in accounts:
        raise SlurmError("Batch job submission failed: Invalid account or account/partition combination specified")
    gpus = gpu_count(args.gpus, args.gres)
    if args.cpus_per_gpu:
        cpus = positive_int(args.cpus_per_gpu, "--cpus-per-gpu") * max(gpus, 1)
    else:
        cpus = positive_int(args.cpus_per_task or 1, "--cpus-per-task") * positive_int(args.ntasks or 1, "--ntasks")
    mem = megabytes(args.mem) if args.mem else megabytes(args.mem_per_cpu) * cpus if args.mem_per_cpu else 0
    limit = minutes(args.time) if args.time else spec["max_minutes"]
    if cpus > spec["cpus"] or gpus > spec.get("gpus", 0) or mem > spec["mem_mb"]:
        raise SlurmError("Batch job submission failed: Requested node configuration is not available")
    if limit > spec["max_minutes"]:
        raise SlurmError("Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)")
    return {"partition": partition, "account": account, "cpus": cpus, "gpus": gpus, "mem_mb": mem, "minutes": limit}


def batch_script(args) -> str:
    if args.wrap is not None:
        if args.script:
            raise SlurmError("script arguments not permitted with --wrap option")
        return f"#!/bin/sh\n{args.wrap}\n"
    if args.script in (None, "-", "/dev/stdin"):
        script = sys.stdin.read()
    else:
        script = Path(args.script).read_text()
    if not script.startswith("#!"):
        raise SlurmError("This does not look like a batch script. The first line must start with #! followed by "
                         "the path to an interpreter.")
    return script


def job_environment(jobid: str, name: str, alloc: dict, workdir: str) -> dict:
    env = dict(os.environ)  # --export=ALL
    env.update({
        "SLURM_JOB_ID": jobid, "SLURM_JOBID": jobid, "SLURM_JOB_NAME": name, "SLURM_CLUSTER_NAME": "standin",
        "SLURM_JOB_PARTITION": alloc["partition"], "SLURM_JOB_ACCOUNT": alloc["account"],
        "SLURM_CPUS_PER_TASK": str(alloc["cpus"]), "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODELIST": socket.gethostname(), "SLURM_SUBMIT_DIR": workdir,
    })
    if alloc["mem_mb"]:
        env["SLURM_MEM_PER_NODE"] = str(alloc["mem_mb"])
    if alloc["gpus"]:
        env["SLURM_GPUS"] = str(alloc["gpus"])
    return env


def run_job(jobid: str, name: str, script: str, alloc: dict, args) -> int:
    workdir = args.chdir or os.getcwd()
    script_path = state_dir() / "jobs" / f"{jobid}.sh"
    script_path.write_text(script)
    script_path.chmod(0o755)
    output = Path(workdir, (args.output or "slurm-%j.out").replace("%j", jobid).replace("%x", name))
    # like Slurm's CPU binding, the job sees only its CPUs (at most those of this machine)
    cpus = sorted(os.sched_getaffinity(0))[: alloc["cpus"]]
    set_state(jobid, "RUNNING", start=time.time())
    with open(output, "w") as log:
        code = subprocess.call([str(script_path)], cwd=workdir, env=job_environment(jobid, name, alloc, workdir),
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    set_state(jobid, "COMPLETED" if code == 0 else "FAILED", exit_code=code, end=time.time())
    return code


@command("sbatch")
def sbatch(argv: list[str]) -> None:
    try:
        args = sbatch_parser().parse_args(argv)
        if args.array:
            raise SlurmError("job arrays (--array) are not emulated by the stand-in")
        if args.export not in (None, "ALL"):
            raise SlurmError("the stand-in emulates --export=ALL only")
        alloc = allocation(args)
        script = batch_script(args)
    except SlurmError:
        record_call("sbatch", argv)  # refused: no job id
        raise
    jobid = new_jobid()
    name = args.job_name or ("wrap" if args.wrap is not None else Path(args.script or "sbatch").name)
    record_call("sbatch", argv, jobid)
    write_job({"id": jobid, "name": name, "comment": args.comment, "state": "PENDING", "exit_code": None,
               "node": socket.gethostname(), "submit": time.time(), "start": None, "end": None, **alloc})
    run_job(jobid, name, script, alloc, args)
    cluster_suffix = f";{args.clusters}" if args.clusters and args.clusters != "all" else ""
    print(f"{jobid}{cluster_suffix}" if args.parsable else f"Submitted batch job {jobid}")


def srun_parser() -> Parser:
    parser = Parser(prog="srun", add_help=False, allow_abbrev=False)
    parser.add_argument("--exclusive", action="store_true")
    for short, long in (("-n", "--ntasks"), (None, "--cpu-bind"), ("-c", "--cpus-per-task"), ("-G", "--gpus"),
                        ("-N", "--nodes"), (None, "--mem"), (None, "--mem-per-cpu"), (None, "--jobid"),
                        ("-J", "--job-name"), (None, "--gres")):
        parser.add_argument(*[name for name in (short, long) if name])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


@command("srun")
def srun(argv: list[str]) -> None:
    """A job step inside an sbatch job: at most the job's CPUs and GPUs, then exec the command."""
    jobid = os.environ.get("SLURM_JOB_ID")
    record_call("srun", argv, jobid)
    args = srun_parser().parse_args(argv)
    job = read_job(jobid) if jobid else None
    if job is None:
        raise SlurmError("no job allocation: the stand-in runs srun only inside an sbatch job")
    if not args.command:
        raise SlurmError("No command given to execute.")
    cpus = positive_int(args.cpus_per_task or 1, "--cpus-per-task") * positive_int(args.ntasks or 1, "--ntasks")
    if cpus > job["cpus"]:
        raise SlurmError(f"Unable to create step for job {jobid}: More processors requested than permitted")
    if gpu_count(args.gpus, args.gres) > job["gpus"]:
        raise SlurmError(f"Unable to create step for job {jobid}: Requested node configuration is not available")
    env = dict(os.environ, SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS=str(args.ntasks or 1))
    os.execvpe(args.command[0], args.command, env)
