"""Benchmark parsing the workflow: wall time and peak RSS of `snakemake -n` (config + DAG, no jobs run).

Each repeat is a fresh `python -m snakemake -n` process, so the numbers include the interpreter,
Snakemake's own start-up, the Snakefile's imports, config validation and building the DAG. The
script also reports the number of planned jobs and whether torch was imported while parsing
(it must not be: the DAG is built from the config alone).

    python benchmarks/bench_parse.py                                    # paper config, shared patches
    python benchmarks/bench_parse.py --configfile config/demo.yaml --repeats 5 --out bench_parse.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "torch_fidelity", "pandas", "scipy", "h5py", "jsonschema")

# Runs Snakemake's command line in this interpreter, then reports which heavy modules parsing imported.
_PROBE = """
import json, sys
from snakemake.cli import main
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["snakemake"] + args
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code
print("HEAVY_MODULES=" + json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def default_data_dir() -> Path:
    return Path(os.environ.get("HISTAUG_SHARED_DATA", REPO.parent / "shared" / "data")) / "pcam-real-negatives"


#: A one-rule workflow that imports nothing: its dry run is Snakemake's own floor in this environment
#: (interpreter, Snakemake's imports and plugins, config handling, DAG machinery), which no workflow can go below.
FLOOR_SNAKEFILE = """
rule all:
    input: "out.txt"

rule make:
    output: "out.txt"
    shell: "touch {output}"
"""

#: The same number of jobs as the measured workflow, each a one-line `script:` job of one rule and nothing
#: else: Snakemake's cost of a DAG of that size here (it reads every script job's source while building it).
SIZED_SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule make:
    output: "out/{{i}}.txt"
    script: "write.py"
"""


def dry_run(args: list[str], cwd: Path = REPO) -> dict:
    """One `snakemake -n` in a fresh process: wall seconds, peak RSS (MiB), planned jobs, heavy modules."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()  # one pipe for both streams: reading to its end cannot block the child
    _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait: the rusage of this child alone
    wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed (exit {code}):\n{out[-3000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", out, flags=re.M)
    heavy = re.search(r"^HEAVY_MODULES=(.*)$", out, flags=re.M)
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "jobs": int(total.group(1)) if total else 0,
            "heavy_modules": json.loads(heavy.group(1)) if heavy else None}


def reference_runs(files: dict[str, str], repeats: int) -> list[dict]:
    """Dry runs of a reference workflow made of ``files`` (name -> text) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench_parse_reference_") as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text)
        return [dry_run(["-n", "--cores", "1"], cwd=Path(folder)) for _ in range(repeats)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--data-dir", default=str(default_data_dir()), help="data_dir for the dry run (default: shared patches)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    a = ap.parse_args(argv)
    if not Path(a.data_dir).exists():
        raise SystemExit(f"--data-dir {a.data_dir}: folder not found; pass a folder of patches (images/ + labels.csv)")
    with tempfile.TemporaryDirectory(prefix="bench_parse_") as results:
        args = ["-n", "--cores", "1", "--configfile", a.configfile,
                "--config", f"data_dir={a.data_dir}", f"results_dir={results}"]
        runs = [dry_run(args) for _ in range(a.repeats)]
    floor = [r["wall_s"] for r in reference_runs({"Snakefile": FLOOR_SNAKEFILE}, a.repeats)]
    sized = reference_runs({"Snakefile": SIZED_SNAKEFILE.format(n=max(runs[0]["jobs"] - 1, 1)),
                            "write.py": 'open(snakemake.output[0], "w").close()\n'}, a.repeats)
    walls = [r["wall_s"] for r in runs]
    summary = {"configfile": a.configfile, "repeats": a.repeats, "jobs": runs[0]["jobs"],
               "wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "heavy_modules": runs[0]["heavy_modules"],
               "snakemake_floor_s_median": statistics.median(floor),
               "workflow_share_s": statistics.median(walls) - statistics.median(floor),
               "trivial_same_size_jobs": sized[0]["jobs"],
               "trivial_same_size_s_median": statistics.median(r["wall_s"] for r in sized),
               "python": platform.python_version(), "cpus": os.cpu_count()}
    print(f"snakemake -n --configfile {a.configfile}: {summary['jobs']} jobs")
    print(f"  wall   median {summary['wall_s_median']:.2f} s, min {summary['wall_s_min']:.2f} s ({a.repeats} runs)")
    print(f"  Snakemake's own floor (a one-rule workflow): median {summary['snakemake_floor_s_median']:.2f} s; "
          f"this workflow's share: {summary['workflow_share_s']:.2f} s")
    print(f"  a trivial workflow of the same size ({summary['trivial_same_size_jobs']} one-line script jobs): "
          f"median {summary['trivial_same_size_s_median']:.2f} s")
    print(f"  peak RSS {summary['peak_rss_mb']:.0f} MiB")
    print(f"  heavy modules imported while parsing: {', '.join(summary['heavy_modules']) or 'none'}")
    if a.out:
        a.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
