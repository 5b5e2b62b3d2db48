"""HViTGAN on CPU: training-step throughput, peak memory and parameter counts.

One training iteration is one discriminator step followed by one generator step, as in [H] §2.4:

* D step: L_S = E[D_s(x̃_fake)] − E[D_s(x̃_real)] + 10·E[(‖∇D_s(x̂)‖₂ − 1)²], where x̃ is the
  DiffAug-augmented image (the paper's policy) and x̂ mixes augmented reals and fakes. The
  gradient penalty is computed here with torch.autograd. The weighed classification losses
  of reals (L2) and fakes (L3) are added. The real, fake and penalty terms are
  back-propagated one after the other, which gives the same gradients with one
  discriminator graph in memory at a time.
* G step: −E[D_s(x̃_fake)] plus the weighed classification loss of fakes (L1).

Adam(β = (0, 0.99), lr 1e-4) is used, as in [H] §3.2. The "real" images are uniform noise
in [-1, 1]: this measures compute, not image quality.

Each case runs in its own subprocess, so the peak resident set size (``ru_maxrss``) belongs
to that case alone. The parent process does not import torch, because Linux carries a
parent's peak RSS over into the children it starts. Throughput is images per second of G+D
iterations (batch / seconds per iteration), after warm-up.

    python benchmarks/bench_hvitgan.py                          # all cases, batch 12
    python benchmarks/bench_hvitgan.py --cases demo@32 --steps 10
    python benchmarks/bench_hvitgan.py --json results/bench/hvitgan.json
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

NUM_CLASSES = 2
GP_WEIGHT = 10.0
CONFIG_NAMES = ("paper", "demo")
DEFAULT_CASES = ["demo@32", "paper@32", "paper@96"]


def parse_case(case: str) -> tuple[str, int]:
    """'paper@96' -> ('paper', 96)."""
    name, _, size = case.partition("@")
    if name not in CONFIG_NAMES or not size.isdigit():
        raise SystemExit(f"unknown case {case!r}; use <{'|'.join(CONFIG_NAMES)}>@<image size>, e.g. paper@96")
    return name, int(size)


def case_config(case: str) -> dict:
    """The named config at the case's image size (bottom derived from the size)."""
    from models.hvitgan import DEMO_CONFIG, PAPER_CONFIG

    name, size = parse_case(case)
    return {**{"paper": PAPER_CONFIG, "demo": DEMO_CONFIG}[name], "image_size": size, "bottom": None}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def training_iteration(G, D, opt_g, opt_d, opt_w, weighing, augment, batch: int) -> None:
    """One D step with an inline WGAN-GP gradient penalty, then one G step."""
    import torch
    import torch.nn.functional as F

    z = torch.randn(batch, G.latent_dim)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    real = torch.rand(batch, 3, G.image_size, G.image_size) * 2 - 1

    # discriminator step: the real, fake and penalty terms are back-propagated one after the
    # other (their gradients add up to those of the summed loss), so one D graph is alive at a time
    with torch.no_grad():
        fake = G(z, labels)
    real_aug, generated_aug = augment(real), augment(fake)
    opt_d.zero_grad(set_to_none=True)
    opt_w.zero_grad(set_to_none=True)
    out_real = D(real_aug)
    (-out_real["source"].mean() + weighing([F.cross_entropy(out_real["class_logits"], labels)], indices=[1])).backward()
    out_fake = D(generated_aug)
    (out_fake["source"].mean() + weighing([F.cross_entropy(out_fake["class_logits"], labels)], indices=[2])).backward()
    eps = torch.rand(batch, 1, 1, 1)
    x_hat = (eps * real_aug + (1 - eps) * generated_aug).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat)["source"].sum(), x_hat, create_graph=True)
    (GP_WEIGHT * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()).backward()
    opt_d.step()
    opt_w.step()

    # generator step
    fake = G(z, labels)
    out = D(augment(fake))
    g_loss = -out["source"].mean() + weighing([F.cross_entropy(out["class_logits"], labels)], indices=[0])
    opt_g.zero_grad(set_to_none=True)
    opt_w.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    opt_w.step()


def run_case(case: str, batch: int, steps: int, warmup: int, threads: int) -> dict:
    """Measure one case in this process and return its numbers."""
    import torch

    from models.diffaug import PAPER_POLICY, DiffAugment
    from models.hvitgan import build_hvitgan, count_parameters
    from models.weighing import MultiLossWeighing

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = case_config(case)
    G, D = build_hvitgan(cfg, NUM_CLASSES)
    weighing = MultiLossWeighing(3, "hvitgan")
    augment = DiffAugment(PAPER_POLICY)
    adam = dict(lr=1e-4, betas=(0.0, 0.99))
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    opt_w = torch.optim.Adam(weighing.parameters(), **adam)
    rss_built = peak_rss_mb()
    for _ in range(warmup):
        training_iteration(G, D, opt_g, opt_d, opt_w, weighing, augment, batch)
    start = time.perf_counter()
    for _ in range(steps):
        training_iteration(G, D, opt_g, opt_d, opt_w, weighing, augment, batch)
    seconds = (time.perf_counter() - start) / steps
    return {
        "case": case,
        "image_size": G.image_size,
        "batch": batch,
        "threads": threads,
        "steps_timed": steps,
        "seconds_per_iteration": seconds,
        "images_per_second": batch / seconds,
        "g_params": count_parameters(G),
        "d_params": count_parameters(D),
        "peak_rss_mb_after_build": rss_built,
        "peak_rss_mb": peak_rss_mb(),
    }


def parameter_table() -> list[dict]:
    """Parameter counts of HViTGAN and MedViTGAN for the paper and demo configs."""
    from models.hvitgan import DEMO_CONFIG, PAPER_CONFIG, build_hvitgan, build_medvitgan, count_parameters

    rows = []
    for name, cfg in (("paper", PAPER_CONFIG), ("demo", DEMO_CONFIG)):
        for family, build in (("hvitgan", build_hvitgan), ("medvitgan", build_medvitgan)):
            model_cfg = {k: v for k, v in cfg.items() if k != "class_projection"} if family == "medvitgan" else cfg
            G, D = build(model_cfg, NUM_CLASSES)
            rows.append({
                "config": name, "family": family, "image_size": G.image_size,
                "g_params": count_parameters(G), "d_params": count_parameters(D),
            })
    return rows


def run_worker(worker_args: list[str], what: str):
    """Run this script as a worker subprocess and return the JSON it prints last."""
    proc = subprocess.run([sys.executable, __file__, *worker_args], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark {what} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated <config>@<size>")
    parser.add_argument("--batch", type=int, default=12, help="images per G and per D step ([H]: 12)")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per case")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads; use fewer than the idle cores when other jobs share the machine")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "parameters":
        print(json.dumps(parameter_table()))
        return
    if args.worker:
        print(json.dumps(run_case(args.worker, args.batch, args.steps, args.warmup, args.threads)))
        return

    params = run_worker(["--worker", "parameters"], "parameter counts")
    print(f"{'config':<8}{'family':<11}{'size':>5}{'G params':>14}{'D params':>14}")
    for r in params:
        print(f"{r['config']:<8}{r['family']:<11}{r['image_size']:>5}{r['g_params']:>14,}{r['d_params']:>14,}")
    print(flush=True)

    results = []
    print(f"{'case':<10}{'batch':>6}{'s/iter':>10}{'img/s':>9}{'G params':>13}{'D params':>13}"
          f"{'RSS built MB':>14}{'peak RSS MB':>13}", flush=True)
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        parse_case(case)
        r = run_worker(["--worker", case, "--batch", str(args.batch), "--steps", str(args.steps),
                        "--warmup", str(args.warmup), "--threads", str(args.threads)], f"case {case}")
        results.append(r)
        print(f"{r['case']:<10}{r['batch']:>6}{r['seconds_per_iteration']:>10.2f}{r['images_per_second']:>9.2f}"
              f"{r['g_params']:>13,}{r['d_params']:>13,}{r['peak_rss_mb_after_build']:>14.0f}{r['peak_rss_mb']:>13.0f}",
              flush=True)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"parameters": params, "throughput": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
