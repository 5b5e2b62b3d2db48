"""Class-conditional DCGAN-style GAN (the slides' "class-conditional GAN with BCE and Wasserstein losses").

Generator: [z, one-hot c] -> linear -> s0×s0 feature map -> stages of (4×4 transposed conv stride 2,
BatchNorm, ReLU) -> 3×3 conv -> tanh. The start size s0 comes from halving ``image_size`` while it
stays even and above 7: 96 -> 6×6 then ×2 four times, 48 -> 6×6 ×2 three times, 64 -> 4×4 ×2 four
times, 32 -> 4×4 ×2 three times (128 -> 4×4 ×2 five times).

Discriminator: the mirror image, (4×4 conv stride 2, LeakyReLU 0.2) down to s0×s0, with BatchNorm on
the inner layers for ``bce``/``hinge`` and no normalisation for ``wgan-gp`` (the gradient penalty is
per sample, which batch statistics would break). Conditioning is the projection discriminator of
Miyato & Koyama: D(x, c) = ψ(φ(x)) + ⟨e_c, φ(x)⟩, with φ(x) the flattened final feature map and e_c
a learned class embedding. It has no auxiliary class head (``class_logits`` is None).

Conditions: a class, or a vector of attribute levels (the multi-attribute baseline): the generator
reads one one-hot block per attribute, and e_c is the sum of one embedding per attribute level.

Initialisation: DCGAN's N(0, 0.02) for G and for the BatchNorm discriminator; He initialisation for
the normalisation-free WGAN-GP critic, which then starts with ‖∇ₓD‖ ≈ 1 (what the penalty asks for).

Config keys (``generators.<name>``): image_size, latent_dim, g_channels, d_channels, loss,
optional d_norm (``batch`` | ``none``, default from the loss).
"""
from __future__ import annotations

import torch
from torch import nn

from histaug.losses import AdversarialObjective, get_adversarial_loss
from histaug.utils import PipelineError

from .condition_layers import ConditionEmbedding
from .conditioning import Condition, as_condition
from .registry import GANParts, register_family, require

MAX_WIDTH_MULT = 8


def spatial_plan(image_size: int, gen_name: str = "<name>") -> tuple[int, int]:
    """Return (start size s0, number of ×2 stages) with s0 · 2^n = image_size and 3 <= s0 <= 7."""
    size, n = int(image_size), 0
    while size > 7 and size % 2 == 0:
        size //= 2
        n += 1
    if size < 3 or size > 7 or n < 2:
        raise PipelineError(
            f"config key generators.{gen_name}.image_size={image_size}: must be s0·2^n with s0 in 3..7 "
            "and n >= 2 (e.g. 32, 48, 64, 96, 128)"
        )
    return size, n


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def critic_init(module: nn.Module) -> None:
    """Initialisation for a critic without normalisation layers.

    DCGAN's N(0, 0.02) relies on BatchNorm to restore the scale; without it the activations and
    the input gradient shrink layer by layer, so a fresh critic has ‖∇D‖ ≈ 0 and the gradient
    penalty starts saturated. He (Kaiming) initialisation for LeakyReLU(0.2) keeps the scale,
    and the class embedding is scaled like the linear head (std 1/√features).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, m.embedding_dim**-0.5)


class ConditionalGenerator(nn.Module):
    """G(z, c): [z, one-hot c] -> linear -> (ConvTranspose 4×4/2 + BN + ReLU)×n -> conv 3×3 -> tanh.

    ``condition`` is a number of classes or a :class:`~models.conditioning.Condition`; for attributes
    c is the concatenation of one one-hot block per attribute."""

    def __init__(self, latent_dim: int, condition: int | Condition, image_size: int, channels: int = 64):
        super().__init__()
        self.condition = as_condition(condition)
        self.latent_dim, self.num_classes, self.image_size = int(latent_dim), self.condition.num_classes, int(image_size)
        start, n_up = spatial_plan(image_size)
        widths = [channels * min(2 ** (n_up - i), MAX_WIDTH_MULT) for i in range(n_up + 1)]
        self.start = start
        self.fc = nn.Linear(self.latent_dim + self.condition.dim, widths[0] * start * start, bias=False)
        self.fc_norm = nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(widths[i + 1]),
                    nn.ReLU(inplace=True),
                )
                for i in range(n_up)
            ]
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = self.condition.one_hot(labels, z.dtype).to(z.device)
        h = self.fc(torch.cat([z, onehot], dim=1))
        h = self.fc_norm(h.view(z.shape[0], -1, self.start, self.start))
        return torch.tanh(self.to_rgb(self.blocks(h)))


class ProjectionDiscriminator(nn.Module):
    """D(x, c) = ψ(φ(x)) + ⟨e_c, φ(x)⟩ with φ = (conv 4×4/2 + [BN] + LeakyReLU 0.2)×n, flattened;
    for attributes e_c is the sum of one embedding per attribute level (:class:`ConditionEmbedding`)."""

    def __init__(self, condition: int | Condition, image_size: int, channels: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        self.condition = as_condition(condition)
        self.num_classes, self.image_size = self.condition.num_classes, int(image_size)
        start, n_down = spatial_plan(image_size)
        widths = [channels * min(2**i, MAX_WIDTH_MULT) for i in range(n_down)]
        layers: list[nn.Module] = []
        in_ch = 3
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(in_ch, w, 4, stride=2, padding=1, bias=(norm == "none" or i == 0)))
            if norm == "batch" and i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = w
        self.features = nn.Sequential(*layers)
        n_features = widths[-1] * start * start
        self.psi = nn.Linear(n_features, 1)
        self.embed = ConditionEmbedding(self.condition, n_features)
        if norm == "batch":
            dcgan_init(self)
        else:
            critic_init(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        h = self.features(x).flatten(1)
        source = self.psi(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)
        return {"source": source, "class_logits": None}


@register_family("cgan")
def build_cgan(gen_cfg: dict, condition: Condition, name: str = "<name>") -> GANParts:
    image_size = require(gen_cfg, "image_size", name, int)
    spatial_plan(image_size, name)
    latent_dim = require(gen_cfg, "latent_dim", name, int, minimum=1)
    g_channels = int(gen_cfg.get("g_channels", 64))
    d_channels = int(gen_cfg.get("d_channels", 64))
    loss = get_adversarial_loss(gen_cfg.get("loss", "bce"), name)
    norm = gen_cfg.get("d_norm") or ("none" if loss.gradient_penalty else "batch")
    if norm not in ("batch", "none"):
        raise PipelineError(f"config key generators.{name}.d_norm={norm!r}: expected 'batch' or 'none'")
    if norm == "batch" and loss.gradient_penalty:
        raise PipelineError(
            f"config key generators.{name}.d_norm='batch' cannot be combined with loss={loss.name!r}: "
            "the gradient penalty is per sample; use d_norm: none"
        )
    return GANParts(
        generator=ConditionalGenerator(latent_dim, condition, image_size, g_channels),
        discriminator=ProjectionDiscriminator(condition, image_size, d_channels, norm=norm),
        objective=AdversarialObjective.from_config(gen_cfg, name),
    )
