"""Estimate the GPU-hours of a configuration (default: the paper's), per rule, from FLOP counts.

An ESTIMATE, not a measurement. For each generator the script runs one real training step of the
shared loop's trainer (batch 2, on the CPU, at the configured size) under torch's FLOP counter
(torch.utils.flop_counter: matrix multiplications and convolutions, forward and backward, incl. the
gradient penalty's double backward) and scales it to the batch size and the steps. Classifiers:
forward FLOPs per image x 3 (forward + backward) x training images x the maximum epochs, plus the
validation pass per epoch. Sampling, selection and FID: forward FLOPs per image x images. GPU time =
FLOPs / (peak x utilisation). Assumptions, all printed and all options:

* --peak-tflops 312: an A100's dense bf16 tensor-core peak (V100 fp16: 125; H100 SXM bf16: 989).
* --utilisation 0.3: the share of the peak a job reaches (small GANs and ResNets at 96 px reach
  well under half; elementwise ops, data movement and Python are not counted in the FLOPs).
* every classifier runs its full epoch budget (early stopping only lowers the number), every
  selected set keeps all its candidates (an upper bound), the Inception network runs at 299 px.
* PCam: 262,144 training, 32,768 validation and 32,768 test patches (the subset comes from the config).

    python benchmarks/bench_gpu_hours.py                                   # paper config
    python benchmarks/bench_gpu_hours.py --configfile config/config.yaml config/demo.yaml --peak-tflops 125
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from histaug.attribute_names import attribute_names  # noqa: E402
from histaug.config import downstream_runs, head_generator, load_config, validate_config  # noqa: E402
from histaug.gan_trainers import build_trainer  # noqa: E402
from histaug.generator_runs import attribute_conditioned, condition_attribute, generator_condition  # noqa: E402
from histaug.trainsets import parse_trainset  # noqa: E402
from models.conditioning import Condition  # noqa: E402
from models.registry import build_generator  # noqa: E402

PCAM = {"train": 262_144, "valid": 32_768, "test": 32_768}
INCEPTION_SIZE = 299


class _FlopCount(TorchDispatchMode):
    """Adds up torch's FLOP formulas (torch.utils.flop_counter) of every op that runs, backward ops
    included. (FlopCounterMode itself tracks modules with hooks that break on the double backward of
    a gradient penalty.)"""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops(fn) -> float:
    with _FlopCount() as counter:
        fn()
    return float(counter.total)


def attribute_levels(cfg: dict) -> dict[str, int]:
    attrs = cfg.get("attributes") or {}
    source = attrs.get("source")
    if source == "pixels":
        return {a["name"]: int(a["levels"]) for a in attrs["pixels"]["attributes"]}
    if source == "file":
        return {k: int(v) for k, v in (attrs["file"].get("levels") or {}).items()}
    return {n: 3 for n in attribute_names(attrs)}  # reports: the levels the keyword table grades (1-3)


def condition_of(cfg: dict, gen: str, classes: int) -> Condition:
    kind = generator_condition(cfg, gen)
    if kind == "class":
        return Condition.classes(classes)
    levels = attribute_levels(cfg)
    if kind == "attribute":
        name = condition_attribute(cfg, gen)
        return Condition("class", (levels[name],), (name,))
    return Condition.attributes(list(levels), list(levels.values()))


def generator_step_flops(gen: str, gen_cfg: dict, condition: Condition, batch: int) -> tuple[float, float]:
    """(FLOPs of one training step at the configured batch size, generator forward FLOPs per image)."""
    torch.manual_seed(0)
    cfg = {**gen_cfg, "batch_size": batch}
    parts = build_generator(cfg, condition, name=gen)
    trainer = build_trainer(gen, cfg, parts, {"device": "cpu"})
    size = int(gen_cfg["image_size"])

    def next_batch():
        x = torch.rand(batch, 3, size, size) * 2 - 1
        if condition.kind == "class":
            y = torch.arange(batch) % condition.levels[0]
        else:
            y = torch.stack([torch.arange(batch) % n for n in condition.levels], dim=1)
        return x, y

    step = flops(lambda: trainer.step(next_batch))
    g = trainer.export_generator().eval()
    z = torch.randn(batch, g.latent_dim)
    labels = next_batch()[1]
    with torch.no_grad():
        fwd = flops(lambda: g(z, labels))
    scale = int(gen_cfg["batch_size"]) / batch
    return step * scale, fwd / batch


def classifier_flops_per_image(arch: str, size: int, classes: int, cfg: dict) -> float:
    from histaug.classify import build_classifier, build_head_classifier

    gen = head_generator(arch)
    if gen is not None:  # a GAN's discriminator class head at the GAN's image size
        gen_cfg = cfg["generators"][gen]
        head = {"config": gen_cfg, "num_classes": classes, "generator": gen}
        model, size = build_head_classifier(head), int(gen_cfg["image_size"])
    else:
        model = build_classifier(arch, classes, None)
    model.eval()
    with torch.no_grad():
        return flops(lambda: model(torch.rand(2, 3, size, size))) / 2


def inception_flops_per_image() -> float:
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    with torch.no_grad():
        return flops(lambda: net(torch.rand(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)))


def estimate(cfg: dict, batch: int) -> tuple[list[dict], dict]:
    declared = cfg["labels"].get("classes")
    classes = len(declared) if isinstance(declared, list) else int(declared or 2)
    sub = cfg["subset"]
    n_real = int(sub.get("count") or round(float(sub.get("fraction", 0.1)) * PCAM["train"]))
    n_valid, n_test = PCAM["valid"], PCAM["test"]
    rows, per_image = [], {}
    gens = list(cfg["run_generators"])
    for gen in gens:
        gen_cfg = cfg["generators"][gen]
        t0 = time.perf_counter()
        step, fwd = generator_step_flops(gen, gen_cfg, condition_of(cfg, gen, classes), batch)
        per_image[gen] = fwd
        total = step * int(gen_cfg["steps"])
        ms = gen_cfg.get("model_selection")
        if ms:  # validation FID: generate and embed n_images per evaluation
            evals = math.ceil(int(gen_cfg["steps"]) / int(ms["every"]))
            total += evals * int(ms["n_images"]) * (fwd + inception_flops_per_image())
        print(f"counted {gen}: {step / 1e12:.3g} TFLOP per step ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
              flush=True)
        rows.append({"rule": "train_generator", "job": gen, "jobs": 1, "flops": total,
                     "note": f"{step / 1e12:.3g} TFLOP/step x {gen_cfg['steps']} steps (counted in "
                             f"{time.perf_counter() - t0:.0f} s)"})
        n_images = n_real * (2 if not attribute_conditioned(cfg, gen) else 1)  # normal + truncated
        rows.append({"rule": "sample", "job": gen, "jobs": 1, "flops": n_images * fwd, "note": f"{n_images} images"})
    inception = inception_flops_per_image()
    rows.append({"rule": "real_features + evaluate_generator", "job": "Inception", "jobs": 1 + len(gens),
                 "flops": inception * (PCAM[cfg["evaluation"].get("reference_split", "train")] + n_real * len(gens)),
                 "note": f"{inception / 1e9:.1f} GFLOP/image at {INCEPTION_SIZE} px"})
    ds = cfg["downstream"]
    seeds, epochs, size = len(ds["seeds"]), int(ds["epochs"]), int(ds.get("image_size") or 96)
    sizes = {}
    for arch, trainset in downstream_runs(cfg):
        if arch not in sizes:
            sizes[arch] = classifier_flops_per_image(arch, size, classes, cfg)
        ts = parse_trainset(trainset)
        n_train = (n_real if ts.with_real else 0) + (n_real if ts.generator else 0)
        total = seeds * epochs * (3 * n_train + n_valid) * sizes[arch] + seeds * n_test * sizes[arch]
        rows.append({"rule": "train_classifier", "job": f"{arch} / {trainset}", "jobs": seeds, "flops": total,
                     "note": f"{sizes[arch] / 1e9:.2f} GFLOP/image, {n_train} images x {epochs} epochs"})
    assumptions = {"peak_tflops": None, "utilisation": None, "n_real": n_real, "pcam": PCAM,
                   "epochs": "the full budget (early stopping only lowers it)", "batch_counted": batch}
    return rows, assumptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--peak-tflops", type=float, default=312.0, help="GPU peak in TFLOP/s (A100 bf16 dense: 312)")
    ap.add_argument("--utilisation", type=float, default=0.3, help="share of the peak a job reaches")
    ap.add_argument("--batch", type=int, default=2, help="batch of the counted generator step (scaled up)")
    ap.add_argument("--out", help="also write the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = validate_config(load_config(*[REPO / c for c in args.configfile]))
    rows, assumptions = estimate(cfg, args.batch)
    rate = args.peak_tflops * 1e12 * args.utilisation
    assumptions.update(peak_tflops=args.peak_tflops, utilisation=args.utilisation)
    by_rule: dict[str, list] = {}
    for r in rows:
        r["gpu_hours"] = r["flops"] / rate / 3600
        by_rule.setdefault(r["rule"], []).append(r)
    print(f"ESTIMATED GPU-hours of {' + '.join(args.configfile)} (FLOP counts, not a measurement)")
    print(f"assumptions: {args.peak_tflops:g} TFLOP/s peak x {args.utilisation:g} utilisation; "
          f"{assumptions['n_real']} real training images; classifiers run their full epoch budget; "
          "selected sets keep every candidate")
    print(f"{'rule':38s} {'job':42s} {'jobs':>5s} {'PFLOP':>10s} {'GPU-h':>9s}  note")
    for rule, items in by_rule.items():
        for r in items:
            print(f"{rule:38s} {r['job'][:42]:42s} {r['jobs']:5d} {r['flops'] / 1e15:10.1f} {r['gpu_hours']:9.2f}  "
                  f"{r['note']}")
    print("per rule:")
    for rule, items in by_rule.items():
        print(f"  {rule:38s} {sum(r['jobs'] for r in items):5d} jobs {sum(r['gpu_hours'] for r in items):10.1f} GPU-h")
    total = sum(r["gpu_hours"] for r in rows)
    print(f"TOTAL (estimate): {total:.0f} GPU-hours")
    if args.out:
        Path(args.out).write_text(json.dumps({"assumptions": assumptions, "rows": rows, "total_gpu_hours": total},
                                             indent=1, default=str))


if __name__ == "__main__":
    main()
