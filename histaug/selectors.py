"""Selectors for selective augmentation: callables from uint8 (N,H,W,3) images to (N,K) probabilities.

`baseline`: the downstream classifier trained on real data only (its softmax). A generator with
its own classification head (HViTGAN) registers another selector here.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .utils import PipelineError, get_device

SELECTORS: dict[str, Callable] = {}


def register_selector(name: str):
    def deco(fn):
        SELECTORS[name] = fn
        return fn
    return deco


@register_selector("baseline")
def baseline_selector(path, compute: dict):
    from .classify import load_classifier, predict_proba

    device = get_device(compute.get("device", "auto"))
    model, meta = load_classifier(path, device=device)

    def proba(images: np.ndarray) -> np.ndarray:
        return predict_proba(model, meta, images, compute=compute)

    return proba


def load_selector(kind: str, path, compute: dict):
    if kind not in SELECTORS:
        raise PipelineError(f"config selection.selector={kind!r}: unknown; choose one of {sorted(SELECTORS)}")
    return SELECTORS[kind](path, compute)
