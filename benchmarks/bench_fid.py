"""Benchmark Inception feature extraction for FID/KID on 96x96 patches.

Measures images/s and peak resident memory of torch-fidelity's inception-v3-compat extractor
(histaug.inception.InceptionFeatures) for several batch sizes. Each batch size runs in a fresh
process so its peak memory is not masked by an earlier run.

    python benchmarks/bench_fid.py                       # weights from the config, else built to a temp dir
    python benchmarks/bench_fid.py --batch-sizes 16 64 --n-images 128 --metrics --out bench_fid.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from histaug import fid, inception  # noqa: E402
from histaug.utils import write_json  # noqa: E402


def _rss_peak_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_patches(n: int) -> tuple[np.ndarray, str]:
    """Real PCam patches from the shared data folder when present, else uniform noise of the same shape."""
    import pandas as pd
    from PIL import Image

    folder = Path(os.environ.get("HISTAUG_SHARED_DATA", REPO.parent / "shared" / "data")) / "pcam-real-negatives"
    if (folder / "labels.csv").exists():
        ids = pd.read_csv(folder / "labels.csv")["id"].tolist()
        ids = (ids * (n // max(len(ids), 1) + 1))[:n]
        x = np.stack([np.asarray(Image.open(folder / "images" / f"{i}.jpg").convert("RGB")) for i in ids])
        return x, f"real PCam patches from {folder}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8), "uniform noise (shared data not found)"


def _run_one(weights: str, images: np.ndarray, batch_size: int, threads: int | None, queue,
             channels_last: bool = False) -> None:
    """Child process: load the extractor, warm up, time one pass over `images`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    base = _rss_now_mb()
    t0 = time.perf_counter()
    extractor = inception.InceptionFeatures(weights, device="cpu", channels_last=channels_last)
    load_s = time.perf_counter() - t0
    after_load = _rss_now_mb()
    extractor(images[: min(2, len(images))])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    feats = inception.extract_features(extractor, images, batch_size=batch_size, desc=f"bs={batch_size}")
    elapsed = time.perf_counter() - t0
    queue.put(
        {
            "batch_size": batch_size,
            "channels_last": channels_last,
            "n_images": int(len(images)),
            "seconds": round(elapsed, 3),
            "images_per_s": round(len(images) / elapsed, 2),
            "model_load_s": round(load_s, 2),
            "rss_before_load_mb": round(base, 1),
            "rss_after_load_mb": round(after_load, 1),
            "peak_rss_mb": round(_rss_peak_mb(), 1),
            "features_finite": bool(np.isfinite(feats).all()),
            "torch_threads": torch.get_num_threads(),
        }
    )


def time_metrics(sizes=(32, 500, 3000), seed: int = 0) -> list[dict]:
    """Seconds for FID on random N x 2048 features per set, both ways (D x D statistics, and
    :func:`histaug.fid.fid_from_features`, which works in N x N below N = 2048), and for KID (100 subsets)."""
    out = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        real, fake = rng.normal(size=(n, 2048)), rng.normal(loc=0.05, size=(n, 2048))
        t0 = time.perf_counter()
        by_statistics = fid.frechet_distance(*fid.feature_statistics(real), *fid.feature_statistics(fake))
        stats_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        by_features = fid.fid_from_features(real, fake)
        feats_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fid.kernel_inception_distance(real, fake, subset_size=min(n, 1000), subsets=100, seed=seed)
        kid_s = time.perf_counter() - t0
        out.append({"n_per_set": n, "fid_statistics_seconds": round(stats_s, 3),
                    "fid_from_features_seconds": round(feats_s, 3),
                    "relative_difference": abs(by_features - by_statistics) / abs(by_statistics),
                    "kid_100_subsets_seconds": round(kid_s, 2)})
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="inception-v3-compat weights; default: config path, else built to a temp dir")
    ap.add_argument("--n-images", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--metrics", action="store_true", help="also time FID/KID on 2048-d features")
    ap.add_argument("--metric-sizes", type=int, nargs="+", default=[32, 500, 3000],
                    help="images per set for --metrics")
    ap.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"],
                    choices=["contiguous", "channels_last"], help="memory layouts to compare (compute.channels_last)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    os.environ.setdefault("HISTAUG_NO_PROGRESS", "1")
    tmpdir = None
    weights = Path(args.weights) if args.weights else None
    if weights is None:
        import yaml

        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        configured = REPO / cfg["evaluation"]["inception"]["weights"]
        if configured.is_file():
            weights = configured
        else:
            tmpdir = tempfile.TemporaryDirectory(prefix="bench_fid_")
            checkpoint = inception.locate_fid_helper_checkpoint(cfg["evaluation"]["inception"]["fid_helper_checkpoint"])
            t0 = time.perf_counter()
            weights = inception.build_inception_weights(checkpoint, Path(tmpdir.name) / configured.name)
            print(f"built weights in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    images, source = load_patches(args.n_images)
    ctx = mp.get_context("spawn")
    runs = []
    for bs in args.batch_sizes:
        for layout in args.layouts:
            queue = ctx.Queue()
            proc = ctx.Process(target=_run_one, args=(str(weights), images, bs, args.threads, queue,
                                                      layout == "channels_last"))
            proc.start()
            result = queue.get()
            proc.join()
            runs.append(result)
            print(json.dumps(result), file=sys.stderr)

    report = {
        "benchmark": "Inception (torch-fidelity inception-v3-compat) feature extraction, 96x96 -> 299x299, CPU",
        "images": source,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "runs": runs,
    }
    if args.metrics:
        report["metrics"] = time_metrics(args.metric_sizes)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    if tmpdir is not None:
        tmpdir.cleanup()
    return report


if __name__ == "__main__":
    main()
