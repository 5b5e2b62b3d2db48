"""Sampling and selective augmentation.

Truncation (HViTGAN §2.3, after Marchesi 2017): latents z ~ N(0, I) truncated to [-τ, τ] per
coordinate, drawn exactly by inverse-CDF sampling (no rejection loop). τ < 0 turns it off.

Selective augmentation: a generated image is kept only when a classifier's confidence for the
class it was generated for is >= λ (paper: τ = 0.7, λ = 0.6). The selector is pluggable: any
callable mapping uint8 (N,H,W,3) images to (N,K) class probabilities.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .utils import PipelineError, progress

Selector = Callable[[np.ndarray], np.ndarray]


def truncated_normal(n: int, dim: int, tau: float, generator: torch.Generator) -> torch.Tensor:
    """(n, dim) standard-normal samples truncated to [-tau, tau]; plain normal when tau < 0."""
    if tau is None or tau < 0:
        return torch.randn(n, dim, generator=generator)
    if tau == 0:
        return torch.zeros(n, dim)
    lo = 0.5 * (1 + math.erf(-tau / math.sqrt(2)))
    hi = 1 - lo
    u = lo + (hi - lo) * torch.rand(n, dim, generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(u).clamp_(-tau, tau)  # clamp guards the last ulp
    return z.float()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> uint8 (B,H,W,3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(generator_net, n_per_class: dict[int, int], tau: float, seed: int, batch_size: int = 256,
             device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Generate images per class with truncated latents; deterministic for a seed."""
    labels = np.concatenate([np.full(int(n), int(c), np.int64) for c, n in sorted(n_per_class.items())]) \
        if n_per_class else np.zeros(0, np.int64)
    return generate_for(generator_net, labels, tau, seed, batch_size, device), labels


@torch.no_grad()
def generate_for(generator_net, labels: np.ndarray, tau: float, seed: int, batch_size: int = 256,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """One image per row of ``labels`` ((N,) classes or (N, A) attribute levels), latents truncated at
    ``tau`` (plain normal when tau < 0) from a generator seeded with ``seed``; uint8 (N, H, W, 3)."""
    gen = torch.Generator().manual_seed(int(seed))
    labels = np.asarray(labels, dtype=np.int64)
    out = []
    generator_net.eval().to(device)
    for s in progress(range(0, len(labels), batch_size), desc="generate", unit="batch"):
        y = torch.as_tensor(labels[s:s + batch_size])
        z = truncated_normal(len(y), generator_net.latent_dim, tau, gen)
        images = generator_net(z.to(device), y.to(device))
        if not bool(torch.isfinite(images).all()):  # NaN would become black pixels in the uint8 conversion
            raise PipelineError(f"the generator produced non-finite pixel values (batch at image {s}, tau={tau}); "
                                "it diverged during training: retrain it with a lower learning rate or fp32")
        out.append(to_uint8(images))
    size = getattr(generator_net, "image_size", None)
    return np.concatenate(out) if out else np.zeros((0, size or 0, size or 0, 3), np.uint8)


def draw_combinations(rows: np.ndarray, n: int, weights: str, seed: int) -> np.ndarray:
    """``n`` requested attribute combinations drawn from the distinct rows of ``rows`` (the kept training
    combinations): ``frequency`` = as often as in training (rows drawn with replacement), ``uniform`` =
    every distinct combination equally often. Seeded; (n, A) int64."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or len(rows) == 0:
        raise PipelineError("no attribute combinations to sample from (did the rare-combination filter keep any?)")
    rng = np.random.default_rng(int(seed))
    if weights == "frequency":
        return rows[rng.integers(0, len(rows), int(n))]
    if weights == "uniform":
        distinct = np.unique(rows, axis=0)
        return distinct[rng.integers(0, len(distinct), int(n))]
    raise PipelineError(f"config attributes.sampling.weights={weights!r}: expected frequency or uniform")


def select(probabilities: np.ndarray, labels: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Mask of images whose confidence for their intended class is >= lam, and that confidence."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability rows for {labels.shape[0]} labels")
    if not 0 <= lam <= 1:
        raise PipelineError(f"config selection.lambda={lam}: must be in [0, 1]")
    conf = probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    return conf >= lam, conf


def n_per_class_from_config(setting, subset_labels: np.ndarray, num_classes: int) -> dict[int, int]:
    """`match` = as many per class as the real training subset has; an int = that many per class."""
    if setting == "match":
        counts = np.bincount(np.asarray(subset_labels, np.int64), minlength=num_classes)
        return {c: int(counts[c]) for c in range(num_classes)}
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise PipelineError(f"config sampling.n_per_class={setting!r}: expected 'match' or a positive integer") from None
    if n <= 0:
        raise PipelineError(f"config sampling.n_per_class={n}: must be positive")
    return {c: n for c in range(num_classes)}
