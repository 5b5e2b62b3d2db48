"""squeue, sacct, scontrol, scancel, sinfo and sacctmgr of the Slurm stand-in, reading its job records.

The output formats are Slurm's: `sacct --parsable2 --noheader --format=JobIdRaw,State` prints
`4001|COMPLETED`, `squeue --noheader --format=%i|%T` prints `4001|RUNNING`, sinfo marks the default
partition with `*`.
"""
from __future__ import annotations

import getpass
import re

from standin_cluster import SlurmError, all_jobs, cluster, command, default_partition, read_job, record_call, set_state
from standin_submit import Parser

SHORT_STATE = {"PENDING": "PD", "RUNNING": "R", "COMPLETED": "CD", "FAILED": "F", "CANCELLED": "CA"}
QUEUED = ("PENDING", "RUNNING")
SACCT_FIELDS = {
    "jobid": lambda job: job["id"], "jobidraw": lambda job: job["id"], "jobname": lambda job: job["name"],
    "state": lambda job: job["state"], "account": lambda job: job["account"],
    "partition": lambda job: job["partition"], "nodelist": lambda job: job["node"],
    "alloccpus": lambda job: job["cpus"], "timelimit": lambda job: clock(job["minutes"]),
    "exitcode": lambda job: f"{job['exit_code'] or 0}:0",
    "reason": lambda job: "None",
}
SACCT_DEFAULT = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"
SQUEUE_CODES = {
    "i": ("JOBID", lambda job: job["id"]), "j": ("NAME", lambda job: job["name"]),
    "T": ("STATE", lambda job: job["state"]), "t": ("ST", lambda job: SHORT_STATE[job["state"]]),
    "P": ("PARTITION", lambda job: job["partition"]), "a": ("ACCOUNT", lambda job: job["account"]),
    "C": ("CPUS", lambda job: job["cpus"]), "u": ("USER", lambda job: getpass.getuser()),
    "D": ("NODES", lambda job: 1), "M": ("TIME", lambda job: "0:00"),
    "R": ("NODELIST(REASON)", lambda job: job["node"]),
}
SQUEUE_DEFAULT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
CODE = re.compile(r"%(\.?)(-?\d*)([A-Za-z])")


def clock(mins: int) -> str:
    days, rest = divmod(mins, 1440)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def fit(text, width: str, right: bool) -> str:
    """Slurm's field widths: %N pads (right-aligned with '.'), and %.N / %N also truncate."""
    text = str(text)
    if not width:
        return text
    size = abs(int(width))
    text = text[:size]
    return text.rjust(size) if right and not width.startswith("-") else text.ljust(size)


def render(fmt: str, codes: dict, job: dict | None) -> str:
    """One line of a %-format: a job's values, or the header when job is None."""
    def one(match):
        dot, width, code = match.groups()
        if code not in codes:
            raise SlurmError(f"Invalid job format specification: {code}")
        header, value = codes[code]
        return fit(header if job is None else value(job), width, bool(dot))
    return CODE.sub(one, fmt)


@command("squeue")
def squeue(argv: list[str]) -> None:
    record_call("squeue", argv)
    parser = Parser(prog="squeue", add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--noheader", action="store_true")
    parser.add_argument("--me", action="store_true")
    for short, long in (("-o", "--format"), ("-t", "--states"), ("-n", "--name"), ("-j", "--jobs"),
                        ("-u", "--user"), ("-M", "--clusters"), ("-p", "--partition")):
        parser.add_argument(*[name for name in (short, long) if name])
    args = parser.parse_args(argv)
    states = [s.upper() for s in (args.states or "PD,R").split(",")]
    long_names = {short: long for long, short in SHORT_STATE.items()}
    wanted = set(SHORT_STATE) if "ALL" in states else {long_names.get(s, s) for s in states}
    jobs = [job for job in selected(all_jobs(), args.name, args.jobs) if job["state"] in wanted]
    fmt = args.format or SQUEUE_DEFAULT
    lines = ([] if args.noheader else [render(fmt, SQUEUE_CODES, None)])
    lines += [render(fmt, SQUEUE_CODES, job) for job in jobs]
    print("\n".join(lines))


def selected(jobs: list[dict], names: str | None, ids: str | None) -> list[dict]:
    if names:
        jobs = [job for job in jobs if job["name"] in names.split(",")]
    if ids:
        jobs = [job for job in jobs if job["id"] in ids.split(",")]  # "<id>.<step>" names no allocation row
    return jobs


def sacct_columns(spec: str) -> list[tuple[str, str]]:
    columns = []
    for item in spec.split(","):
        name, _, width = item.partition("%")
        if name.lower() not in SACCT_FIELDS:
            raise SlurmError(f"Invalid field requested: \"{name}\"")
        columns.append((name, width or "10"))
    return columns


@command("sacct")
def sacct(argv: list[str]) -> None:
    record_call("sacct", argv)
    parser = Parser(prog="sacct", add_help=False, allow_abbrev=False)
    for flag in (("-X", "--allocations"), ("-P", "--parsable2"), ("-p", "--parsable"), ("-n", "--noheader")):
        parser.add_argument(*flag, action="store_true")
    for short, long in (("-o", "--format"), ("-j", "--jobs"), ("-S", "--starttime"), ("-E", "--endtime"),
                        (None, "--name"), ("-u", "--user"), ("-M", "--clusters")):
        parser.add_argument(*[name for name in (short, long) if name])
    args = parser.parse_args(argv)
    columns = sacct_columns(args.format or SACCT_DEFAULT)
    rows = [[name for name, _ in columns]] if not args.noheader else []
    rows += [[SACCT_FIELDS[name.lower()](job) for name, _ in columns]
             for job in selected(all_jobs(), args.name, args.jobs)]
    for row in rows:
        if args.parsable2 or args.parsable:
            print("|".join(str(v) for v in row) + ("|" if args.parsable else ""))
        else:
            print(" ".join(fit(v, width, True) for v, (_, width) in zip(row, columns)))


@command("scontrol")
def scontrol(argv: list[str]) -> None:
    record_call("scontrol", argv)
    if argv[:2] != ["show", "config"]:
        raise SlurmError(f"the stand-in answers `scontrol show config` only, not {' '.join(argv)!r}")
    settings = {"ClusterName": "standin", "MinJobAge": "300 sec", "MaxArraySize": "1001",
                **cluster().get("config", {})}
    print("Configuration data as of the stand-in")
    for key, value in settings.items():
        print(f"{key:<23} = {value}")


@command("scancel")
def scancel(argv: list[str]) -> None:
    record_call("scancel", argv)
    unknown = []
    for jobid in (a for a in argv if not a.startswith("-")):
        job = read_job(jobid.split("_")[0])
        if job is None:
            unknown.append(jobid)
        elif job["state"] in QUEUED:
            set_state(job["id"], "CANCELLED")
    if unknown:
        raise SlurmError(f"Invalid job id specified: {', '.join(unknown)}")


@command("sinfo")
def sinfo(argv: list[str]) -> None:
    record_call("sinfo", argv)
    parser = Parser(prog="sinfo", add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--noheader", action="store_true")
    parser.add_argument("-o", "--format")
    args = parser.parse_args(argv)
    description = cluster()
    default = default_partition(description)
    codes = {
        "P": ("PARTITION", lambda p: p["name"] + ("*" if p["name"] == default else "")),
        "a": ("AVAIL", lambda p: "up"), "l": ("TIMELIMIT", lambda p: clock(p["max_minutes"])),
        "c": ("CPUS", lambda p: p["cpus"]), "m": ("MEMORY", lambda p: p["mem_mb"]),
        "G": ("GRES", lambda p: f"gpu:{p['gpus']}" if p.get("gpus") else "(null)"),
        "D": ("NODES", lambda p: 1), "t": ("STATE", lambda p: "idle"), "N": ("NODELIST", lambda p: "standin1"),
    }
    fmt = args.format or "%9P %.5a %.10l %.6D %.6t %N"
    parts = [dict(spec, name=name) for name, spec in description["partitions"].items()]
    lines = ([] if args.noheader else [render(fmt, codes, None)]) + [render(fmt, codes, p) for p in parts]
    print("\n".join(lines))


@command("sacctmgr")
def sacctmgr(argv: list[str]) -> None:
    """`sacctmgr -n -s list user NAME format=account%N`: the accounts this user may charge."""
    record_call("sacctmgr", argv)
    words = [a.lower() for a in argv if not a.startswith("-")]
    if not (words[:2] in (["list", "user"], ["show", "user"]) and any(w.startswith("format=account") for w in words)):
        raise SlurmError(f"the stand-in answers `list user NAME format=account` only, not {argv}")
    for account in cluster().get("accounts", []):
        print(f"  {account}")
