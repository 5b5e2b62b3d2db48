"""Speed switches of the config's ``compute`` section that do not change what is computed.

* ``compute.compile`` (``{generators: bool, downstream: bool}``, default off): run the networks'
  forward passes through ``torch.compile``. The module keeps its own weights and state-dict
  names; only the calls go through the compiled wrapper. Generators: the generator network (and
  the VAE) is compiled; a discriminator only when its loss takes no gradient penalty, because
  compiled graphs have no double backward. The first steps pay the compilation (tens of seconds
  per network); on a CPU it brought no gain for ResNet34 (benchmarks/bench_switches.py).
* ``compute.pin_memory`` (default ``auto``: on when the device is CUDA): classifier batches are
  cut from page-locked host memory and copied to the GPU asynchronously. Generators keep their
  whole training set on the device already (see :func:`histaug.train_generator.prepare_images`).
* Fused scaled-dot-product attention is a per-generator key (``fused_attention``, HViTGAN and
  MedViTGAN): on by default wherever no double backward runs through the attention.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .utils import PipelineError

STAGES = ("generators", "downstream")


def compile_enabled(compute: Mapping | None, stage: str) -> bool:
    """``compute.compile.<stage>`` (a bool for both stages is accepted too)."""
    setting = (compute or {}).get("compile", False)
    if isinstance(setting, Mapping):
        unknown = set(setting) - set(STAGES)
        if unknown:
            raise PipelineError(f"config key compute.compile: unknown stage(s) {sorted(unknown)}; expected {STAGES}")
        setting = setting.get(stage, False)
    if not isinstance(setting, bool):
        raise PipelineError(f"config key compute.compile.{stage}={setting!r}: expected true or false")
    return setting


def compiled(module: nn.Module, enabled: bool):
    """A callable running ``module`` (compiled when ``enabled``); ``module`` itself is unchanged."""
    return torch.compile(module) if enabled else module


def pin_memory_enabled(compute: Mapping | None, device: torch.device) -> bool:
    """``compute.pin_memory``: true, false or auto (= the device is CUDA). Pinning without CUDA is refused."""
    setting = (compute or {}).get("pin_memory", "auto")
    if setting == "auto":
        return device.type == "cuda"
    if not isinstance(setting, bool):
        raise PipelineError(f"config key compute.pin_memory={setting!r}: expected auto, true or false")
    if setting and device.type != "cuda":
        raise PipelineError(f"config key compute.pin_memory=true needs a CUDA device (the device is {device}); "
                            "use auto or false")
    return setting


def to_device(x: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """``x`` on ``device``; with ``pin`` through page-locked memory and a non-blocking copy."""
    if pin and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
