"""Data-parallel generator training over several processes (one per GPU), launched with ``torchrun``.

A generator entry with ``gpus: N`` (N > 1) trains in N processes. The rule script starts them with
``torchrun --standalone --nproc_per_node N`` (:func:`launch`); each process (a *rank*) runs the same
loop on its slice of every batch:

* **Batches.** ``batch_size`` stays the *global* batch. Every rank draws the same global batch
  indices (same seed, same sampler state) and keeps rows ``[rank·b, (rank+1)·b)``, b = batch_size / N.
* **Random draws per sample** (latents, DiffAug parameters, gradient-penalty mixing, VAE noise) are
  drawn for the global batch on every rank and sliced the same way (:func:`per_sample`), so every
  rank's RNG stays in step and N processes compute what one process computes on the whole batch.
* **Gradients** are averaged over the ranks after every backward pass and before the optimiser
  (or loss-scaler) step (:func:`average_gradients`): one flat all-reduce per update. This is what
  ``torch.nn.parallel.DistributedDataParallel`` does; the GAN steps do it by hand because they
  freeze the discriminator during the generator update and take double-backward gradient
  penalties, two things the DDP wrapper's reducer does not follow (it expects every wrapped
  parameter to receive a gradient in every backward pass).
* **BatchNorm** layers become synchronised BatchNorm (:func:`convert_sync_batchnorm`): batch
  statistics over the global batch. On CUDA this is ``torch.nn.SyncBatchNorm``; on other devices
  (CPU processes with the gloo backend, used by the tests) :class:`CrossProcessBatchNorm`, which
  all-reduces the per-channel sums with a differentiable all-reduce.
* **Buffers** (running statistics, adaptive loss weights) are broadcast from rank 0 after every
  step, as DDP's ``broadcast_buffers`` does.
* **Files.** Only rank 0 logs progress, scores model selection, and writes the training state,
  the history and the final checkpoint; every rank resumes from the same state file. A state saved
  by a run with another number of processes resumes as well (the state holds the global batch
  order and rank 0's RNG, which every rank shares).

Limits: losses that compare samples within a batch (AttributeGAN's conditional contrastive loss)
see each rank's slice only, as in most data-parallel contrastive training without a gather.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .utils import PipelineError

GPUS_KEY = "gpus"
WORKER_MODULE = "histaug.generator_job"


# --------------------------------------------------------------------------- the process group


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group: ``rank`` of ``world`` processes (``world == 1``: no group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This rank's rows of a global batch of ``global_batch`` samples."""
        if global_batch % self.world:
            raise PipelineError(f"a global batch of {global_batch} cannot be split evenly over {self.world} processes; "
                                f"make generators.<gen>.batch_size a multiple of generators.<gen>.{GPUS_KEY}")
        b = global_batch // self.world
        return slice(self.rank * b, (self.rank + 1) * b)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


SINGLE = Distributed()
_CURRENT: Distributed = SINGLE


def current() -> Distributed:
    """The group of this process (single-process unless :func:`init_from_env` or :func:`use` set one)."""
    return _CURRENT


@contextlib.contextmanager
def use(dist: Distributed):
    """Make ``dist`` the current group for the block (per-sample draws are sliced by it)."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, dist
    try:
        yield dist
    finally:
        _CURRENT = previous


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device_preference: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group ``torchrun`` describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)
    and pick this rank's device: ``cuda:LOCAL_RANK`` when CUDA is visible and the config allows it,
    else the CPU. Returns the group and the device; the group is also made :func:`current`."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_preference in ("auto", "cuda", None)
    if use_cuda and torch.cuda.device_count() <= local_rank:
        raise PipelineError(f"process {rank} of {world} needs GPU {local_rank}, but only {torch.cuda.device_count()} "
                            f"are visible; request as many GPUs as generators.<gen>.{GPUS_KEY}")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist = Distributed(rank, world, local_rank)
    if dist.active and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend_for(device))
    _CURRENT = dist
    return dist, device


def shutdown() -> None:
    global _CURRENT
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _CURRENT = SINGLE


# --------------------------------------------------------------------------- per-sample random draws


def per_sample(draw, shape: Sequence[int]) -> torch.Tensor:
    """``draw(shape)`` for this rank's samples: with a group, the draw is made for the global batch
    (``shape[0]`` · world rows) and this rank's rows are returned, so every rank consumes the same
    random numbers and the union of the slices equals one process's draw."""
    dist = current()
    shape = tuple(int(s) for s in shape)
    if not dist.active:
        return draw(shape)
    full = draw((shape[0] * dist.world, *shape[1:]))
    return full[dist.rows(full.shape[0])]


# --------------------------------------------------------------------------- gradients and buffers


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the ranks (no-op in one process). A parameter without
    a gradient takes part as zeros, so every rank reduces the same flat vector."""
    dist = current()
    if not dist.active:
        return
    params = [p for p in params if p.requires_grad or p.grad is not None]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= dist.world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n


def average_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss terms averaged over the ranks (for the log and the history; one all-reduce), so the
    logged values describe the global batch. Unchanged in one process."""
    if not current().active or not terms:
        return terms
    keys = list(terms)
    device = next((v.device for v in terms.values() if torch.is_tensor(v)), torch.device("cpu"))
    stacked = torch.stack([torch.as_tensor(terms[k], dtype=torch.float32, device=device).detach().reshape(())
                           for k in keys])
    torch.distributed.all_reduce(stacked)
    stacked /= current().world
    return dict(zip(keys, stacked.unbind()))


def broadcast_from_main(modules: Iterable[nn.Module], parameters: bool = False) -> None:
    """Copy rank 0's buffers (and with ``parameters`` its weights) to every rank."""
    if not current().active:
        return
    with torch.no_grad():
        for module in modules:
            tensors = list(module.buffers()) + (list(module.parameters()) if parameters else [])
            for t in tensors:
                torch.distributed.broadcast(t.data, src=0)


# --------------------------------------------------------------------------- synchronised BatchNorm


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch (every rank's samples).

    The per-channel count, sum and sum of squares are summed over the ranks with a differentiable
    all-reduce, so the gradient also flows through the global mean and variance, as with
    ``torch.nn.SyncBatchNorm``; it runs on any device and backend (SyncBatchNorm needs a GPU).
    Outside training, or in one process, it is plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = current()
        if not (self.training and dist.active):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([count, xf.sum(dims), (xf * xf).sum(dims)])
        stats = all_reduce(stats)
        n = stats[0]
        mean = stats[1:1 + x.shape[1]] / n
        var = stats[1 + x.shape[1]:] / n - mean * mean  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``module`` synchronised over the ranks (see the module docstring).
    Weights, buffers and settings are kept; in one process the module is returned unchanged."""
    if not current().active:
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_cross_process(module)


def _to_cross_process(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossProcessBatchNorm):
        bn = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        bn.load_state_dict(module.state_dict())  # the caller moves the network to its device afterwards
        return bn.train(module.training)
    for name, child in module.named_children():
        new = _to_cross_process(child)
        if new is not child:
            setattr(module, name, new)
    return module


# --------------------------------------------------------------------------- launching


def requested_processes(gen_cfg: dict, gen_name: str) -> int:
    """``generators.<gen>.gpus`` (default 1): the number of training processes."""
    n = gen_cfg.get(GPUS_KEY, 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise PipelineError(f"config key generators.{gen_name}.{GPUS_KEY}={n!r}: expected an integer >= 1")
    batch = int(gen_cfg.get("batch_size", 0))
    if n > 1 and batch % n:
        raise PipelineError(f"config key generators.{gen_name}.batch_size={batch} is not a multiple of "
                            f"generators.{gen_name}.{GPUS_KEY}={n}: every process takes an equal slice of the batch")
    return n


def torchrun_command(nproc: int, job_file: str | Path) -> list[str]:
    """The ``torchrun`` command line that runs :mod:`histaug.generator_job` on ``job_file`` in ``nproc``
    processes on this node (``--standalone``: a free rendezvous port is picked)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", WORKER_MODULE, str(job_file)]


def launch(job: dict, nproc: int, job_dir: str | Path, log, threads: int = 1) -> None:
    """Run the generator job ``job`` (plain ``input``/``output``/``params``/``wildcards``/``log``
    dicts) in ``nproc`` processes with torchrun and wait; the workers' output goes to ``log``'s file.
    Each process gets ``threads // nproc`` (at least 1) CPU threads. A failed worker fails the job."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    job_file = job_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=1, default=str))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc)),
           "HISTAUG_THREADS": str(max(1, threads // nproc))}
    root = str(Path(__file__).resolve().parent.parent)  # the workers import histaug and models from here
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = torchrun_command(nproc, job_file)
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    log_path = job.get("log", [None])[0] if job.get("log") else None
    with open(log_path, "a") if log_path else contextlib.nullcontext(None) as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    if result.returncode != 0:
        raise PipelineError(f"distributed training of generator {job['wildcards'].get('gen')!r} failed in one of its "
                            f"{nproc} processes (exit {result.returncode}); the workers' messages are in "
                            f"{log_path or 'the console output'}. Job description: {job_file}")
    job_file.unlink(missing_ok=True)
