"""Selectors for selective augmentation: callables from uint8 (N,H,W,3) images to (N,K) probabilities.

`baseline`: the downstream classifier trained on real data only (its softmax).
`head`: the generator's own discriminator classification head (HViTGAN, MedViTGAN): "we use our
trained classification head of the same model to assist in selecting qualified augmentation
images" ([H] §2.3). Its path is the generator checkpoint.
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


@register_selector("head")
def head_selector(path, compute: dict, batch_size: int = 256):
    """softmax(class_logits) of the discriminator saved in generator checkpoint ``path``.

    Images (uint8, N×H×W×3) are prepared exactly as the training loop prepares real images:
    resized to the generator's ``image_size`` (area averaging when shrinking) and scaled to
    [-1, 1]. The discriminator runs in fp32 without augmentation; the labels it is called with
    are zeros (a class head does not depend on them). A family whose discriminator returns no
    class logits (e.g. ``cgan``'s projection discriminator) or that has no discriminator
    (``cvae``) is an error.
    """
    import torch

    from .train_generator import load_discriminator, prepare_images, to_model_range

    device = get_device(compute.get("device", "auto"))
    try:
        discriminator = load_discriminator(path, device=device)
    except PipelineError as exc:
        raise PipelineError(f"config selection.selector='head' needs a generator with a discriminator class head: {exc}") from None
    meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    family, image_size = meta["family"], int(meta["image_size"])
    with torch.inference_mode():
        probe = discriminator(torch.zeros(1, 3, image_size, image_size, device=device), torch.zeros(1, dtype=torch.long, device=device))
    if probe.get("class_logits") is None:
        raise PipelineError(
            f"config selection.selector='head': the discriminator of generator family {family!r} ({path}) has "
            "no classification head; use selector: baseline or a family with a class head (hvitgan, medvitgan)"
        )
    num_classes = probe["class_logits"].shape[1]

    def proba(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise PipelineError(f"selector 'head' expects uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        out = np.zeros((len(images), num_classes), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = to_model_range(prepare_images(images[start : start + batch_size], image_size, device))
                labels = torch.zeros(len(x), dtype=torch.long, device=device)
                logits = discriminator(x, labels)["class_logits"].float()
                out[start : start + len(x)] = torch.softmax(logits, dim=1).cpu().numpy()
        return out

    return proba


def load_selector(kind: str, path, compute: dict):
    if kind not in SELECTORS:
        raise PipelineError(f"config selection.selector={kind!r}: unknown; choose one of {sorted(SELECTORS)}")
    return SELECTORS[kind](path, compute)
