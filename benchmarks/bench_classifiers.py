"""Train-step throughput and peak memory of the downstream classifiers.

For each architecture, image size and numeric mode the script times full training steps
(uint8 batch -> resize/augment/normalise -> forward -> cross-entropy -> backward -> fused AdamW) with
the same code the pipeline uses (histaug.classify.to_model_input / train_step), and records the
peak resident memory. Every case runs in its own subprocess so that peak RSS belongs to that
case alone.

Peak RSS includes the interpreter, torch and timm (about 0.8 GB before any training step);
"after build" is the resident memory once the model exists, so the difference is the cost of
training (activations, gradients, optimiser state). "others" is how many CPU cores other
processes kept busy while the case ran; on a shared machine use --wait-idle.

Modes:
  fp32                contiguous (NCHW) tensors, fp32
  channels_last       NHWC memory format, fp32          (compute.channels_last: true)
  channels_last+bf16  NHWC + bfloat16 autocast          (compute.precision.downstream: bf16)

Class heads: ``<generator>_head`` (HViTGAN Table 1 "Cls Head" rows) times the discriminator of
that entry of the config file given by --config, at the generator's resolution (--image-size is
ignored for it), with fresh weights (the speed does not depend on them).

Examples:
  python benchmarks/bench_classifiers.py                              # all archs, 96 px, batch 32
  python benchmarks/bench_classifiers.py --archs hvitgan_head --modes fp32 channels_last+bf16
  python benchmarks/bench_classifiers.py --archs resnet34 --image-size 96
  python benchmarks/bench_classifiers.py --image-size 32 48 --steps 8 --json bench.json
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
MODES = ("fp32", "channels_last", "channels_last+bf16")


def _current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(arch: str, image_size: int, mode: str, batch: int, steps: int, warmup: int, threads: int | None,
             config_path: Path | None = None) -> dict:
    """Time `steps` training steps after `warmup` untimed ones; runs inside the worker process."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    import yaml

    from histaug.classify import GAN_MEAN, GAN_STD, IMAGENET_MEAN, IMAGENET_STD, build_classifier, build_head_classifier
    from histaug.classifier_training import make_optimizer, train_step
    from histaug.classify import to_model_input
    from histaug.config import head_generator
    from histaug.utils import set_threads

    set_threads(threads)
    channels_last = mode.startswith("channels_last")
    precision = "bf16" if mode.endswith("bf16") else "fp32"
    torch.manual_seed(0)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    gen = head_generator(arch)
    if gen:
        config = yaml.safe_load(Path(config_path or REPO / "config" / "config.yaml").read_text())
        gen_cfg = config["generators"][gen]
        model = build_head_classifier({"config": gen_cfg, "num_classes": 2, "generator": gen})
        image_size, mean, std = int(gen_cfg["image_size"]), GAN_MEAN, GAN_STD
    else:
        model = build_classifier(arch, num_classes=2)
    rss_model = _current_rss_mb()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    # PCam patches are 96 px; smaller sizes are produced by the same antialiased resize as training.
    images = rng.integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 2, batch))
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        x = to_model_input(images, image_size, mean, std, channels_last=channels_last, augment_generator=generator)
        train_step(model, optimizer, x, labels, precision)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {
        "arch": arch,
        "image_size": image_size,
        "mode": mode,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "step_ms_median": 1000 * median,
        "img_per_s": batch / median,
        "img_per_s_mean": batch * steps / sum(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_build_mb": rss_model,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _cpu_busy_seconds() -> float:
    """Machine-wide non-idle CPU time so far (all cores, Linux /proc/stat), in seconds."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_until_idle(max_wait: float, threshold: float = 0.2, window: float = 3.0) -> float:
    """Wait (at most `max_wait` s) until other processes use < `threshold` cores; returns their last usage."""
    deadline = time.monotonic() + max_wait
    while True:
        before = _cpu_busy_seconds()
        time.sleep(window)
        busy = (_cpu_busy_seconds() - before) / window
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet34", "resnet50_cbam", "densenet169"])
    parser.add_argument("--image-size", nargs="+", type=int, default=[96])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each case, wait up to this long for other processes to leave the CPU idle")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml",
                        help="config file whose generators define the <generator>_head architectures")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        arch, size, mode = args.worker.split("|")
        result = run_case(arch, int(size), mode, args.batch, args.steps, args.warmup, args.threads, args.config)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    load_before = os.getloadavg()
    print(f"# cpus={os.cpu_count()} loadavg(1,5,15)={tuple(round(v, 2) for v in load_before)} batch={args.batch} "
          f"steps={args.steps} warmup={args.warmup}", flush=True)
    header = (f"{'arch':<14} {'px':>4} {'mode':<19} {'img/s':>8} {'ms/step':>9} {'peak RSS MB':>12} "
              f"{'after build':>12} {'others':>7}")
    print(header)
    print("-" * len(header), flush=True)
    results = []
    for size in args.image_size:
        for arch in args.archs:
            for mode in args.modes:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{arch}|{size}|{mode}",
                       "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--config", str(args.config)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.wait_idle > 0:
                    _wait_until_idle(args.wait_idle)
                busy0, own0, t0 = _cpu_busy_seconds(), _children_cpu_seconds(), time.monotonic()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                # cores kept busy by *other* processes while this case ran (0 = exclusive use)
                others = max(0.0, (_cpu_busy_seconds() - busy0) - (_children_cpu_seconds() - own0)) / (time.monotonic() - t0)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(f"{arch:<14} {size:>4} {mode:<19} FAILED: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                r = json.loads(lines[-1][len("RESULT "):])
                r["other_cpu_cores"] = others
                results.append(r)
                print(f"{arch:<14} {r['image_size']:>4} {mode:<19} {r['img_per_s']:>8.1f} {r['step_ms_median']:>9.0f} "
                      f"{r['peak_rss_mb']:>12.0f} {r['rss_after_build_mb']:>12.0f} {others:>7.2f}", flush=True)
    load_after = os.getloadavg()
    print(f"# loadavg after={tuple(round(v, 2) for v in load_after)}. 'others' = CPU cores used by other processes "
          "during the case; above ~0.2 the throughput is understated.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load_before": load_before, "load_after": load_after, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
