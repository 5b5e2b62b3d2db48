"""ViT building blocks of HViTGAN and MedViTGAN ([H] §2.1–2.2): token/map reshapes, windows,
the conditional layer norm of the class projection layer, self-attention (global or per window)
and the pre-norm transformer encoder. :mod:`models.hvitgan` assembles them into G and D.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from histaug.utils import PipelineError


def init_vit_weights(module: nn.Module) -> None:
    """TransGAN initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LN."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H·W, C) tokens -> (B, C, H, W) feature map."""
    b, n, c = x.shape
    h, w = size
    return x.transpose(1, 2).reshape(b, c, h, w)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) feature map -> (B, H·W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


def window_partition(x: torch.Tensor, size: tuple[int, int], window: int) -> torch.Tensor:
    """Cut (B, H·W, C) tokens into non-overlapping window×window grids: (B·nW, window², C)."""
    b, _, c = x.shape
    h, w = size
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, size: tuple[int, int], window: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, window², C) -> (B, H·W, C)."""
    h, w = size
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h * w, c)


class ConditionalLayerNorm(nn.Module):
    """Conditional layer normalisation, the paper's class projection layer ([H] Eq. 1).

    ā = (a − μ̂)/√(σ̂² + ε) · γ + β, with γ = 1 + W_γᵀ[c, z_i] and β = W_βᵀ[c, z_i].
    Here [c, z_i] is the one-hot class concatenated with the stage's chunk of z. The "1 +"
    makes the layer start as a plain LN. The two maps have no bias, as in Eq. 1.

    ``forward(x, cond)``: x is (B, N, dim) tokens, cond is (B, cond_dim).
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.cond_dim = cond_dim
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.to_gamma = nn.Linear(cond_dim, dim, bias=False)
        self.to_beta = nn.Linear(cond_dim, dim, bias=False)

    def gamma_beta(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """γ and β, each (B, dim), for the conditioning vectors [c, z_i]."""
        return 1.0 + self.to_gamma(cond), self.to_beta(cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma_beta(cond)
        return self.norm(x) * gamma.unsqueeze(1) + beta.unsqueeze(1)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over the tokens of each sequence.

    ``fused=True`` uses ``F.scaled_dot_product_attention``, which saves memory but is not twice
    differentiable on CPU. ``fused=False`` writes out softmax(QKᵀ/√d)V, so a gradient penalty
    can differentiate through it.
    """

    def __init__(self, dim: int, heads: int, fused: bool = True):
        super().__init__()
        if dim % heads:
            raise PipelineError(f"attention width {dim} is not divisible by {heads} heads; change the heads setting")
        self.heads = heads
        self.head_dim = dim // heads
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5)
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class GridAttention(nn.Module):
    """Self-attention restricted to grids ("grid transformer encoder", [H] §2.1).

    The (H, W) feature map is reshaped into non-overlapping ``window``×``window`` grids, and
    tokens attend only to tokens of their own grid. ``window=None`` is ordinary global
    attention over all tokens.
    """

    def __init__(self, dim: int, heads: int, window: int | None = None, fused: bool = True):
        super().__init__()
        self.window = window
        self.attn = MultiHeadSelfAttention(dim, heads, fused=fused)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        if self.window is None:
            return self.attn(x)
        if size is None or size[0] % self.window or size[1] % self.window:
            raise PipelineError(f"grid attention window {self.window} does not tile a feature map of size {size}")
        windows = window_partition(x, size, self.window)
        return window_merge(self.attn(windows), size, self.window)


class TransformerEncoder(nn.Module):
    """One ViT encoder ([H] §2.1): pre-LN (grid) self-attention and a GELU MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, window: int | None = None, fused: bool = True):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GridAttention(dim, heads, window=window, fused=fused)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x))

