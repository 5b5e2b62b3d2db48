"""AttributeGAN on CPU: training-step throughput and peak memory, efficient attention on/off, fp32/bf16.

One step is what the shared adversarial loop does (``histaug.gan_trainers.AdversarialTrainer.step``):
one discriminator update (hinge on real and fake, the two reconstruction MSEs and the CCL on the real
batch) and one generator update (hinge + CCL on the fakes), each with Adam(0.5, 0.9), lr 2e-4 ([A] and
the authors' code), plus the gradient-norm bookkeeping of the divergence guard. The model is
``models.attributegan.PAPER_CONFIG`` at ``--image-size`` (default 128 px) with widths scaled by
``--width`` (g_channels = d_channels = width; the paper's is 512). The "real" batch is uniform noise
in [-1, 1] with attribute rows from four combinations of [A]'s 4/3/3/2/4 levels: this measures
compute, not quality.

Cases: ``ea`` (efficient attention on: G at S/16 and S/8, D where those sides are down-block
inputs) and ``noea`` (``efficient_attention: false``, the w/o EA ablation), each in fp32 and under
bf16 autocast (``compute.precision.generators: bf16``). Each case runs in its own subprocess, so
its peak resident set size (``ru_maxrss``) is its own; the parent does not import torch.

    python benchmarks/bench_attributegan.py                                   # 128 px, batch 8
    python benchmarks/bench_attributegan.py --steps 2 --warmup 1 --threads 2
    python benchmarks/bench_attributegan.py --width 128 --batch 16 --json results/bench/attributegan.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CASES = ("ea-fp32", "noea-fp32", "ea-bf16", "noea-bf16")
LEVELS = (4, 3, 3, 2, 4)
COMBINATIONS = [[0, 1, 2, 1, 3], [3, 0, 0, 0, 1], [1, 2, 1, 1, 0], [2, 2, 1, 0, 2]]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, args) -> dict:
    """Measure one case in this process."""
    import torch

    import models.attributegan as ag
    from histaug.gan_trainers import build_trainer
    from models import Condition, build_generator

    attention, precision = case.split("-")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = {**ag.PAPER_CONFIG, "image_size": args.image_size, "g_channels": args.width, "d_channels": args.width,
           "efficient_attention": attention == "ea", "batch_size": args.batch}
    condition = Condition.attributes(["crowding", "polarity", "mitosis", "nucleoli", "pleomorphism"], LEVELS)
    rss_start = peak_rss_mb()
    parts = build_generator(cfg, condition, name="attributegan")
    trainer = build_trainer("attributegan", cfg, parts, {"device": "cpu", "precision": {"generators": precision}})
    rss_built = peak_rss_mb()
    real = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    labels = torch.tensor(COMBINATIONS)[torch.arange(args.batch) % len(COMBINATIONS)]

    def next_batch():
        return real, labels

    for _ in range(args.warmup):
        trainer.step(next_batch)
    start = time.perf_counter()
    for _ in range(args.steps):
        terms = trainer.step(next_batch)
    seconds = (time.perf_counter() - start) / args.steps
    return {
        "case": case, "image_size": args.image_size, "width": args.width, "batch": args.batch,
        "threads": torch.get_num_threads(), "precision": precision, "efficient_attention": attention == "ea",
        "steps_timed": args.steps, "seconds_per_step": seconds, "images_per_second": args.batch / seconds,
        "g_params": ag.count_parameters(parts.generator), "d_params": ag.count_parameters(parts.discriminator),
        "attention_modules": sorted(parts.generator.attention) + [f"D:{k}" for k in parts.discriminator.attention],
        "peak_rss_mb_before_build": rss_start, "peak_rss_mb_after_build": rss_built, "peak_rss_mb": peak_rss_mb(),
        "last_losses": {k: float(v) for k, v in terms.items()},
    }


def run_worker(case: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv, "--worker", case], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark case {case} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=512, help="g_channels = d_channels (paper: 512)")
    parser.add_argument("--batch", type=int, default=8, help="images per step ([A]: 64 on two GPUs)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_case(args.worker, args)))
        return

    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = []
    print(f"{'case':<11}{'px':>5}{'width':>6}{'batch':>6}{'s/step':>9}{'img/s':>8}{'G params':>13}{'D params':>13}"
          f"{'RSS built MB':>14}{'peak RSS MB':>13}", flush=True)
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; use some of {CASES}")
        r = run_worker(case, passthrough)
        results.append(r)
        print(f"{r['case']:<11}{r['image_size']:>5}{r['width']:>6}{r['batch']:>6}{r['seconds_per_step']:>9.2f}"
              f"{r['images_per_second']:>8.2f}{r['g_params']:>13,}{r['d_params']:>13,}"
              f"{r['peak_rss_mb_after_build']:>14.0f}{r['peak_rss_mb']:>13.0f}", flush=True)
    if results:
        r0 = results[0]
        print(f"\n{r0['threads']} threads, {r0['steps_timed']} timed steps after {args.warmup} warm-up; one step = one D "
              "and one G update of the shared loop; attention at "
              f"{', '.join(r0['attention_modules']) if r0['efficient_attention'] else '(see ea cases)'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
