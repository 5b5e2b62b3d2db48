"""Benchmark the cellular attribute measurements (histaug.attribute_measures) on 96x96 patches.

Measures images/s and peak resident memory of `measure` for all measurements together and for
hematoxylin_density alone (plus the time to fit the parameters on the images). Each run is a
fresh process, so its peak memory is not masked by an earlier run; the images are loaded and the
parameters fitted in the child before the peak is reset (Linux /proc/self/clear_refs) and the
baseline read, so "measure_extra_mb" is what the measuring pass itself adds to the resident images.

    python benchmarks/bench_attribute_measures.py
    python benchmarks/bench_attribute_measures.py --n-images 4096 --batch-sizes 64 256 --out bench_attr.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from histaug.utils import write_json  # noqa: E402

SIZE = 96


def _rss_peak_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> bool:
    """Reset this process's peak RSS to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_patches(n: int) -> tuple[np.ndarray, str]:
    """Real PCam patches from the shared data folder when present, else drawn H&E-like images."""
    import pandas as pd
    from PIL import Image

    folder = Path(os.environ.get("HISTAUG_SHARED_DATA", REPO.parent / "shared" / "data")) / "pcam-real-negatives"
    if (folder / "labels.csv").exists():
        ids = pd.read_csv(folder / "labels.csv")["id"].tolist()
        ids = (ids * (n // max(len(ids), 1) + 1))[:n]
        x = np.stack([np.asarray(Image.open(folder / "images" / f"{i}.jpg").convert("RGB")) for i in ids])
        return x, f"real PCam patches from {folder} (repeated to {n})"
    return drawn_patches(n), "drawn H&E-like images (shared data not found)"


def drawn_patches(n: int, seed: int = 0) -> np.ndarray:
    """Pink (eosin) backgrounds with 5-30 purple (hematoxylin) disks of radius 2-7 px."""
    from skimage.color import hed2rgb
    from skimage.draw import disk

    def rgb(h, e):
        return np.round(hed2rgb(np.array([[[h, e, 0.0]]])) * 255).astype(np.uint8)[0, 0]

    rng = np.random.default_rng(seed)
    pink, purple = rgb(0.0, 0.06), rgb(0.15, 0.02)
    x = np.empty((n, SIZE, SIZE, 3), np.uint8)
    x[:] = pink
    for im in x:
        for _ in range(rng.integers(5, 31)):
            rr, cc = disk(tuple(rng.integers(0, SIZE, 2)), rng.uniform(2, 7), shape=(SIZE, SIZE))
            im[rr, cc] = purple
    return x


def _run_one(n_images: int, names: list[str] | None, batch_size: int, queue) -> None:
    """Child process: load images, fit parameters, warm up, time one measuring pass."""
    from histaug import attribute_measures as am

    images, source = load_patches(n_images)
    names = names or am.measure_names()
    t0 = time.perf_counter()
    params = am.fit_params(images, SIZE, seed=0)
    fit_s = time.perf_counter() - t0
    am.measure(images[:8], names, params, batch=batch_size)  # warm-up (imports, allocator)
    reset = _reset_peak()  # so the peak below is the measuring pass's, not the loading's or fitting's
    base = _rss_now_mb()
    t0 = time.perf_counter()
    values = am.measure(images, names, params, batch=batch_size)
    elapsed = time.perf_counter() - t0
    peak = _rss_peak_mb()
    queue.put({
        "measures": "all" if len(names) > 1 else names[0],
        "batch_size": batch_size,
        "n_images": int(len(images)),
        "seconds": round(elapsed, 3),
        "images_per_s": round(len(images) / elapsed, 1),
        "fit_params_s": round(fit_s, 2),
        "rss_with_images_mb": round(base, 1),
        "peak_rss_mb": round(peak, 1),
        "measure_extra_mb": round(peak - base, 1),
        "peak_is_measuring_only": reset,
        "values_finite": bool(all(np.isfinite(v).all() for v in values.values())),
        "params": params.to_dict(),
        "images": source,
    })


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=2048)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    os.environ.setdefault("HISTAUG_NO_PROGRESS", "1")
    ctx = mp.get_context("spawn")
    runs = []
    for bs in args.batch_sizes:
        for names in (None, ["hematoxylin_density"]):
            queue = ctx.Queue()
            proc = ctx.Process(target=_run_one, args=(args.n_images, names, bs, queue))
            proc.start()
            result = queue.get()
            proc.join()
            runs.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "params"}), file=sys.stderr)

    report = {
        "benchmark": f"cellular attribute measurements (histaug.attribute_measures.measure) at {SIZE} px, CPU",
        "images": runs[0]["images"] if runs else None,
        "params_fitted_on_benchmark_images": runs[0]["params"] if runs else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "runs": [{k: v for k, v in r.items() if k not in ("params", "images")} for r in runs],
    }
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print(f"\n{'measures':<22}{'batch':>6}{'images':>8}{'img/s':>10}{'fit s':>8}{'peak RSS MiB':>14}{'+measure MiB':>14}")
    for r in report["runs"]:
        print(f"{r['measures']:<22}{r['batch_size']:>6}{r['n_images']:>8}{r['images_per_s']:>10}"
              f"{r['fit_params_s']:>8}{r['peak_rss_mb']:>14}{r['measure_extra_mb']:>14}")
    return report


if __name__ == "__main__":
    main()
