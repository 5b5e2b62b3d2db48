"""Downstream classifiers: ResNet34, ResNet50-CBAM and DenseNet169 (timm), and the class heads of ViT
GAN discriminators (``<generator>_head``, HViTGAN Table 1 "Cls Head"): construction, local weights,
the input pipeline, inference and loading.

Training lives in :mod:`histaug.classifier_training`. `predict_proba` and `penultimate_features`
read images the way training did (same size, same normalisation), using the metadata stored
beside the weights in `model.pt`. A `model.pt` whose weights are not finite is refused.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .speed import to_device
from .guard import nonfinite_tensors
from .utils import PipelineError, autocast, get_device

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_classifier",
    "to_model_input",
    "load_classifier",
    "predict_proba",
    "penultimate_features",
]

ARCHS = ("resnet34", "resnet50_cbam", "densenet169")

# pipeline name -> (timm model name, extra timm kwargs)
_TIMM_SPECS: dict[str, tuple[str, dict]] = {
    "resnet18": ("resnet18", {}),  # the attribute-error evaluator (AttributeGAN §3)
    "resnet34": ("resnet34", {}),
    # CBAM (channel + spatial attention) in every bottleneck, before the residual add.
    "resnet50_cbam": ("resnet50", {"block_args": {"attn_layer": "cbam"}}),
    "densenet169": ("densenet169", {}),
}

# Inputs are normalised with the ImageNet statistics so that locally supplied ImageNet weights
# see the distribution they were trained on; the values are stored in every model.pt.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A discriminator sees images scaled to [-1, 1], as in GAN training: (x - 0.5) / 0.5.
GAN_MEAN = (0.5, 0.5, 0.5)
GAN_STD = (0.5, 0.5, 0.5)



# --------------------------------------------------------------------------- model construction


def _timm_spec(arch: str) -> tuple[str, dict]:
    if arch not in _TIMM_SPECS:
        raise PipelineError(
            f"unknown classifier architecture {arch!r} (config downstream.archs); valid names: {', '.join(ARCHS)}"
        )
    name, kwargs = _TIMM_SPECS[arch]
    return name, copy.deepcopy(kwargs)


def build_classifier(arch: str, num_classes: int = 2, pretrained_path: str | Path | None = None) -> nn.Module:
    """Create a timm classifier by pipeline name; never downloads anything.

    `pretrained_path` is a local state dict (torch file or .safetensors). Every backbone tensor
    must be present with the right shape; the classification head is taken from the file only
    when its shape matches `num_classes`, otherwise it keeps its fresh initialisation.
    """
    name, kwargs = _timm_spec(arch)
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=int(num_classes), **kwargs)
    if pretrained_path:
        _load_pretrained(model, arch, Path(pretrained_path))
    return model


class AttributePredictor(nn.Module):
    """A timm backbone with one classification head per attribute (AttributeGAN's attribute-error
    evaluator: ImageNet ResNet18 fine-tuned to predict every attribute's level).

    ``forward(x)`` returns the heads' logits concatenated, (B, L_1 + ... + L_A); :meth:`split`
    cuts them into one (B, L_a) block per attribute.
    """

    def __init__(self, arch: str, levels, pretrained_path: str | Path | None = None):
        super().__init__()
        self.levels = tuple(int(n) for n in levels)
        self.backbone = build_classifier(arch, 0, pretrained_path)
        self.heads = nn.ModuleList(nn.Linear(self.backbone.num_features, n) for n in self.levels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.backbone.forward_head(features, pre_logits=True)
        return pooled if pre_logits else torch.cat([head(pooled) for head in self.heads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, self.levels, dim=1))


class ClassHeadClassifier(nn.Module):
    """A GAN discriminator used as a classifier: ``forward(x)`` returns its class head's logits.

    HViTGAN's discriminator ends in a class token read by a classification head (§2.1); Table 1
    reports that head as a classifier ("HViTGAN Cls Head", "MedViTGAN Cls Head"). Inputs are
    images in [-1, 1] at the generator's resolution, as during GAN training; the source (critic)
    head is kept but unused.
    """

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.discriminator(x)["class_logits"]
        if logits is None:
            raise PipelineError("this discriminator has no classification head")
        return logits


class NoClassHead(PipelineError):
    """The generator checkpoint's family has no discriminator class head."""


def head_source(checkpoint_path: str | Path, digest: bool = True) -> dict:
    """What a class-head classifier (``<generator>_head``, or the ``head`` selector) starts from: the
    GAN checkpoint's discriminator.

    Returns {"generator", "family", "config", "num_classes", "image_size", "state", "digest"};
    ``digest`` (SHA-1 of the file, for resume checks) is None unless asked for. A family without a
    class head raises :class:`NoClassHead`.
    """
    from models import families_with_class_head

    from .generator_checkpoint import read_checkpoint
    from .utils import file_digest

    path = Path(checkpoint_path)
    ckpt = read_checkpoint(path)
    if ckpt.get("family") not in families_with_class_head() or "discriminator_state" not in ckpt:
        raise NoClassHead(f"{path}: generator family {ckpt.get('family')!r} has no discriminator class head "
                            f"(config downstream.head_classifiers needs one of {families_with_class_head()})")
    return {"generator": ckpt.get("name"), "family": ckpt["family"], "config": dict(ckpt["config"]),
            "num_classes": int(ckpt["num_classes"]), "image_size": int(ckpt["image_size"]),
            "state": ckpt["discriminator_state"], "digest": file_digest(path) if digest else None}


def build_head_classifier(head: dict) -> ClassHeadClassifier:
    """The discriminator of ``head`` (see :func:`head_source`; ``state`` optional) as a classifier."""
    from models import build_generator

    parts = build_generator(head["config"], int(head["num_classes"]), name=str(head.get("generator")))
    if head.get("state") is not None:
        parts.discriminator.load_state_dict(head["state"])
    return ClassHeadClassifier(parts.discriminator)


def _read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a torch checkpoint or a safetensors file, unwrapping common containers."""
    key = f"downstream.pretrained.{arch}"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or unsafe pickle
        raise PipelineError(f"config {key}: cannot read weights file '{path}' as a state dict ({exc})") from exc
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise PipelineError(f"config {key}: '{path}' does not hold a state dict (a mapping of parameter names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _load_pretrained(model: nn.Module, arch: str, path: Path) -> None:
    key = f"downstream.pretrained.{arch}"
    name, _ = _TIMM_SPECS[arch]
    if not path.is_file():
        raise PipelineError(
            f"config {key}: weights file '{path}' not found. The pipeline cannot download pretrained weights "
            f"(it runs offline); save a state dict of timm model '{name}'"
            + (" built with block_args={'attn_layer': 'cbam'}" if arch == "resnet50_cbam" else "")
            + f" at that path (torch.save(model.state_dict(), path) or a .safetensors file), "
            f"or remove {key} to train from random initialisation."
        )
    state = _read_state_dict(path, arch)
    own = model.state_dict()
    head = model.pretrained_cfg.get("classifier") or "fc"

    def is_head(k: str) -> bool:
        return k == head or k.startswith(head + ".")

    optional = ("num_batches_tracked",)
    missing = [k for k in own if not is_head(k) and k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if not is_head(k) and k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if not is_head(k) and k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise PipelineError(
            f"config {key}: '{path}' does not match the {arch} backbone (timm '{name}'): " + "; ".join(parts)
        )
    to_load = {k: v for k, v in state.items() if not is_head(k)}
    head_keys = [k for k in own if is_head(k)]
    if head_keys and all(k in state and state[k].shape == own[k].shape for k in head_keys):
        to_load.update({k: state[k] for k in head_keys})
    model.load_state_dict(to_load, strict=False)


# --------------------------------------------------------------------------- tensors and steps


def _check_images(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise PipelineError(f"{what}: images must be uint8 (N, H, W, 3), got {x.dtype} {x.shape}")
    if x.shape[1] != x.shape[2]:
        raise PipelineError(f"{what}: images must be square, got {x.shape[1]}x{x.shape[2]}")
    if y is None:
        return x, None
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise PipelineError(f"{what}: {len(x)} images but {len(y)} labels")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise PipelineError(f"{what}: labels must be non-negative integers")
    return x, y.astype(np.int64)


def _dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 flips/90-degree rotations, drawn independently per image."""
    codes = torch.randint(0, 8, (len(x),), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for code in range(8):
        idx = (codes == code).nonzero().flatten()
        if len(idx) == 0:
            continue
        part = x[idx]
        if code >= 4:
            part = part.flip(-1)
        if code % 4:
            part = torch.rot90(part, code % 4, dims=(-2, -1))
        out[idx] = part
    return out


def to_model_input(
    images: np.ndarray | torch.Tensor,
    image_size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    device="cpu",
    channels_last: bool = False,
    augment_generator: torch.Generator | None = None,
    pin_memory: bool = False,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, S, S) on `device`.

    Images whose size differs from `image_size` are resized bilinearly with antialiasing.
    With `augment_generator`, each image gets a random flip / 90-degree rotation. With
    `pin_memory` the uint8 batch goes to the GPU through page-locked memory, asynchronously.
    """
    x = to_device(torch.as_tensor(images), torch.device(device), pin_memory)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    if augment_generator is not None:
        x = _dihedral(x, augment_generator)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _precision(compute: dict | None, stage: str) -> str:
    prec = (compute or {}).get("precision", "fp32")
    if isinstance(prec, dict):
        prec = prec.get(stage, "fp32")
    return prec or "fp32"


@torch.no_grad()
def _batched(
    model: nn.Module,
    meta: dict,
    images: np.ndarray,
    batch_size: int,
    precision: str,
    channels_last: bool,
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """Run `head(model, x)` over `images` in eval mode, batch by batch; float32 numpy output."""
    images, _ = _check_images(images, None, "images")
    device = next(model.parameters()).device
    size = int(meta["image_size"])
    norm = meta["normalisation"]
    # An empty input still runs one blank image so the output has the right width.
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)] or [np.zeros((1, size, size, 3), np.uint8)]
    was_training = model.training
    model.eval()
    try:
        outputs = []
        for chunk in chunks:
            x = to_model_input(chunk, size, norm["mean"], norm["std"], device, channels_last)
            with autocast(device, precision):
                out = head(model, x)
            outputs.append(out.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs)[: len(images)].numpy()


def _softmax_head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(x).float(), dim=1)


def _features_head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _prepare_inference(model: nn.Module, compute: dict | None, precision: str | None) -> tuple[str, bool]:
    if compute is not None:
        model.to(get_device(compute))
    channels_last = bool((compute or {}).get("channels_last", False))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return precision or _precision(compute, "evaluation"), channels_last


def predict_proba(
    model: nn.Module,
    meta: dict,
    images_uint8_nhwc: np.ndarray,
    batch_size: int = 256,
    compute: dict | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Softmax class probabilities (N, K) for uint8 (N, H, W, 3) images.

    With `compute`, the model moves to compute['device'] and runs with
    compute['precision']['evaluation'] and compute['channels_last']; `precision` overrides.
    Without either, it runs in fp32 on the model's current device.
    """
    prec, cl = _prepare_inference(model, compute, precision)
    return _batched(model, meta, images_uint8_nhwc, batch_size, prec, cl, _softmax_head)


def penultimate_features(
    model: nn.Module,
    meta: dict,
    images: np.ndarray,
    batch_size: int = 256,
    compute: dict | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Globally pooled features before the classification layer, (N, D) float32.

    D is 512 for resnet34, 2048 for resnet50_cbam and 1664 for densenet169.
    """
    prec, cl = _prepare_inference(model, compute, precision)
    return _batched(model, meta, images, batch_size, prec, cl, _features_head)


# --------------------------------------------------------------------------- persistence


def load_classifier(path: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """Load a `model.pt` written by `train_classifier`; returns (model in eval mode, meta).

    `device` is a torch device or a name accepted by config compute.device ('auto', 'cpu', 'cuda:1').
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: classifier file not found (was the training rule run?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = dict(payload["meta"])
        state = payload["state_dict"]
    except Exception as exc:
        raise PipelineError(f"{path}: not a classifier file written by train_classifier ({exc})") from exc
    bad = nonfinite_tensors(state.items())
    if bad:
        raise PipelineError(f"{path}: {sum(c for _, c, _ in bad)} non-finite weight(s) (first in {bad[0][0]}): the "
                            "classifier diverged during training; retrain it (lower downstream.lr, or "
                            "compute.precision.downstream: fp32)")
    if meta.get("head"):
        model = build_head_classifier(meta["head"])
    elif meta.get("heads"):
        model = AttributePredictor(meta["arch"], meta["heads"])
    else:
        model = build_classifier(meta["arch"], int(meta["num_classes"]))
    model.load_state_dict(state, strict=True)
    model.to(get_device(device) if isinstance(device, str) else device)
    model.eval()
    return model, meta
