"""Benchmark the data stage (ingest -> labels -> subset) on PCam-shaped HDF5 files.

Writes the six camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 files at full PCam size
(262,144 + 32,768 + 32,768 patches of 96x96x3 uint8, 9.1 GB; --scale to shrink them), each with
the `.md5` record the download_pcam rule leaves, then runs the three steps through the library
exactly as their rule scripts do (histaug.data.ingest, histaug.labels.build_label_table,
histaug.data.write_train_subset), each in a fresh process set up like a rule job (torch and BLAS
thread limits from histaug.rulekit). Reports per step the wall time, images/s, the peak resident
memory of the job (getrusage of the process, its threads included), its CPU seconds and the load
average (other work on the machine shows there), and the bytes the steps wrote to results/data. Pixels are real PCam patches from the shared data folder, tiled with
a per-block shift (or random, --pixels random). Everything is deleted at the end unless --keep.

    python benchmarks/bench_data.py                       # full size, 2 threads
    python benchmarks/bench_data.py --scale 0.05 --out bench_data.json
    python benchmarks/bench_data.py --cache cold          # evict the sources from the page cache before each step
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PCAM_SIZES = {"train": 262_144, "valid": 32_768, "test": 32_768}
SPLIT_CFG = {"fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}, "seed": 0}
SUBSET_CFG = {"fraction": 0.25, "count": None, "seed": 0, "min_per_class": 1}
LABELS_CFG = {"source": "data", "derived_levels": 4, "classes": None}
WRITE_BLOCK = 4096


def tile_source(n_tile: int, pixels: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """The patches repeated to fill the files: real shared patches, else (or on request) random."""
    if pixels == "real":
        import pandas as pd
        from PIL import Image

        folder = Path(os.environ.get("HISTAUG_SHARED_DATA", REPO.parent / "shared" / "data")) / "pcam-real-negatives"
        if (folder / "labels.csv").exists():
            ids = pd.read_csv(folder / "labels.csv")["id"].tolist()
            x = np.stack([np.asarray(Image.open(folder / "images" / f"{i}.jpg").convert("RGB")) for i in ids])
            return x, f"{len(x)} real PCam patches from {folder}, tiled with a shift per block"
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_tile, 96, 96, 3), dtype=np.uint8), f"uniform random pixels ({n_tile} tiles)"


def write_sources(folder: Path, sizes: dict, tiles: np.ndarray, seed: int = 0) -> dict:
    """Write the six PCam-layout files and their MD5 records; returns seconds spent."""
    import h5py

    from histaug.pcam import md5sum, pcam_filename, write_checksum_record

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for split, n in sizes.items():
        with h5py.File(folder / pcam_filename(split, "x"), "w") as f:
            dx = f.create_dataset("x", shape=(n, 96, 96, 3), dtype=np.uint8)  # contiguous, like PCam's files
            for b, start in enumerate(range(0, n, WRITE_BLOCK)):
                rows = (np.arange(start, min(start + WRITE_BLOCK, n)) + 7 * b) % len(tiles)
                dx[start:start + len(rows)] = tiles[rows]
        with h5py.File(folder / pcam_filename(split, "y"), "w") as f:
            f.create_dataset("y", data=rng.integers(0, 2, n).astype(np.uint8).reshape(-1, 1, 1, 1))
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in sorted(folder.glob("*.h5")):
        write_checksum_record(p, md5sum(p))
    return {"write_s": round(write_s, 1), "md5_records_s": round(time.perf_counter() - t0, 1)}


def evict(paths) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED: this file only, no root)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _step(name: str, args: dict, queue) -> None:
    """Child process: set up like a rule job, run one step, report time and peak memory."""
    import logging

    from threadpoolctl import threadpool_limits

    from histaug.utils import set_threads

    threads = int(args["threads"])
    set_threads(threads)
    threadpool_limits(threads)
    log = logging.getLogger(f"bench.{name}")
    from histaug import data, labels

    out = Path(args["out"])
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0, load0 = _cpu_seconds(), os.getloadavg()[0]
    t0 = time.perf_counter()
    if name == "ingest":
        cfg = {"data_dir": None, "pcam_dir": args["src"], "pcam": {}, "split": SPLIT_CFG, "labels": LABELS_CFG}
        n = len(data.ingest(cfg, out, log, threads=threads))
    elif name == "labels":
        files = {s: out / f"{s}.h5" for s in data.SPLITS}
        n = len(labels.build_label_table(out / "source_labels.csv", files, LABELS_CFG, out / "labels.csv",
                                         out / "labels.json", log, workers=threads))
    else:
        n = len(data.write_train_subset(out / "labels.csv", SUBSET_CFG, out / "train_subset.csv", log))
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    queue.put({"step": name, "seconds": round(seconds, 2), "images": n, "images_per_s": round(n / seconds, 1),
               "peak_rss_mb": round(peak / 1024, 1), "rss_after_imports_mb": round(base_mb, 1),
               "cpu_s": round(cpu, 1), "cores_busy": round(cpu / seconds, 2),
               "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]})


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and its waited-for children."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def run_step(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t0 = time.perf_counter()
    proc = ctx.Process(target=_step, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"step {name} failed (exit code {proc.exitcode})")
    result["process_s"] = round(time.perf_counter() - t0, 2)  # with interpreter start and imports
    return result


def disk_usage(folder: Path) -> dict:
    files = [p for p in folder.iterdir() if p.is_file()]
    return {"files": {p.name: p.stat().st_size for p in sorted(files)},
            "bytes": sum(p.stat().st_size for p in files),
            "allocated_bytes": sum(p.stat().st_blocks * 512 for p in files)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of PCam's size (1 = 262,144 + 2 x 32,768)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the ingest and labels jobs (rule threads)")
    ap.add_argument("--pixels", choices=("real", "random"), default="real")
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm",
                    help="cold: evict the source files from the page cache before each step")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a new folder in $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    if not 0 < a.scale <= 1:
        ap.error(f"--scale={a.scale}: must be in (0, 1]")
    sizes = {s: max(8, int(round(n * a.scale))) for s, n in PCAM_SIZES.items()}
    work = Path(tempfile.mkdtemp(prefix="histaug_bench_data_", dir=a.workdir))
    src, out = work / "pcam", work / "results" / "data"
    try:
        tiles, pixels = tile_source(2048, a.pixels)
        setup = write_sources(src, sizes, tiles)
        src_bytes = sum(p.stat().st_size for p in src.glob("*.h5"))
        steps = []
        for name in ("ingest", "labels", "subset"):
            if a.cache == "cold":
                evict(sorted(src.glob("*.h5")))
            steps.append(run_step(name, {"threads": a.threads, "src": str(src), "out": str(out)}))
            r = steps[-1]
            print(f"{name:7s} {r['seconds']:8.1f} s  {r['images_per_s']:10.0f} img/s  peak RSS {r['peak_rss_mb']:7.0f} MiB  "
                  f"CPU {r['cpu_s']:6.1f} s  load {r['load_avg_1min']}", flush=True)
        result = {
            "images": sizes, "source_bytes": src_bytes, "pixels": pixels, "threads": a.threads, "cache": a.cache,
            "setup": setup, "steps": steps, "total_s": round(sum(s["seconds"] for s in steps), 1),
            "total_process_s": round(sum(s["process_s"] for s in steps), 1),
            "results_data": disk_usage(out), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "scale": a.scale,
        }
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
