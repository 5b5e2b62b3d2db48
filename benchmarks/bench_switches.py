"""The speed switches of compute/generator settings, each measured where this machine can run it.

Every case runs in its own subprocess (peak RSS per case) and reports images/s after warm-up:

* ``attention-fused`` / ``attention-explicit``: a HViTGAN generator forward + backward (the
  generator's attention is fused by default; ``fused_attention: false`` writes it out), at the
  demo config's size. The discriminator keeps the explicit form whenever a gradient penalty
  differentiates it twice.
* ``compile-off`` / ``compile-on``: a ResNet34 train step (``compute.compile.downstream``); the
  compile time of the first steps is reported separately. Off by default: the compile alone takes
  about a minute per network.
* ``pin_memory``: page-locked host memory only matters for host-to-GPU copies; without CUDA the
  case reports that it cannot run rather than a number.
* ``ddp-1`` / ``ddp-2``: a cGAN training step of the shared loop in one process and in two gloo
  processes (``generators.<gen>.gpus: 2``) on the same global batch; on a CPU both processes share
  the cores, so this shows the overhead of the gradient all-reduce, not a speed-up.

    python benchmarks/bench_switches.py                       # every case
    python benchmarks/bench_switches.py --cases attention-fused,attention-explicit --steps 10
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CASES = ["attention-fused", "attention-explicit", "compile-off", "compile-on", "pin_memory", "ddp-1", "ddp-2"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(step, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up steps, seconds per timed step)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    return t1 - t0, (time.perf_counter() - t1) / steps


def attention_case(fused: bool, batch: int, warmup: int, steps: int) -> dict:
    import torch

    from models.hvitgan import DEMO_CONFIG, build_hvitgan, set_fused_attention

    G, _ = build_hvitgan({**DEMO_CONFIG, "image_size": 32, "bottom": None}, 2)
    set_fused_attention(G, fused)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)

    def step():
        out = G(torch.randn(batch, G.latent_dim), torch.arange(batch) % 2)
        opt.zero_grad(set_to_none=True)
        out.square().mean().backward()
        opt.step()

    first, per = timed(step, warmup, steps)
    return {"what": "HViTGAN generator (demo config, 32 px) forward + backward", "batch": batch,
            "images_per_second": batch / per, "warmup_seconds": first}


def compile_case(on: bool, batch: int, warmup: int, steps: int) -> dict:
    import torch

    from histaug.classifier_training import make_optimizer, train_step
    from histaug.classify import build_classifier
    from histaug.speed import compiled

    model = build_classifier("resnet34", 2, None).to(memory_format=torch.channels_last)
    forward = compiled(model, on)
    opt = make_optimizer(model, 1e-3, 1e-4)
    x = torch.randn(batch, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch) % 2
    first, per = timed(lambda: train_step(forward, opt, x, y, "bf16"), warmup, steps)
    return {"what": "ResNet34 train step, 96 px, channels_last + bf16", "batch": batch,
            "images_per_second": batch / per, "warmup_seconds": first}


def pin_case() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"what": "host-to-GPU copy of a uint8 batch", "skipped": "needs a CUDA device (none visible)"}
    x = torch.randint(0, 256, (256, 96, 96, 3), dtype=torch.uint8)
    out = {}
    for pin in (False, True):
        src = x.pin_memory() if pin else x
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            src.to("cuda", non_blocking=pin)
        torch.cuda.synchronize()
        out["pinned" if pin else "pageable"] = 50 * len(x) / (time.perf_counter() - t0)
    return {"what": "host-to-GPU copy of 256 uint8 96-px images", "images_per_second": out["pinned"],
            "pageable_images_per_second": out["pageable"]}


def ddp_case(nproc: int, steps: int) -> dict:
    """The cGAN step of the shared loop under torchrun; time per step from the training summary."""
    worker = REPO / "benchmarks" / "_ddp_step.py"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // nproc)), "HISTAUG_NO_PROGRESS": "1",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(worker), tmp, str(steps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        summary = json.loads(Path(tmp, "summary.json").read_text())
    return {"what": f"cGAN (demo size) training steps, {nproc} gloo process(es), global batch 32",
            "batch": 32, "images_per_second": summary["images_per_s"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}  # the largest worker


def run_case(case: str, batch: int, warmup: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    if case.startswith("attention-"):
        r = attention_case(case == "attention-fused", batch, warmup, steps)
    elif case.startswith("compile-"):
        r = compile_case(case == "compile-on", batch, warmup, steps)
    elif case == "pin_memory":
        r = pin_case()
    else:
        r = ddp_case(int(case.split("-")[1]), steps * 5)
    return {"case": case, "peak_rss_mb": peak_rss_mb(), **r}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_case(args.worker, args.batch, args.warmup, args.steps)))
        return
    results = []
    print(f"{'case':<20}{'img/s':>9}{'warm-up s':>11}{'peak RSS MB':>13}  what")
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {CASES}")
        proc = subprocess.run([sys.executable, __file__, "--worker", case, "--batch", str(args.batch), "--warmup",
                               str(args.warmup), "--steps", str(args.steps)], capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"case {case} failed")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        if "skipped" in r:
            print(f"{case:<20}{'-':>9}{'-':>11}{r['peak_rss_mb']:>13.0f}  {r['what']}: skipped, {r['skipped']}")
        else:
            warm = f"{r['warmup_seconds']:.1f}" if "warmup_seconds" in r else "-"
            print(f"{case:<20}{r['images_per_second']:>9.1f}{warm:>11}{r['peak_rss_mb']:>13.0f}  {r['what']}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
