"""Class-conditional VAE (slides: "class-conditional VAE, latent dimensions 100, 500, 2000,
4 convolution layers, number of channels 16, 64").

The condition c is a class or a vector of attribute levels (one one-hot block per attribute,
concatenated: the multi-attribute baseline); below, K is the width of its one-hot encoding.

Encoder q(z | x, c): the image with K one-hot label planes appended (3 + K input channels) ->
``conv_layers`` × (4×4 conv stride 2, [BatchNorm], LeakyReLU 0.2) with widths
channels · (1, 2, 4, 8, 8, ...) -> flatten -> two linear heads μ and log σ².

Decoder p(x | z, c): [z, one-hot c] -> linear -> the encoder's last feature map -> the mirrored
(4×4 transposed conv stride 2, BatchNorm, ReLU) stages -> tanh, so samples are in [-1, 1].

``forward(z, labels)`` decodes, which makes the VAE a drop-in generator for sampling;
``reconstruct(x, labels)`` runs encode -> reparameterise -> decode for training.
Config keys: image_size, latent_dim, channels, conv_layers, kl_weight (used by the loss).
"""
from __future__ import annotations

import torch
from torch import nn

from histaug.distributed import per_sample
from histaug.utils import PipelineError

from .cgan import MAX_WIDTH_MULT, dcgan_init
from .conditioning import Condition, as_condition
from .registry import GANParts, register_family, require


class ConditionalVAE(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        condition: int | Condition,
        image_size: int,
        channels: int = 64,
        conv_layers: int = 4,
    ):
        super().__init__()
        self.condition = as_condition(condition)
        self.latent_dim, self.num_classes, self.image_size = int(latent_dim), self.condition.num_classes, int(image_size)
        if conv_layers < 1 or image_size % (2**conv_layers) or image_size // (2**conv_layers) < 1:
            raise ValueError(f"image_size {image_size} is not divisible by 2**conv_layers = {2 ** conv_layers}")
        self.bottom = image_size // (2**conv_layers)
        widths = [channels * min(2**i, MAX_WIDTH_MULT) for i in range(conv_layers)]
        self.widths = widths

        enc: list[nn.Module] = []
        in_ch = 3 + self.condition.dim
        for i, w in enumerate(widths):
            enc.append(nn.Conv2d(in_ch, w, 4, stride=2, padding=1, bias=(i == 0)))
            if i > 0:
                enc.append(nn.BatchNorm2d(w))
            enc.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = w
        self.encoder = nn.Sequential(*enc)
        n_features = widths[-1] * self.bottom * self.bottom
        self.to_mu = nn.Linear(n_features, self.latent_dim)
        self.to_logvar = nn.Linear(n_features, self.latent_dim)

        self.fc = nn.Linear(self.latent_dim + self.condition.dim, n_features, bias=False)
        self.fc_norm = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        for i in range(conv_layers - 1, 0, -1):
            dec += [
                nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i - 1]),
                nn.ReLU(inplace=True),
            ]
        dec.append(nn.ConvTranspose2d(widths[0], 3, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)
        dcgan_init(self)
        # start with q(z|x) close to the prior: small log-variance head
        nn.init.zeros_(self.to_logvar.bias)

    def _onehot(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.condition.one_hot(labels, dtype).to(labels.device)

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, c): returns (μ, log σ²), each (B, latent_dim)."""
        planes = self._onehot(labels, x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = self.encoder(torch.cat([x, planes], dim=1)).flatten(1)
        return self.to_mu(h), self.to_logvar(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I)."""
        noise = per_sample(lambda s: torch.randn(s, device=mu.device, dtype=mu.dtype), mu.shape)
        return mu + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """p(x | z, c): (B, 3, image_size, image_size) in [-1, 1]."""
        h = self.fc(torch.cat([z, self._onehot(labels, z.dtype)], dim=1))
        h = self.fc_norm(h.view(z.shape[0], -1, self.bottom, self.bottom))
        return torch.tanh(self.decoder(h))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.decode(z, labels)

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor):
        """Encode, sample z by reparameterisation and decode: returns (x̂, μ, log σ²)."""
        mu, logvar = self.encode(x, labels)
        return self.decode(self.reparameterize(mu, logvar), labels), mu, logvar


@register_family("cvae")
def build_cvae(gen_cfg: dict, condition: Condition, name: str = "<name>") -> GANParts:
    image_size = require(gen_cfg, "image_size", name, int, minimum=8)
    latent_dim = require(gen_cfg, "latent_dim", name, int, minimum=1)
    channels = int(gen_cfg.get("channels", 64))
    conv_layers = int(gen_cfg.get("conv_layers", 4))
    if conv_layers < 1 or image_size % (2**conv_layers):
        raise PipelineError(
            f"config keys generators.{name}.image_size={image_size} and conv_layers={conv_layers}: "
            f"image_size must be divisible by 2**conv_layers"
        )
    return GANParts(generator=ConditionalVAE(latent_dim, condition, image_size, channels, conv_layers))
