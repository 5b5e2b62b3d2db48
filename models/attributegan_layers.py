"""AttributeGAN's building blocks (docs/attributegan.md): blur, ReZero residual, efficient attention,
global context, skip-layer excitation, and the up / down / decoder blocks of the generator and the
discriminator. The networks that assemble them are in :mod:`models.attributegan`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REZERO_INIT = 1e-3  # the code's ReZero scale at initialisation
LEAK = 0.1          # LeakyReLU slope of the discriminator, the SLE gate and the contrastive head (code)
FF_LEAK = 0.2       # LeakyReLU slope inside the attention feed-forward (code)


class Blur(nn.Module):
    """[1,2,1] x [1,2,1] / 16 blur per channel, reflect padding (the code's kornia filter2D)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype).expand(channels, 1, 3, 3), groups=channels)


class ReZero(nn.Module):
    """x + g * fn(x) with a learned scalar g starting at 1e-3 (the code's Residual(Rezero(fn)))."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.tensor(REZERO_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.g * self.fn(x)


class EfficientAttention(nn.Module):
    """Efficient (linear) attention of Shen et al., [A] §2 "Efficient attention", per head:

        E(Q, K, V) = rho_q(Q) (rho_k(K)^T V)

    Q, K (d = ``dim`` per head) and V come from 1x1 convolutions ("query, key and value"). With
    ``normalisation="softmax"`` (Shen et al.'s softmax form, as the code: ImageLinearAttention with
    norm_queries) rho_k is a softmax over the key's spatial positions and rho_q a softmax over the
    query's channels, both after scaling by d^-1/4. With ``"scaling"`` it is [A]'s formula
    (QK^T/n)V = Q/sqrt(n) (K^T/sqrt(n) V). K^T V is the global context g (d x d per head); memory
    and time are linear in the number of pixels n: no n x n matrix is formed.
    """

    def __init__(self, channels: int, heads: int = 8, dim: int = 64, normalisation: str = "softmax"):
        super().__init__()
        self.heads, self.dim, self.normalisation = heads, dim, normalisation
        self.to_q = nn.Conv2d(channels, heads * dim, 1)
        self.to_k = nn.Conv2d(channels, heads * dim, 1)
        self.to_v = nn.Conv2d(channels, heads * dim, 1)
        self.to_out = nn.Conv2d(heads * dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, self.dim, h * w) for t in (self.to_q(x), self.to_k(x), self.to_v(x)))
        if self.normalisation == "softmax":
            q = (q * self.dim**-0.25).softmax(dim=2)   # over the query's channels
            k = (k * self.dim**-0.25).softmax(dim=3)   # over the key's positions
            context = torch.einsum("bhdn,bhen->bhde", k, v)
        else:
            context = torch.einsum("bhdn,bhen->bhde", k, v) / (h * w)
        out = torch.einsum("bhdn,bhde->bhen", q, context)
        return self.to_out(out.reshape(b, self.heads * self.dim, h, w))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dim={self.dim}, normalisation={self.normalisation!r}"


class AttentionBlock(nn.Module):
    """Residual efficient attention followed by a residual 1x1-conv feed-forward (ReZero scales)."""

    def __init__(self, channels: int, heads: int, dim: int, normalisation: str):
        super().__init__()
        self.attention = ReZero(EfficientAttention(channels, heads, dim, normalisation))
        self.feed_forward = ReZero(nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1), nn.LeakyReLU(FF_LEAK), nn.Conv2d(2 * channels, channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(x))


class GlobalContext(nn.Module):
    """Global context block ([A]'s "global attention pooling for context modeling", Cao et al.): softmax
    attention pooling over positions -> 1x1 conv -> LeakyReLU -> 1x1 conv -> sigmoid; (B, C_out, 1, 1)."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.attention_pool = nn.Conv2d(channels_in, 1, 1)
        hidden = max(3, channels_out // 2)
        self.transform = nn.Sequential(
            nn.Conv2d(channels_in, hidden, 1), nn.LeakyReLU(LEAK), nn.Conv2d(hidden, channels_out, 1), nn.Sigmoid())

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention pooling: sum_n softmax(w . x)_n x_n -> (B, C_in, 1, 1)."""
        weights = self.attention_pool(x).flatten(2).softmax(dim=-1)           # (B, 1, n)
        return torch.einsum("bin,bcn->bc", weights, x.flatten(2))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.pool(x))


class SkipLayerExcitation(nn.Module):
    """SLE: target * GlobalContext(source), a channel gate computed from a lower-resolution map."""

    def __init__(self, source_channels: int, target_channels: int):
        super().__init__()
        self.gate = GlobalContext(source_channels, target_channels)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """The gate (B, C_target, 1, 1) that multiplies the target feature map."""
        return self.gate(source)


class UpsamplingBlock(nn.Sequential):
    """[A]: "an upsampling layer with scale factor 2, immediately followed by a gaussian blurring kernel",
    then "a convolutional layer, a batch normalization layer and an activation layer" (GLU)."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), Blur(),
                         nn.Conv2d(channels_in, 2 * channels_out, 3, padding=1),
                         nn.BatchNorm2d(2 * channels_out), nn.GLU(dim=1))


class DownBlock(nn.Module):
    """Two-branch down block of the code: (blur, 4x4/2 conv, LReLU, 3x3 conv, LReLU) + (blur, 2x2 average
    pool, 1x1 conv, LReLU), summed."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv_branch = nn.Sequential(
            Blur(), nn.Conv2d(channels_in, channels_out, 4, stride=2, padding=1), nn.LeakyReLU(LEAK),
            nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.LeakyReLU(LEAK))
        self.pool_branch = nn.Sequential(
            Blur(), nn.AvgPool2d(2), nn.Conv2d(channels_in, channels_out, 1), nn.LeakyReLU(LEAK))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_branch(x) + self.pool_branch(x)


class SimpleDecoder(nn.Sequential):
    """The code's auxiliary decoder: ``n_up`` x (nearest x2, 3x3 conv, GLU), halving the channels, to RGB."""

    def __init__(self, channels_in: int, n_up: int):
        layers, c = [], channels_in
        for i in range(n_up):
            c_out = 3 if i == n_up - 1 else max(1, c // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, 2 * c_out, 3, padding=1), nn.GLU(dim=1)]
            c = c_out
        super().__init__(*layers)
