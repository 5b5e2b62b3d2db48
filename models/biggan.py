"""BigGAN (Brock, Donahue & Simonyan, ICLR 2019, "Large Scale GAN Training for High Fidelity Natural
Image Synthesis"): the class-conditional baseline of AttributeGAN ([A] §3, Table 1).

AttributeGAN trains one single-attribute BigGAN per attribute at 256 px and averages FID over them
(model notes §2.5). This family is that single model: a class-conditional BigGAN whose classes are
the levels of one attribute; the pipeline runs it once per attribute. docs/biggan.md has the details.

From the BigGAN paper (and the authors' reference code, BigGAN-PyTorch, for what the paper leaves
to its appendix tables):

* Generator. z ~ N(0, I) is split into one chunk per generator block plus one for the input layer
  (hierarchical latent space). Chunk 0 goes through a linear layer to a 4×4×16ch map. Each block
  gets the *shared* class embedding e_y (one ``nn.Embedding`` for the whole generator, 128-d)
  concatenated with its own chunk z_i. Its two class-conditional BatchNorms compute
  BN(x)·(1 + W_γ[e_y, z_i]) + W_β[e_y, z_i], linear projections without bias. A residual up
  block is BN-ReLU-upsample(nearest ×2)-conv3×3-BN-ReLU-conv3×3, plus a skip upsample→conv1×1.
  One SAGAN non-local block follows the block at the ``attention`` resolution (BigGAN: 64×64).
  Output: BN-ReLU-conv3×3-tanh.
* Discriminator. Residual down blocks: [ReLU]-conv3×3-ReLU-conv3×3-avgpool, with skip
  conv1×1-avgpool (the first block has no pre-activation and pools before its skip conv). One
  non-local block sits at the ``attention`` resolution. Then h = Σ_{x,y} ReLU(features), and the
  projection discriminator gives D(x, y) = ψ(h) + ⟨embed(y), h⟩.
* Spectral normalisation on every convolution and linear layer of G and D and on D's class
  embedding (one power iteration per forward pass). G's shared embedding has none, as in the
  reference code. Weights start orthogonal (the reference code's ``ortho`` init).
* Hinge loss. The modified orthogonal regularisation R_β(W) = β‖WᵀW ⊙ (1 − I)‖²_F (β = 1e-4),
  with the columns of W the filters (one per output channel) of each weight of G. It covers
  every weight with at least two axes except the shared embedding, i.e. no biases, no BN gains
  (as in the reference code, the CBN projections W_γ, W_β are weights and are regularised).
  It is applied to the raw weights, before spectral normalisation.
* Channel multipliers per resolution (``channels`` = ch scales them all; BigGAN: ch = 96):

  ====  ==========================================  ===============================================
  px    G block outputs (input: 16ch at 4×4)        D block outputs
  ====  ==========================================  ===============================================
  512   16 8 8 4 2 1 1 ch (8 … 512 px)              1 1 2 4 8 8 16 ch down to 4×4, then 16ch at 4×4
  256   16 8 8 4 2 1 ch (8 … 256 px)                1 2 4 8 8 16 ch down to 4×4, then 16ch at 4×4
  128   16 8 4 2 1 ch (8 … 128 px)                  1 2 4 8 16 ch down to 4×4, then 16ch at 4×4
  64    16 8 4 2 ch (8 … 64 px)                     1 2 4 8 ch down to 4×4, then 16ch at 4×4
  32    4 4 4 ch (input 4ch; 8, 16, 32 px)          4 4 ch down to 8×8, then 4 4 ch at 8×8
  ====  ==========================================  ===============================================

  128/256/512 are the paper's tables. 64 and 32 (not in the paper) are the reference code's
  tables; 32 is its CIFAR architecture.

Chosen here (docs/biggan.md):

* ``attention`` is a resolution. G puts its non-local block after the block whose output side is
  closest to it, and D after the first block whose output side is closest to it (log-scale
  distance; a tie goes to the larger side). At ≥ 128 px this is exactly 64×64 in both. At 64 px
  it is 64 in G and 32 in D; at 32 px it is 32 in G and 16 in D. ``attention: null`` (or 0) turns
  both blocks off.
* ``latent_dim`` (null) is the paper's: 20 per chunk (120 at 128 px, 140 at 256 px, 80 at 32
  px), and 128 = 8 × 16 at 512 px. A given value must divide evenly into the chunks (the
  reference code silently truncates instead).
* Only the hinge loss is offered (``loss`` may be given, but only as ``hinge``).
* Adam ε is the loop's (1e-8); the reference code's launch scripts use 1e-6. The loop has no EMA
  start delay (the reference code starts the EMA at iteration 20,000), and batch norm statistics
  are the running averages (no "standing statistics").

Config keys (``generators.<name>``) read by the builder, with their defaults (``BIGGAN_DEFAULTS``):

==============  ========  ==============================================================
image_size      required  32, 64, 128, 256 or 512
channels        96        ch, the width multiplier of G (and of D unless d_channels is set)
d_channels      null      D's ch; null = channels
latent_dim      null      size of z; null = the paper's (see above); must divide into the chunks
shared_dim      128       size of the shared class embedding
attention       64        resolution of the non-local block in G and D; null/0 = none
ortho_weight    1e-4      β of the orthogonal regularisation; 0 = off
loss            hinge     only ``hinge``
==============  ========  ==============================================================

Keys read by the shared adversarial loop; their BigGAN values (``TRAINING_DEFAULTS``) must be
written in the config entry, because the loop's own fallbacks differ (betas (0, 0.9), n_critic 1,
no EMA, lr required): ``g_lr: 5e-5``, ``d_lr: 2e-4``, ``lr: 2e-4`` (required by the loop,
overridden by g_lr/d_lr), ``betas: [0.0, 0.999]``, ``n_critic: 2``, ``ema_decay: 0.9999``.
``PAPER_CONFIG`` is a complete entry at AttributeGAN's 256 px; ``DEMO_CONFIG`` a 32-px CPU demo.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from histaug.losses import AdversarialObjective
from histaug.utils import PipelineError

from .registry import GANParts, register_family, require

# --------------------------------------------------------------------------- configuration

#: Architecture keys read by :func:`build_biggan` and their defaults (image_size has none).
BIGGAN_DEFAULTS: dict[str, Any] = {
    "channels": 96,       # ch; BigGAN: 96
    "d_channels": None,   # None = channels
    "latent_dim": None,   # None = 20 per chunk (512 px: 16 per chunk)
    "shared_dim": 128,    # shared class embedding
    "attention": 64,      # non-local block resolution (closest stage); None/0 = off
    "ortho_weight": 1e-4,  # β of the modified orthogonal regularisation
    "loss": "hinge",
}

#: BigGAN's optimisation settings, read by the shared loop (write them into the config entry).
TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 2e-4,            # required by the loop; g_lr and d_lr override it
    "g_lr": 5e-5,
    "d_lr": 2e-4,
    "betas": [0.0, 0.999],
    "n_critic": 2,         # D steps per G step
    "ema_decay": 0.9999,
}

#: One AttributeGAN baseline run: 256 px, ch = 96 (BigGAN's 256-px model). batch_size, steps and
#: the logging keys are the pipeline's to choose.
PAPER_CONFIG: dict[str, Any] = {"family": "biggan", "image_size": 256, **BIGGAN_DEFAULTS, **TRAINING_DEFAULTS}

#: 32-px CPU demo: ch = 4 (16-channel blocks), z of 64 (4 chunks of 16), a 32-d shared embedding,
#: batch 16, the non-local blocks at 16×16 (at 32×32 the generator's attention map alone doubles
#: the step time). About 95-120 ms of one core per step: 150 steps through train_generator took
#: 15.9 s with the demo's one thread per job (docs/biggan.md). The EMA decay suits a run of a few hundred steps; 0.9999
#: would leave the EMA copy near its initial weights.
DEMO_CONFIG: dict[str, Any] = {
    "family": "biggan", "image_size": 32, **BIGGAN_DEFAULTS, **TRAINING_DEFAULTS,
    "channels": 4, "latent_dim": 64, "shared_dim": 32, "attention": 16, "ema_decay": 0.98, "batch_size": 16,
}

#: Per image size: G (input multiplier, block output multipliers), D (block output multipliers,
#: whether each block halves the side). From the paper's tables (128/256/512) and the reference
#: code (64, 32).
G_ARCH: dict[int, tuple[int, tuple[int, ...]]] = {
    32: (4, (4, 4, 4)),
    64: (16, (16, 8, 4, 2)),
    128: (16, (16, 8, 4, 2, 1)),
    256: (16, (16, 8, 8, 4, 2, 1)),
    512: (16, (16, 8, 8, 4, 2, 1, 1)),
}
D_ARCH: dict[int, tuple[tuple[int, ...], tuple[bool, ...]]] = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True,) * 4 + (False,)),
    128: ((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
    512: ((1, 1, 2, 4, 8, 8, 16, 16), (True,) * 7 + (False,)),
}
BOTTOM = 4            # side of G's input map
CHUNK = 20            # z per chunk in the paper's 128/256 models
PAPER_LATENT = {512: 128}  # the 512-px model: z of 128 in 8 chunks of 16


def default_latent_dim(image_size: int) -> int:
    """The paper's z size: 20 per chunk (one chunk per G block + one for the input layer); 128 at 512 px."""
    return PAPER_LATENT.get(int(image_size), CHUNK * (len(G_ARCH[int(image_size)][1]) + 1))


def closest_stage(sides: list[int], resolution: int | None) -> int | None:
    """Index of the first side closest to ``resolution`` on a log scale (ties: the larger side); None if off."""
    if not resolution:
        return None
    target = math.log2(resolution)
    return min(range(len(sides)), key=lambda i: (abs(math.log2(sides[i]) - target), -sides[i], i))


# --------------------------------------------------------------------------- layers


def _sn(module: nn.Module) -> nn.Module:
    """Orthogonal initialisation (reference code), then spectral normalisation (1 power iteration/forward)."""
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module)


def sn_conv(c_in: int, c_out: int, kernel: int = 3, bias: bool = True) -> nn.Module:
    return _sn(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias))


def sn_linear(n_in: int, n_out: int, bias: bool = True) -> nn.Module:
    return _sn(nn.Linear(n_in, n_out, bias=bias))


def is_spectral_normed(module: nn.Module) -> bool:
    """True when ``module.weight`` is computed by a spectral-norm parametrization."""
    return parametrize.is_parametrized(module, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in module.parametrizations.weight
    )


class ConditionalBatchNorm2d(nn.Module):
    """BN(x)·(1 + W_γ c) + W_β c with c = [e_y, z_i]: BigGAN's class-conditional BN (no own affine)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = sn_linear(cond_dim, channels, bias=False)
        self.bias = sn_linear(cond_dim, channels, bias=False)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gain = (1.0 + self.gain(cond))[:, :, None, None]
        return self.bn(x) * gain + self.bias(cond)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN non-local block: x + γ·o(softmax(θ(x)ᵀ φ(x)) g(x)), φ and g max-pooled 2×2, γ starting at 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.qk, self.v = max(channels // 8, 1), max(channels // 2, 1)
        self.theta = sn_conv(channels, self.qk, 1, bias=False)
        self.phi = sn_conv(channels, self.qk, 1, bias=False)
        self.g = sn_conv(channels, self.v, 1, bias=False)
        self.o = sn_conv(self.v, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)                        # (B, qk, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)           # (B, qk, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)               # (B, v, HW/4)
        attn = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (B, HW, HW/4)
        o = self.o(torch.bmm(g, attn.transpose(1, 2)).view(b, self.v, h, w))
        return x + self.gamma * o


class GBlock(nn.Module):
    """Residual up block: CBN-ReLU-up-conv3×3-CBN-ReLU-conv3×3 + (up-conv1×1) skip."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(c_in, cond_dim)
        self.conv1 = sn_conv(c_in, c_out)
        self.bn2 = ConditionalBatchNorm2d(c_out, cond_dim)
        self.conv2 = sn_conv(c_out, c_out)
        self.conv_sc = sn_conv(c_in, c_out, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Residual down block: [ReLU]-conv3×3-ReLU-conv3×3-[avgpool] + skip (conv1×1 when the shape changes).

    With pre-activation (every block but the first) the skip convolves, then pools; the first block
    pools, then convolves (reference code)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, preactivation: bool):
        super().__init__()
        self.downsample, self.preactivation = downsample, preactivation
        self.conv1 = sn_conv(c_in, c_out)
        self.conv2 = sn_conv(c_out, c_out)
        self.conv_sc = sn_conv(c_in, c_out, 1) if (c_in != c_out or downsample) else None

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        if self.conv_sc is None:
            return h + x
        skip = self._pool(self.conv_sc(x)) if self.preactivation else self.conv_sc(self._pool(x))
        return h + skip


# --------------------------------------------------------------------------- networks


class BigGANGenerator(nn.Module):
    """G(z, y): hierarchical z, shared class embedding, residual up blocks with class-conditional BN."""

    def __init__(self, num_classes: int, image_size: int, channels: int = 96, latent_dim: int | None = None,
                 shared_dim: int = 128, attention: int | None = 64):
        super().__init__()
        in_mult, out_mults = G_ARCH[int(image_size)]
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.latent_dim = int(latent_dim or default_latent_dim(image_size))
        self.n_chunks = len(out_mults) + 1
        if self.latent_dim % self.n_chunks:
            raise ValueError(f"latent_dim={self.latent_dim} does not split into {self.n_chunks} equal chunks")
        self.chunk_size = self.latent_dim // self.n_chunks
        self.shared_dim = int(shared_dim)
        widths = [channels * in_mult] + [channels * m for m in out_mults]
        self.widths = widths
        self.shared = nn.Embedding(self.num_classes, self.shared_dim)
        nn.init.orthogonal_(self.shared.weight)
        self.linear = sn_linear(self.chunk_size, widths[0] * BOTTOM * BOTTOM)
        cond_dim = self.shared_dim + self.chunk_size
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], cond_dim) for i in range(len(out_mults)))
        self.stage_sides = [BOTTOM * 2 ** (i + 1) for i in range(len(out_mults))]
        self.attention_index = closest_stage(self.stage_sides, attention)
        self.attention = SelfAttention(widths[self.attention_index + 1]) if self.attention_index is not None else None
        self.output_bn = nn.BatchNorm2d(widths[-1])
        self.output_conv = sn_conv(widths[-1], 3)

    def chunks(self, z: Tensor) -> tuple[Tensor, ...]:
        """z split into (input-layer chunk, chunk of block 1, …, chunk of block n)."""
        return torch.split(z, self.chunk_size, dim=1)

    def block_conditions(self, z: Tensor, labels: Tensor) -> list[Tensor]:
        """[e_y, z_i] for each block i: the shared class embedding concatenated with the block's chunk."""
        e = self.shared(labels.to(z.device).long()).to(z.dtype)
        return [torch.cat([e, c], dim=1) for c in self.chunks(z)[1:]]

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        conds = self.block_conditions(z, labels)
        h = self.linear(self.chunks(z)[0]).view(z.shape[0], -1, BOTTOM, BOTTOM)
        for i, block in enumerate(self.blocks):
            h = block(h, conds[i])
            if i == self.attention_index:
                h = self.attention(h)
        return torch.tanh(self.output_conv(F.relu(self.output_bn(h))))


class BigGANDiscriminator(nn.Module):
    """D(x, y) = ψ(h) + ⟨embed(y), h⟩, h = Σ_{x,y} ReLU(residual down blocks(x)) (projection discriminator)."""

    def __init__(self, num_classes: int, image_size: int, channels: int = 96, attention: int | None = 64):
        super().__init__()
        out_mults, downsample = D_ARCH[int(image_size)]
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        widths = [3] + [channels * m for m in out_mults]
        self.widths = widths
        self.blocks = nn.ModuleList(
            DBlock(widths[i], widths[i + 1], downsample[i], preactivation=i > 0) for i in range(len(out_mults))
        )
        sides, side = [], self.image_size
        for down in downsample:
            side //= 2 if down else 1
            sides.append(side)
        self.stage_sides = sides
        self.attention_index = closest_stage(sides, attention)
        self.attention = SelfAttention(widths[self.attention_index + 1]) if self.attention_index is not None else None
        self.linear = sn_linear(widths[-1], 1)
        self.embed = _sn(nn.Embedding(self.num_classes, widths[-1]))

    def features(self, x: Tensor) -> Tensor:
        """h: (B, C) sum-pooled ReLU features of the last block."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_index:
                h = self.attention(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: Tensor, labels: Tensor) -> dict:
        h = self.features(x)
        projection = (self.embed(labels.to(x.device).long()).to(h.dtype) * h).sum(dim=1)
        return {"source": self.linear(h).squeeze(1) + projection, "class_logits": None}


# --------------------------------------------------------------------------- objective


def orthogonal_penalty(weight: Tensor) -> Tensor:
    """‖WᵀW ⊙ (1 − I)‖²_F for the weight of one layer, W's columns being its filters (one per output
    channel): the squared off-diagonal entries of the filters' Gram matrix. fp32, outside autocast."""
    with torch.autocast(device_type=weight.device.type, enabled=False):
        w = weight.float().reshape(weight.shape[0], -1)   # rows = filters, i.e. Wᵀ of the paper
        gram = w @ w.t()
        off = gram - torch.diag_embed(torch.diagonal(gram))
        return off.pow(2).sum()


def orthogonally_regularised(generator: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """G's weights under the orthogonal regularisation: every parameter with ≥ 2 axes (the raw,
    pre-spectral-norm weights) except embeddings; biases, BN gains and γ have fewer axes."""
    skip = {id(p) for m in generator.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return [(n, p) for n, p in generator.named_parameters() if p.dim() >= 2 and id(p) not in skip]


class BigGANObjective(AdversarialObjective):
    """Hinge loss; the generator loss adds β·Σ_W ‖WᵀW ⊙ (1 − I)‖²_F over G's weights.

    The objective keeps a reference to the generator outside the module tree (``self._generator``
    is a tuple, not a submodule), so its state_dict is empty and does not duplicate G's weights.
    The discriminator sees real and fake images in one batch (D has no batch statistics), as in the
    reference code: one spectral-norm power iteration per D update.
    """

    def __init__(self, generator: nn.Module | None = None, ortho_weight: float = 1e-4, gen_name: str = "<name>"):
        super().__init__(loss="hinge", gen_name=gen_name)
        self.ortho_weight = float(ortho_weight)
        self._generator = (generator,)

    @property
    def generator(self) -> nn.Module | None:
        return self._generator[0]

    def orthogonal_regularisation(self) -> Tensor:
        """β·Σ_W ‖WᵀW ⊙ (1 − I)‖²_F over :func:`orthogonally_regularised` weights (0 without a generator)."""
        params = orthogonally_regularised(self.generator) if self.generator is not None else []
        if not params or self.ortho_weight == 0:
            return torch.zeros(())
        return self.ortho_weight * torch.stack([orthogonal_penalty(p) for _, p in params]).sum()

    def discriminator_loss(self, discriminate, real: Tensor, fake: Tensor, labels: Tensor):
        scores = discriminate(torch.cat([real, fake.to(real.dtype)]), torch.cat([labels, labels]))["source"].float()
        s_real, s_fake = scores[: real.shape[0]], scores[real.shape[0]:]
        adv = self.loss.discriminator(s_real, s_fake)
        return adv, {"d_adv": adv.detach(), "d_real": s_real.mean().detach(), "d_fake": s_fake.mean().detach(),
                     "d_loss": adv.detach()}

    def generator_loss(self, discriminate, fake: Tensor, labels: Tensor):
        adv = self.loss.generator(discriminate(fake, labels)["source"].float())
        terms = {"g_adv": adv.detach()}
        total = adv
        if self.ortho_weight > 0 and self.generator is not None:
            ortho = self.orthogonal_regularisation().to(adv.device)
            terms["g_ortho"] = ortho.detach()
            total = total + ortho
        terms["g_loss"] = total.detach()
        return total, terms

    def extra_repr(self) -> str:
        return f"loss=hinge, ortho_weight={self.ortho_weight}"


# --------------------------------------------------------------------------- family


def _optional_positive_int(gen_cfg: dict, key: str, name: str) -> int | None:
    value = gen_cfg.get(key, BIGGAN_DEFAULTS[key])
    if value is None:
        return None
    return require({key: value, "family": "biggan"}, key, name, int, minimum=1)


def resolve_config(gen_cfg: dict, name: str = "<name>") -> dict[str, Any]:
    """The builder's keys with defaults filled in and checked; errors name ``generators.<name>.<key>``."""
    cfg = {"family": "biggan", **BIGGAN_DEFAULTS, **{k: gen_cfg[k] for k in BIGGAN_DEFAULTS if k in gen_cfg}}
    size = require(gen_cfg, "image_size", name, int)
    if size not in G_ARCH:
        raise PipelineError(f"config key generators.{name}.image_size={size!r}: BigGAN is built for "
                            f"{sorted(G_ARCH)} px")
    cfg["image_size"] = size
    cfg["channels"] = require(cfg, "channels", name, int, minimum=1)
    cfg["d_channels"] = _optional_positive_int(cfg, "d_channels", name) or cfg["channels"]
    cfg["shared_dim"] = require(cfg, "shared_dim", name, int, minimum=1)
    latent = _optional_positive_int(cfg, "latent_dim", name) or default_latent_dim(size)
    n_chunks = len(G_ARCH[size][1]) + 1
    if latent % n_chunks:
        raise PipelineError(f"config key generators.{name}.latent_dim={latent}: must be a multiple of {n_chunks} "
                            f"(one z chunk per generator block at {size} px plus one for the input layer), "
                            f"e.g. {n_chunks * max(latent // n_chunks, 1)}; null = {default_latent_dim(size)}")
    cfg["latent_dim"] = latent
    attention = cfg["attention"]
    if attention in (None, 0, False):
        cfg["attention"] = None
    elif isinstance(attention, bool) or not isinstance(attention, int) or attention < 4 or attention & (attention - 1):
        raise PipelineError(f"config key generators.{name}.attention={attention!r}: expected a power of two >= 4 "
                            "(the resolution of the non-local block; BigGAN: 64) or null for none")
    cfg["ortho_weight"] = float(require(cfg, "ortho_weight", name, (int, float), minimum=0))
    if cfg["loss"] != "hinge":
        raise PipelineError(f"config key generators.{name}.loss={cfg['loss']!r}: BigGAN trains with the hinge loss; "
                            "remove the key or set it to hinge")
    return cfg


@register_family("biggan")
def build_biggan(gen_cfg: dict, num_classes: int, name: str = "<name>") -> GANParts:
    """BigGAN generator, projection discriminator and hinge + orthogonal-regularisation objective."""
    cfg = resolve_config(gen_cfg, name)
    G = BigGANGenerator(num_classes, cfg["image_size"], cfg["channels"], cfg["latent_dim"], cfg["shared_dim"],
                        cfg["attention"])
    D = BigGANDiscriminator(num_classes, cfg["image_size"], cfg["d_channels"], cfg["attention"])
    return GANParts(generator=G, discriminator=D, objective=BigGANObjective(G, cfg["ortho_weight"], name))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
