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

    device = get_device(compute)
    model, meta = load_classifier(path, device=device)

    def proba(images: np.ndarray) -> np.ndarray:
        return predict_proba(model, meta, images, compute=compute)

    return proba


@register_selector("head")
def head_selector(path, compute: dict, batch_size: int = 256):
    """softmax(class_logits) of the discriminator saved in generator checkpoint ``path``.

    Images (uint8, N×H×W×3) are prepared exactly as the training loop prepares real images:
    resized to the generator's ``image_size`` (area averaging when shrinking) and scaled to
    [-1, 1]. The discriminator runs in fp32 without augmentation. It is the same network as the
    ``<generator>_head`` classifier starts from (:func:`histaug.classify.head_source`); a family
    without a class head (``cgan``'s projection discriminator, ``cvae``) is an error.
    """
    import torch

    from .classify import NoClassHead, build_head_classifier, head_source
    from .train_generator import prepare_images, to_model_range

    device = get_device(compute)
    try:
        head = head_source(path, digest=False)
    except NoClassHead as exc:
        raise PipelineError(
            f"config selection.selector='head': {path} has no classification head ({exc}); use selector: auto or "
            "baseline, or a family with a class head (hvitgan, medvitgan)"
        ) from None
    model = build_head_classifier(head).to(device).eval()
    image_size, num_classes = head["image_size"], head["num_classes"]

    def proba(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise PipelineError(f"selector 'head' expects uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        out = np.zeros((len(images), num_classes), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = to_model_range(prepare_images(images[start : start + batch_size], image_size, device))
                out[start : start + len(x)] = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        return out

    return proba


def load_selector(kind: str, path, compute: dict):
    if kind not in SELECTORS:
        raise PipelineError(f"config selection.selector={kind!r}: unknown; choose one of {sorted(SELECTORS)}")
    return SELECTORS[kind](path, compute)
