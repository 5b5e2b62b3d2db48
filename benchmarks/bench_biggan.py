"""BigGAN on CPU: training-step throughput and peak memory at 128 px, fp32 and bf16 autocast.

A step is what the shared loop runs (:class:`histaug.gan_trainers.AdversarialTrainer`, built with
``build_trainer``): ``n_critic`` = 2 discriminator updates on real + fake in one batch (hinge loss),
then one generator update (hinge + orthogonal regularisation) and the EMA update. BigGAN's optimiser
settings (``models.biggan.TRAINING_DEFAULTS``) are used. The "real" images are one synthetic batch
of uniform noise in [-1, 1]: this measures compute, not image quality.

Each case (width ``ch`` × precision) runs in its own subprocess, so the peak resident set size
(``ru_maxrss``) belongs to that case alone; the parent does not import torch (Linux carries a
parent's peak RSS over into its children). ``img/s`` counts real images consumed per second
(``n_critic · batch`` per step, as ``histaug.train_generator`` reports it). The 1-minute load
average is printed with each case: on a shared machine other jobs slow the measurement down.

    python benchmarks/bench_biggan.py                                  # ch 96 and 32 at 128 px, fp32 + bf16
    python benchmarks/bench_biggan.py --channels 96 --batch 8 --steps 2
    python benchmarks/bench_biggan.py --image-size 32 --channels 4 --attention 16 --batch 16
    python benchmarks/bench_biggan.py --json results/bench/biggan.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NUM_CLASSES = 4  # e.g. the levels of one attribute


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run_case(args, channels: int, precision: str) -> dict:
    """Build BigGAN at ``args.image_size`` with width ``channels``; time ``args.steps`` trainer steps."""
    import torch

    from histaug.gan_trainers import build_trainer
    from histaug.utils import seed_everything
    from models import build_generator
    from models.biggan import TRAINING_DEFAULTS, count_parameters  # importing registers the family

    torch.set_num_threads(args.threads)
    seed_everything(0)
    gen_cfg = {"family": "biggan", "image_size": args.image_size, "channels": channels, "attention": args.attention,
               **TRAINING_DEFAULTS, "batch_size": args.batch}
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    parts = build_generator(gen_cfg, NUM_CLASSES, name="bench")
    build_seconds = time.perf_counter() - t0
    compute = {"device": "cpu", "channels_last": args.channels_last, "precision": {"generators": precision}}
    trainer = build_trainer("bench", gen_cfg, parts, compute)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    real = (torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1).contiguous(memory_format=fmt)
    labels = torch.arange(args.batch) % NUM_CLASSES
    rss_built = peak_rss_mb()

    def next_batch():
        return real, labels

    for _ in range(args.warmup):
        trainer.step(next_batch)
    load = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        terms = trainer.step(next_batch)
    seconds = (time.perf_counter() - t0) / args.steps
    cpu_seconds = (time.process_time() - cpu0) / args.steps
    return {
        "image_size": args.image_size, "channels": channels, "precision": precision, "batch": args.batch,
        "n_critic": trainer.n_critic, "threads": torch.get_num_threads(), "channels_last": args.channels_last,
        "attention": args.attention, "steps_timed": args.steps, "build_seconds": build_seconds,
        "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds,
        "images_per_second": trainer.images_per_step / seconds,
        "g_params": count_parameters(parts.generator), "d_params": count_parameters(parts.discriminator),
        "peak_rss_mb_at_start": rss_start, "peak_rss_mb_after_build": rss_built, "peak_rss_mb": peak_rss_mb(),
        "load_average_1min": load, "last_terms": {k: float(v) for k, v in terms.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--channels", default="96,32", help="comma-separated widths ch (BigGAN: 96)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--attention", type=int, default=64, help="non-local block resolution (0 = none)")
    ap.add_argument("--batch", type=int, default=8, help="images per D update and per G update")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        channels, precision = args.worker.split(":")
        print(json.dumps(run_case(args, int(channels), precision)))
        return 0

    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    header = (f"{'px':>4}{'ch':>4}{'prec':>6}{'batch':>6}{'G params':>13}{'D params':>13}{'build s':>9}{'s/step':>9}"
              f"{'cpu s/step':>11}{'img/s':>8}{'RSS built MB':>14}{'peak RSS MB':>13}{'load':>6}")
    print(header, flush=True)
    rows = []
    for channels in [int(c) for c in args.channels.split(",") if c.strip()]:
        for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
            cmd = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--worker", f"{channels}:{precision}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HISTAUG_NO_PROGRESS": "1"})
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                print(f"case ch={channels} {precision} failed (exit {proc.returncode})", file=sys.stderr)
                return proc.returncode
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{r['image_size']:>4}{r['channels']:>4}{r['precision']:>6}{r['batch']:>6}{r['g_params']:>13,}"
                  f"{r['d_params']:>13,}{r['build_seconds']:>9.1f}{r['seconds_per_step']:>9.2f}"
                  f"{r['cpu_seconds_per_step']:>11.2f}{r['images_per_second']:>8.2f}{r['peak_rss_mb_after_build']:>14.0f}"
                  f"{r['peak_rss_mb']:>13.0f}{r['load_average_1min']:>6.1f}", flush=True)
    r0 = rows[0]
    print(f"\n{r0['threads']} threads, n_critic {r0['n_critic']}, {r0['steps_timed']} timed steps after "
          f"{args.warmup} warm-up; img/s = real images per second (n_critic x batch per step); "
          "load = 1-minute load average when timing started")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
