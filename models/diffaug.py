"""Differentiable Augmentation (DiffAug, Zhao et al. 2020) for data-efficient GAN training.

The same random augmentation policy is applied to real and generated images right before the
discriminator, and gradients flow through it back to the generator. HViTGAN's policy
([H] §3.2) is "random color transforms, translation, cutout, scaling, and rotation", which is
:data:`PAPER_POLICY`.

Every op draws its own random parameters for each sample (per sample of the global batch when
training runs in several processes; see :func:`histaug.distributed.per_sample`). ``strength`` scales the magnitude
of every op; the full magnitudes below are at strength 1:

    color        brightness + U(−0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5)
                 (as in DiffAug: the factor f is applied as x + (f − 1)(x − mean))
    translation  shift by an integer in [−r·size, r·size] per axis, r = 0.125, zero padding
    cutout       zero one square of side r·size at a random centre, r = 0.5
    scaling      zoom in or out by a log-uniform factor in [1/(1 + r), 1 + r], r = 0.2;
                 bilinear grid_sample about the centre, zero padding
    rotation     a uniformly random multiple of 90°, drawn with probability min(1, strength).
                 Tissue patches have no preferred orientation, and a 90° turn needs no
                 interpolation.
    affine_rotation
                 a small rotation by U(−θ, θ), θ = 15°; bilinear grid_sample, zero padding.
                 This is not in the paper's policy and is available for experiments.

At strength 0 every op returns its input exactly. The additive ops add an exact zero, the
shifts and boxes are empty, and the grid_sample ops pass through any sample whose drawn
transform is the identity (an identity grid_sample is not bit-exact at every size).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from histaug.distributed import per_sample
from histaug.utils import PipelineError

PAPER_POLICY: list[str] = ["color", "translation", "cutout", "scaling", "rotation"]


def _uniform(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) samples drawn on the generator's device, moved to x's device and dtype."""
    device = generator.device if generator is not None else x.device
    u = per_sample(lambda s: torch.rand(s, generator=generator, device=device), shape)
    return u.to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers in [low, high) drawn on the generator's device, moved to x's device."""
    device = generator.device if generator is not None else x.device
    return per_sample(lambda s: torch.randint(low, high, s, generator=generator, device=device), shape).to(x.device)


# --------------------------------------------------------------------------- colour


def brightness(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add U(−0.5, 0.5)·strength to every pixel of a sample."""
    return x + (_uniform((x.shape[0], 1, 1, 1), x, generator) - 0.5) * strength


def saturation(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's distance to its channel mean by U(0, 2) (interpolated to 1 by strength)."""
    mean = x.mean(dim=1, keepdim=True)
    delta = (_uniform((x.shape[0], 1, 1, 1), x, generator) * 2.0 - 1.0) * strength
    return x + delta * (x - mean)


def contrast(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each sample's distance to its image mean by U(0.5, 1.5) (interpolated to 1 by strength)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    delta = (_uniform((x.shape[0], 1, 1, 1), x, generator) - 0.5) * strength
    return x + delta * (x - mean)


def color(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAug's colour op: brightness, then saturation, then contrast."""
    x = brightness(x, strength, generator)
    x = saturation(x, strength, generator)
    return contrast(x, strength, generator)


# --------------------------------------------------------------------------- geometry


def translation(
    x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None, ratio: float = 0.125
) -> torch.Tensor:
    """Shift each sample by whole pixels, up to ratio·strength·size per axis; vacated pixels are 0."""
    b, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio * strength + 0.5), int(w * ratio * strength + 0.5)
    dy = _randint(-max_dy, max_dy + 1, (b, 1, 1), x, generator)
    dx = _randint(-max_dx, max_dx + 1, (b, 1, 1), x, generator)
    src_rows = torch.arange(h, device=x.device).view(1, h, 1) - dy
    src_cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = (src_rows >= 0) & (src_rows < h) & (src_cols >= 0) & (src_cols < w)
    index = (src_rows.clamp(0, h - 1) * w + src_cols.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    shifted = x.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)
    return shifted.masked_fill(~inside.unsqueeze(1), 0.0)


def cutout(
    x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None, ratio: float = 0.5
) -> torch.Tensor:
    """Zero a square of side ratio·strength·size centred at a random pixel (clipped at the border)."""
    b, c, h, w = x.shape
    size_y, size_x = int(h * ratio * strength + 0.5), int(w * ratio * strength + 0.5)
    top = _randint(0, h, (b, 1, 1), x, generator) - size_y // 2
    left = _randint(0, w, (b, 1, 1), x, generator) - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    box = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x.masked_fill(box.unsqueeze(1), 0.0)


def _warp(x: torch.Tensor, theta: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Bilinear affine warp (output -> input coordinates, zero padding); identity samples pass through."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(identity.view(-1, 1, 1, 1), x, warped)


def scaling(
    x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None, ratio: float = 0.2
) -> torch.Tensor:
    """Zoom about the centre by a log-uniform factor in [1/(1 + ratio·strength), 1 + ratio·strength]."""
    b = x.shape[0]
    log_max = math.log1p(ratio * strength)
    scale = torch.exp((_uniform((b,), x, generator) * 2.0 - 1.0) * log_max)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    return _warp(x, theta, scale == 1.0)


def rotation(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability min(1, strength), rotate a sample by a uniformly random multiple of 90°."""
    b, _, h, w = x.shape
    if h != w:
        raise PipelineError(f"DiffAug 'rotation' needs square images, got {h}×{w}")
    quarter_turns = _randint(0, 4, (b,), x, generator)
    rotate = _uniform((b,), x, generator) < min(1.0, strength)
    quarter_turns = torch.where(rotate, quarter_turns, torch.zeros_like(quarter_turns))
    out = x
    for k in (1, 2, 3):
        out = torch.where((quarter_turns == k).view(b, 1, 1, 1), torch.rot90(x, k, dims=(2, 3)), out)
    return out


def affine_rotation(
    x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None, max_degrees: float = 15.0
) -> torch.Tensor:
    """Rotate about the centre by U(−θ, θ)·strength degrees (bilinear, zero padding)."""
    b = x.shape[0]
    angle = (_uniform((b,), x, generator) * 2.0 - 1.0) * math.radians(max_degrees) * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    return _warp(x, theta, angle == 0.0)


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
    "scaling": scaling,
    "rotation": rotation,
    "affine_rotation": affine_rotation,
}


def parse_policy(policy: str | Sequence[str] | None) -> list[str]:
    """A policy as a list of op names; accepts a list or TransGAN's comma-separated string."""
    if policy is None:
        return []
    names = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else [str(p).strip() for p in policy]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise PipelineError(f"unknown DiffAug op(s) {unknown}; choose from {sorted(OPS)}")
    return names


class DiffAugment(nn.Module):
    """Apply a DiffAug policy, op by op, to a batch of images (B, C, H, W).

    ``policy`` is a list of op names (see :data:`OPS`) or a comma-separated string.
    ``strength`` scales every magnitude: 0 is the identity, 1 the full DiffAug setting. It may
    be changed between steps. ``forward(x, generator=None)`` takes an optional
    ``torch.Generator`` for reproducible draws.
    """

    def __init__(self, policy: str | Sequence[str] | None = PAPER_POLICY, strength: float = 1.0):
        super().__init__()
        self.policy = parse_policy(policy)
        if not (isinstance(strength, (int, float)) and strength >= 0 and math.isfinite(strength)):
            raise PipelineError(f"DiffAug strength must be a finite number >= 0, got {strength!r}")
        self.strength = float(strength)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise PipelineError(f"DiffAug expects images of shape (B, C, H, W), got {tuple(x.shape)}")
        for name in self.policy:
            x = OPS[name](x, self.strength, generator)
        return x

    def extra_repr(self) -> str:
        return f"policy={self.policy}, strength={self.strength}"


def diff_augment(
    x: torch.Tensor,
    policy: str | Sequence[str] | None = PAPER_POLICY,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Functional form of :class:`DiffAugment`."""
    return DiffAugment(policy, strength)(x, generator)
