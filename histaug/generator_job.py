"""The ``train_generator`` rule's work, callable from the rule script and from ``torchrun`` workers.

:func:`run` does what the rule does in one process: read the training data of the generator's
condition, set up model selection when configured, and call :func:`histaug.train_generator.train_generator`.
:func:`dispatch` is what the rule script calls: with ``generators.<gen>.gpus`` > 1 it launches
``torchrun`` (:func:`histaug.distributed.launch`), whose processes run this module as a script on a
JSON description of the job (:func:`job_description`), each joining the process group first.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from . import distributed
from .utils import PipelineError


def training_data(job):
    """(images, labels, condition) of this generator's condition.

    Class-conditioned generators train on the training subset with the downstream labels;
    attribute-conditioned ones on the subset after rare-combination filtering, with the levels.
    """
    from models.conditioning import Condition

    from .combinations import condition_from_files
    from .io import read_images
    from .labels import load_labelled
    from .utils import read_json

    if job.params.condition in ("attributes", "attribute"):
        subset = pd.read_csv(job.input.attribute_subset)
        condition = condition_from_files(job.input.attributes_meta, job.input.combinations)
        x, _ = read_images(job.input.train, indices=subset["index"].to_numpy())
        if job.params.condition == "attribute":  # one attribute's levels as the class (per-attribute runs)
            a = condition.names.index(job.params.attribute)
            single = Condition("class", (condition.levels[a],), (job.params.attribute,))
            return x, subset[f"{job.params.attribute}_level"].to_numpy(), single
        return x, subset[[f"{n}_level" for n in condition.names]].to_numpy(), condition
    x, y = load_labelled(job.input.train, job.input.labels, "train", job.input.subset)
    return x, y, int(read_json(job.input.labels_meta)["num_classes"])


def run(job, log: logging.Logger, device=None) -> dict:
    """Train the generator of ``job`` (the rule's ``input``/``output``/``params``/``wildcards``)."""
    from .labels import load_labelled
    from .model_selection import inception_feature_fn
    from .train_generator import train_generator
    from .utils import get_device, read_json

    gen, gen_cfg, compute = job.wildcards.gen, dict(job.params.gen_cfg), dict(job.params.compute)
    x, y, condition = training_data(job)
    log.info("training generator %s (%s, %s condition) on %d real images", gen, gen_cfg["family"],
             job.params.condition, len(x))
    if device is not None:
        compute["device"] = str(device)
    selection = {}
    if gen_cfg.get("model_selection"):
        feature_fn = inception_feature_fn(read_json(job.input.inception), gen, get_device(compute),
                                          bool(compute.get("channels_last")), job.params.inception_precision)
        x_valid, _ = load_labelled(job.input.valid, job.input.labels, "valid")
        ms = gen_cfg["model_selection"]
        log.info("model selection every %d steps: FID of %d generated images against up to %d of the %d validation "
                 "images", ms["every"], ms["n_images"], ms["n_images"], len(x_valid))
        selection = dict(selection_images=x_valid, feature_fn=feature_fn)
    return train_generator(gen, gen_cfg, x, y, condition, job.output.checkpoint, job.params.state_dir, compute,
                           log=log, divergence=dict(job.params.divergence or {}), **selection)


def job_description(smk) -> dict:
    """The parts of a Snakemake job the training needs, as plain JSON-able dicts."""
    def named(x):
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in x.items()}

    return {"input": named(smk.input), "output": named(smk.output), "params": named(smk.params),
            "wildcards": dict(smk.wildcards.items()), "log": list(smk.log), "threads": int(smk.threads or 1)}


def as_job(description: dict) -> SimpleNamespace:
    """Attribute access (``job.input.train``) over a :func:`job_description`."""
    return SimpleNamespace(**{k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in description.items()})


def dispatch(smk, log: logging.Logger) -> None:
    """The rule script's entry: one process, or ``gpus`` processes through torchrun."""
    gen, gen_cfg = smk.wildcards.gen, smk.params.gen_cfg
    nproc = distributed.requested_processes(gen_cfg, gen)
    if nproc == 1:
        run(smk, log)
        return
    description = job_description(smk)
    distributed.launch(description, nproc, Path(smk.params.state_dir) / "launch", log, int(smk.threads or 1))
    if not Path(smk.output.checkpoint).exists():
        raise PipelineError(f"distributed training of generator {gen!r} ended without writing {smk.output.checkpoint}")
    log.info("generator %s: %d processes finished", gen, nproc)


def _worker_logger(dist: distributed.Distributed) -> logging.Logger:
    log = logging.getLogger(f"histaug.train_generator.rank{dist.rank}")
    log.setLevel(logging.INFO if dist.is_main else logging.WARNING)
    log.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [train_generator rank {dist.rank}/{dist.world}] "
                                           "%(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    return log


def worker_main(job_file: str) -> int:
    """One torchrun process: join the group, train, leave. Exit code 1 on a pipeline error."""
    import torch

    description = json.loads(Path(job_file).read_text())
    torch.set_num_threads(int(os.environ.get("HISTAUG_THREADS", "1")))
    dist, device = distributed.init_from_env(description["params"]["compute"].get("device", "auto"))
    log = _worker_logger(dist)
    try:
        run(as_job(description), log, device=device)
    except PipelineError as exc:
        log.error("%s", exc)
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
