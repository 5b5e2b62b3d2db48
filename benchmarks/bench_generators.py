"""Training-step throughput, peak memory and parameter counts of the generator families.

    python benchmarks/bench_generators.py --image-size 96 --batch 32
    python benchmarks/bench_generators.py --image-size 32 --batch 32 --generators cgan cvae --steps 5

Each generator entry of the config (``generators:``) is measured in its own child process, so the
peak resident memory (``resource.getrusage(...).ru_maxrss``; on CUDA
``torch.cuda.max_memory_allocated``) belongs to that model alone. A measurement runs the same step
objects as ``histaug.train_generator`` (n_critic D updates + one G update with EMA for adversarial
families, one reconstruction + KL update for the VAE) on random uint8 images kept on the device,
after ``--warmup`` untimed steps.

``img/s`` counts real training images consumed per second (n_critic · batch per adversarial step),
``steps/s`` generator updates per second.
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
sys.path.insert(0, str(REPO))


def measure(name: str, args) -> dict:
    import numpy as np
    import torch
    import yaml

    from histaug.gan_trainers import build_trainer
    from histaug.batches import BatchSampler
    from histaug.train_generator import prepare_images, to_model_range
    from histaug.utils import seed_everything, set_threads
    from models import build_generator

    config = yaml.safe_load(Path(args.config).read_text())
    if name not in config["generators"]:
        raise SystemExit(f"{args.config}: no generator {name!r} under generators: ({sorted(config['generators'])})")
    gen_cfg = {**config["generators"][name], "image_size": args.image_size, "batch_size": args.batch}
    compute = dict(config.get("compute", {}))
    if args.device:
        compute["device"] = args.device
    if args.precision:
        compute["precision"] = {"generators": args.precision}
    set_threads(args.threads)
    seed_everything(0)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    parts = build_generator(gen_cfg, condition=2, name=name)
    trainer = build_trainer(name, gen_cfg, parts, compute)
    device = trainer.device
    rng = np.random.default_rng(0)
    n_images = max(4 * args.batch, 256)
    images = rng.integers(0, 256, (n_images, args.image_size, args.image_size, 3), dtype=np.uint8)
    labels = (np.arange(n_images) % 2).astype(np.int64)
    data = prepare_images(images, args.image_size, device)
    label_t = torch.from_numpy(labels).to(device)
    sampler = BatchSampler(labels, args.batch, balanced=True, seed=0)
    fmt = torch.channels_last if compute.get("channels_last") else torch.contiguous_format

    def next_batch():
        idx = sampler.next().to(device)
        return to_model_range(data[idx]).contiguous(memory_format=fmt), label_t[idx]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        trainer.step(next_batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        terms = trainer.step(next_batch)
    sync()
    seconds = time.perf_counter() - t0

    def count(module):
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    result = {
        "generator": name,
        "family": parts.family,
        "image_size": args.image_size,
        "batch": args.batch,
        "n_critic": getattr(trainer, "n_critic", 1),
        "device": str(device),
        "precision": trainer.precision,
        "threads": torch.get_num_threads(),
        "g_params": count(parts.generator),
        "d_params": count(parts.discriminator),
        "steps": args.steps,
        "seconds": seconds,
        "steps_per_s": args.steps / seconds,
        "images_per_s": args.steps * trainer.images_per_step / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_model_mb": rss_before / 1024,
        "last_losses": {k: float(v) for k, v in terms.items()},
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def print_table(rows: list[dict]) -> None:
    cuda = any("peak_cuda_mb" in r for r in rows)
    header = ["generator", "family", "px", "batch", "n_critic", "G params", "D params", "steps/s", "img/s",
              "peak RSS MB", "base RSS MB"] + (["peak CUDA MB"] if cuda else [])
    lines = []
    for r in rows:
        line = [
            r["generator"], r["family"], str(r["image_size"]), str(r["batch"]), str(r["n_critic"]),
            f"{r['g_params'] / 1e6:.2f}M", f"{r['d_params'] / 1e6:.2f}M" if r["d_params"] else "-",
            f"{r['steps_per_s']:.2f}", f"{r['images_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['rss_before_model_mb']:.0f}",
        ]
        if cuda:
            line.append(f"{r.get('peak_cuda_mb', float('nan')):.0f}")
        lines.append(line)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    r0 = rows[0]
    print(f"\ndevice {r0['device']}, precision {r0['precision']}, {r0['threads']} threads, "
          f"{r0['steps']} timed steps after warm-up; img/s = real images per second (n_critic x batch per GAN step); "
          "base RSS = the process after imports, before the model was built")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--generators", nargs="+", default=["cgan", "cvae"], help="entries of generators: in the config")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--device", default=None, help="override compute.device (auto | cpu | cuda)")
    ap.add_argument("--precision", default=None, help="override compute.precision.generators")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return 0

    rows = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for name in args.generators:
        cmd = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--worker", name]
        env = {**os.environ, "HISTAUG_NO_PROGRESS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"benchmark of {name!r} failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
