"""AttributeGAN: a multi-attribute controllable GAN for histopathology images (Ye et al., MICCAI 2021, [A]).

Sources: the paper [A] (§2, Fig. 1, Eq. 1, §3 "Implementation Details") and the authors' code
(karenyyy/MICCAI2021_AttributeGAN, "the code", built on lucidrains/lightweight-gan, "LW"), as read
in docs/model-notes.md §2.1-2.3. Where the two disagree this module follows the PAPER by default and
offers the code's behaviour as a config switch; docs/attributegan.md lists every case.

Generator (AttributeGANGenerator, [A] §2 "for conditional attributes ..."):
    * noise input: z -> 4x4 transposed convolution (1x1 -> 4x4) -> BatchNorm -> GLU.
    * attribute input: the attribute vector (one one-hot block per attribute, concatenated:
      Condition.one_hot) -> 4x4 transposed convolution -> BatchNorm -> GLU ([A]: "GLU is utilized for
      every activation layer"; the code uses ReLU here: ``attribute_activation: relu``).
    * "The attribute vector is later concatenated with the input noise vector after the initial stage
      of upsampling both vectors": concatenation, then L2 normalisation over channels (as the code).
    * upsampling blocks: nearest x2 -> [1,2,1]x[1,2,1] blur ("gaussian blurring kernel for
      antialiasing") -> 3x3 conv -> BatchNorm -> GLU, from 4x4 up to the image size.
    * skip-layer excitation (SLE, [A] §2 / FastGAN): the output of a low-resolution block gates the
      channels of a high-resolution block through "global attention pooling for context modeling"
      (GlobalContext: softmax attention pooling -> 1x1 conv -> LeakyReLU -> 1x1 conv -> sigmoid).
      At 512 px: 16->128, 32->256, 64->512. Rule at other sizes: keep the pairs whose target exists
      (256 px: 16->128, 32->256; 128 px: 16->128; 64 and 32 px: none); ``sle_pairs`` overrides.
    * efficient attention (EfficientAttention, Shen et al. [A, ref. 17]): before the upsampling
      blocks whose input is 32x32 and 64x64 at 512 px; rule at other sizes: the inputs of the two
      blocks before the last two, i.e. sides S/16 and S/8 (those >= 4); ``attention_sizes`` overrides.
      Each is a residual attention + residual 1x1-conv feed-forward (ReZero scales, as the code).
    * output: 3x3 conv to RGB. The code has no tanh, so by default neither has this module
      (``output_tanh: true`` adds one). Without tanh the generator's range is not bounded; the
      pipeline clamps to [-1, 1] when it converts samples to uint8 (histaug.sampling.to_uint8).

Discriminator (AttributeGANDiscriminator, the code's trunk; [A] §2 "For the discriminator ..."):
    * a stride-2 input conv, then two-branch down blocks (conv branch + blur/avg-pool branch,
      LeakyReLU 0.1) down to 8x8; logits from 8x8 (1x1 conv + LeakyReLU = phi, 4x4 conv = psi).
    * projection: D(x, y) = psi(phi(x)) + <FF(y), phi(x)> with FF a feed-forward (linear) layer on the
      attribute vector ([A]: "attribute vectors are fed into a feed-forward layer before being
      incorporated into the output"). psi(phi) is the mean of the 4x4 conv's 5x5 patch logits and the
      projection uses phi averaged over the 8x8 positions, so D is one score per image. The code
      instead maps the 25 patch logits through Linear(25, 25) and adds y (.) s elementwise
      (``projection: elementwise``; the hinge then runs over every element, as in the code).
    * efficient attention in the discriminator too ([A]: "in both generator and discriminator"; the
      code never builds it: ``d_attention: false``), before the down blocks whose input side is one
      of the attention sizes.
    * contrastive heads ([A] Eq. 1): f(x) from the feature map at side S/4 (the 128x128 stage at
      512 px; same relative position elsewhere): 1x1 conv -> LeakyReLU -> 1x1 conv to one channel ->
      flatten -> linear -> L2 normalisation. The proxy l(y): a learned embedding of the attribute
      vector (one vector per level of every attribute, summed), L2-normalised.
    * two auxiliary simple decoders ([A]: "for the 8x8 and 16x16 feature vectors"): one from the
      8x8 features reconstructs the whole image, one from a random quadrant of the 16x16 features
      reconstructs that quadrant; MSE against the image / quadrant resized (nearest, as the code) to
      the decoder's output size. Output sizes: min(128, S) and min(128, S/2) (128 and 128 at 512 px
      as the code; a decoder never outputs more pixels than its target has). The code builds the
      quadrant decoder only at >= 512 px (``quadrant_decoder: false`` below 512 px reproduces it).
    * optional second, low-resolution branch of the code (``low_resolution_branch: true``; [A] does
      not describe it): the image resized to 32x32 -> 3x3 conv -> attention -> down block ->
      attention -> adaptive pool to 8x8 -> 4x4 conv -> 5x5 logits, with its own projection. The
      code's GSA attention there is replaced by the same efficient attention (ReZero residual).

Losses (AttributeGANObjective):
    * hinge, in the house sign convention (real pushed high, histaug.losses):
      L_D,adv = E[relu(1 - D(x, y))] + E[relu(1 + D(G(z, y), y))],  L_G,adv = -E[D(G(z, y), y)].
      (The code uses the mirrored convention, real pushed low: the same loss with D negated.)
    * conditional contrastive loss, [A] Eq. 1, on cosine similarities with temperature t:
      l_i = -log( [e^{f_i.l(y_i)/t} + sum_k 1[y_k = y_i] e^{f_i.f_k/t}]
                 / [e^{f_i.l(y_i)/t} + sum_k 1[k != i] e^{f_i.f_k/t}] ),   mean over i,
      where y_k = y_i compares contrastive classes (Condition.contrastive_class; -1 = no class, never
      a positive of another sample). Paper: the k = i term is in the numerator ("the anchor image
      itself"); the code drops it (``ccl_self_positive: false``), subtracts a margin from every
      similarity (``ccl_margin``; it cancels between numerator and denominator, so it never changes
      the loss) and multiplies the ratio by t inside the log (``ccl_temperature_factor: true``).
    * D loss = hinge + recon_weight * (MSE_8x8 + MSE_quadrant) on real images
      + ccl_weight * CCL(f(real), l(y)); G loss = hinge + ccl_weight * CCL(f(fake), l(y)). Fakes carry
      the real batch's labels (the shared loop does this).

Ablations (config switches, no code forks): ``efficient_attention: false`` removes exactly the
attention modules (w/o EA); ``contrastive: false`` or ``ccl_weight: 0`` removes exactly the CCL and
its two projection heads f and l (w/o CCL).

Initialisation: as the code, Kaiming normal (fan_in, leaky_relu gain with a = 0) for every Conv2d
and Linear weight; PyTorch defaults for transposed convolutions, biases, BatchNorm and embeddings;
ReZero scales start at 1e-3.

Config keys (``generators.<name>``), defaults = paper/code values:

    image_size              512    output side: 32, 64, 128, 256 or 512 (powers of two only)
    latent_dim              512    size of z (the code's latent_dim)
    g_channels              512    generator width at <= 16 px; w(r) = g_channels * min(1, 16/r),
                                   3 at r >= 512 (LW's rule) -> 512, 512, 256, 128, 64, 32, 3 at 8..512 px
    d_channels              512    discriminator width at 8 px; d(r) = d_channels * min(1, 8/r)
                                   -> 16, 32, 64, 128, 256, 512 at 256..8 px
    attribute_channels      null   channels of the attribute input map; null = latent_dim // 4 (code: 128)
    attribute_activation    glu    glu (paper) | relu (code)
    efficient_attention     true   false = the w/o EA ablation (no attention modules anywhere)
    attention_sizes         null   feature-map sides that get attention; null = {S/16, S/8} >= 4
    d_attention             true   attention in D as well (paper) | false (code: never built)
    attention_heads         8      heads of each efficient attention (code: 8)
    attention_dim           64     key/value dimension per head (code: 64)
    attention_normalisation softmax  softmax (Shen et al.'s softmax form, the code) | scaling
                                   ([A]'s formula (QK^T/n)V = Q/sqrt(n) (K^T/sqrt(n) V))
    sle_pairs               null   [[source, target], ...] skip-layer excitations; null = the rule above
    output_tanh             false  tanh on the output (the code has none; the paper does not say)
    projection              feedforward  feedforward (paper: psi(phi) + <FF(y), phi>) | elementwise (code)
    low_resolution_branch   false  the code's second 32x32 discriminator branch (not in the paper)
    quadrant_decoder        true   the 16x16 random-quadrant decoder (paper: always; code: >= 512 px)
    contrastive             true   false = the w/o CCL ablation
    ccl_weight              1.0    weight of the CCL in both losses (0 = w/o CCL)
    contrastive_dim         400    dimension of f(x) and l(y) (code: 25 x 16 = 400)
    temperature             1.0    t of Eq. 1 (paper: not given; code: 1)
    ccl_self_positive       true   k = i term in Eq. 1's numerator (paper) | false (code)
    ccl_margin              0.0    the code's margin (code: 0; cancels in Eq. 1)
    ccl_temperature_factor  false  the code's extra factor t inside the log
    recon_weight            1.0    weight of the two reconstruction MSEs (code: 1)
    loss                    hinge  only hinge is accepted

Loop keys read by histaug.gan_trainers (paper/code values in :data:`PAPER_CONFIG`): lr 2e-4
("fixed ... throughout the entire 50000 steps"), betas [0.5, 0.9] (code), batch_size 64, steps
50000, n_critic 1 (one D step per G step), ema_decay null: the code keeps an EMA copy (beta 0.995
applied every 10 steps after step 20k, reset to G every 1k steps until 25k), but its generate.py
samples from G, not from the EMA copy; the shared loop's per-step EMA cannot reproduce that schedule
(0.995 every 10 steps is about 0.9995 per step). No DiffAug (the code's AugWrapper is never called).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from histaug.utils import PipelineError

from .attributegan_layers import (  # noqa: F401  (re-exported: the blocks are part of this family)
    LEAK,
    AttentionBlock,
    Blur,
    DownBlock,
    EfficientAttention,
    GlobalContext,
    ReZero,
    SimpleDecoder,
    SkipLayerExcitation,
    UpsamplingBlock,
)
from .attributegan_objective import AttributeGANObjective
from .condition_layers import ConditionEmbedding
from .conditioning import Condition, as_condition
from .registry import GANParts, register_family, require

IMAGE_SIZES = (32, 64, 128, 256, 512)
#: [A] §2: skip-layer excitations at 512 px, (source side, target side).
PAPER_SLE_PAIRS = ((16, 128), (32, 256), (64, 512))

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AttributeGANSettings:
    """The validated model and loss keys of one ``generators.<name>`` entry (see the module docstring)."""

    image_size: int = 512
    latent_dim: int = 512
    g_channels: int = 512
    d_channels: int = 512
    attribute_channels: int | None = None
    attribute_activation: str = "glu"
    efficient_attention: bool = True
    attention_sizes: tuple[int, ...] | None = None
    d_attention: bool = True
    attention_heads: int = 8
    attention_dim: int = 64
    attention_normalisation: str = "softmax"
    sle_pairs: tuple[tuple[int, int], ...] | None = None
    output_tanh: bool = False
    projection: str = "feedforward"
    low_resolution_branch: bool = False
    quadrant_decoder: bool = True
    contrastive: bool = True
    ccl_weight: float = 1.0
    contrastive_dim: int = 400
    temperature: float = 1.0
    ccl_self_positive: bool = True
    ccl_margin: float = 0.0
    ccl_temperature_factor: bool = False
    recon_weight: float = 1.0

    @property
    def uses_contrastive(self) -> bool:
        """The CCL and its heads exist (``contrastive`` and a positive ``ccl_weight``)."""
        return self.contrastive and self.ccl_weight > 0

    @property
    def attribute_width(self) -> int:
        return self.attribute_channels or max(1, self.latent_dim // 4)


#: Model/loss keys and their defaults (the paper's, or the code's where the paper is silent).
DEFAULTS: dict[str, Any] = {k: getattr(AttributeGANSettings(), k) for k in AttributeGANSettings.__dataclass_fields__}

#: The paper's model and training settings at 512 px ([A] §3 and the code's run.py).
PAPER_CONFIG: dict[str, Any] = {
    "family": "attributegan", **DEFAULTS, "loss": "hinge",
    "lr": 2e-4, "betas": [0.5, 0.9], "batch_size": 64, "steps": 50000, "n_critic": 1, "ema_decay": None,
}

#: A 32-px model for CPU demos: G 247k, D 138k parameters; about 0.11 s per step at batch 16 on two idle
#: cores (150 steps in ~16-20 s), 0.25 s on one contended core (docs/attributegan.md).
#: At 32 px the paper's rules leave one attention stage (4x4) and no SLE, so the demo names its own:
#: attention at 8x8 and 16x16 (G; 16x16 in D) and one excitation 8->32.
DEMO_CONFIG: dict[str, Any] = {
    **PAPER_CONFIG,
    "image_size": 32, "latent_dim": 32, "g_channels": 64, "d_channels": 64,
    "attention_sizes": [8, 16], "attention_heads": 2, "attention_dim": 16, "sle_pairs": [[8, 32]],
    "contrastive_dim": 64, "batch_size": 16, "steps": 150,
}

_CHOICES = {
    "attribute_activation": ("glu", "relu"),
    "attention_normalisation": ("softmax", "scaling"),
    "projection": ("feedforward", "elementwise"),
}
_BOOLEANS = ("efficient_attention", "d_attention", "output_tanh", "low_resolution_branch", "quadrant_decoder",
             "contrastive", "ccl_self_positive", "ccl_temperature_factor")
_POSITIVE_INTS = ("latent_dim", "g_channels", "d_channels", "attention_heads", "attention_dim", "contrastive_dim")
_NONNEGATIVE = ("ccl_weight", "recon_weight")


def _key(name: str, key: str) -> str:
    return f"config key generators.{name}.{key}"


def upsampling_inputs(image_size: int) -> list[int]:
    """Input sides of the generator's upsampling blocks: 4, 8, ..., S/2."""
    return [2**k for k in range(2, int(math.log2(image_size)))]


def down_block_inputs(image_size: int) -> list[int]:
    """Input sides of the discriminator's down blocks: S/2 (after the input conv), ..., 16."""
    return [image_size // 2**k for k in range(1, int(math.log2(image_size)) - 3)]


def default_attention_sizes(image_size: int) -> tuple[int, ...]:
    """[A]: 32x32 and 64x64 at 512 px, i.e. the inputs of the two upsampling blocks before the last
    two (sides S/16 and S/8); sides below the 4x4 start do not exist (32 px keeps only 4x4)."""
    return tuple(s for s in (image_size // 16, image_size // 8) if s >= 4)


def default_sle_pairs(image_size: int) -> tuple[tuple[int, int], ...]:
    """[A]'s three skip-layer excitations (16->128, 32->256, 64->512), those whose target exists."""
    return tuple(p for p in PAPER_SLE_PAIRS if p[1] <= image_size)


def read_settings(gen_cfg: dict, name: str = "<name>") -> AttributeGANSettings:
    """Validate the model/loss keys of ``gen_cfg``; errors name ``generators.<name>.<key>``."""
    cfg = {**DEFAULTS, **{k: v for k, v in gen_cfg.items() if k in DEFAULTS}}
    size = require(cfg, "image_size", name, int)
    if size not in IMAGE_SIZES:
        raise PipelineError(f"{_key(name, 'image_size')}={size}: AttributeGAN generates powers of two only, one of "
                            f"{list(IMAGE_SIZES)} (for 96-px data use 128; see docs/attributegan.md)")
    loss = gen_cfg.get("loss", "hinge")
    if loss != "hinge":
        raise PipelineError(f"{_key(name, 'loss')}={loss!r}: AttributeGAN is trained with the hinge loss; remove the "
                            "key or set it to 'hinge'")
    for key in _POSITIVE_INTS:
        require(cfg, key, name, int, minimum=1)
    if cfg["attribute_channels"] is not None:
        require(cfg, "attribute_channels", name, int, minimum=1)
    for key in _BOOLEANS:
        if not isinstance(cfg[key], bool):
            raise PipelineError(f"{_key(name, key)}={cfg[key]!r}: expected true or false")
    for key, choices in _CHOICES.items():
        if cfg[key] not in choices:
            raise PipelineError(f"{_key(name, key)}={cfg[key]!r}: expected one of {list(choices)}")
    for key in _NONNEGATIVE:
        require(cfg, key, name, (int, float), minimum=0)
    require(cfg, "ccl_margin", name, (int, float))
    temperature = require(cfg, "temperature", name, (int, float))
    if not temperature > 0:
        raise PipelineError(f"{_key(name, 'temperature')}={temperature!r}: must be > 0")

    attention = cfg["attention_sizes"]
    if attention is None:
        attention = default_attention_sizes(size)
    else:
        allowed = upsampling_inputs(size)
        if not isinstance(attention, (list, tuple)) or any(
                isinstance(s, bool) or not isinstance(s, int) or s not in allowed for s in attention):
            raise PipelineError(f"{_key(name, 'attention_sizes')}={attention!r}: expected a list of feature-map sides "
                                f"from {allowed} (the generator's upsampling-block inputs at {size} px), or null")
        attention = tuple(sorted(set(attention)))

    pairs = cfg["sle_pairs"]
    if pairs is None:
        pairs = default_sle_pairs(size)
    else:
        outputs = upsampling_inputs(size)[1:] + [size]
        ok = isinstance(pairs, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(not isinstance(s, bool) and s in outputs for s in p)
            and p[0] < p[1] for p in pairs)
        sources, targets = ([p[0] for p in pairs], [p[1] for p in pairs]) if ok else ([], [])
        if not ok or len(set(targets)) != len(targets) or len(set(sources)) != len(sources):
            raise PipelineError(f"{_key(name, 'sle_pairs')}={pairs!r}: expected [[source, target], ...] with "
                                f"source < target, both from {outputs}, each source and each target once; or null")
        pairs = tuple((int(a), int(b)) for a, b in pairs)

    return AttributeGANSettings(**{
        **cfg, "image_size": size, "attention_sizes": attention, "sle_pairs": pairs,
        "ccl_weight": float(cfg["ccl_weight"]), "recon_weight": float(cfg["recon_weight"]),
        "temperature": float(temperature), "ccl_margin": float(cfg["ccl_margin"]),
    })


def generator_width(side: int, g_channels: int) -> int:
    """Channels of the generator's feature map of side ``side`` (the code's fmap rule, scaled)."""
    if side >= 512:
        return 3
    return max(1, round(g_channels * min(1.0, 16 / side)))


def discriminator_width(side: int, d_channels: int) -> int:
    """Channels of the discriminator's feature map of side ``side`` (the code's fmap rule, scaled)."""
    return max(1, round(d_channels * min(1.0, 8 / side)))


def kaiming_init(module: nn.Module) -> None:
    """The code's initialisation: Kaiming normal (fan_in, leaky_relu, a = 0) on Conv2d and Linear weights."""
    for m in module.modules():
        if type(m) in (nn.Conv2d, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- generator


def _input_stage(channels_in: int, channels_out: int, activation: str) -> nn.Sequential:
    """1x1 -> 4x4 transposed convolution, BatchNorm, GLU (or ReLU)."""
    if activation == "glu":
        return nn.Sequential(nn.ConvTranspose2d(channels_in, 2 * channels_out, 4),
                             nn.BatchNorm2d(2 * channels_out), nn.GLU(dim=1))
    return nn.Sequential(nn.ConvTranspose2d(channels_in, channels_out, 4), nn.BatchNorm2d(channels_out), nn.ReLU())


def _side_key(side: int) -> str:
    return f"{side}x{side}"


def _sle_key(source: int, target: int) -> str:
    return f"{_side_key(source)}_to_{_side_key(target)}"


class AttributeGANGenerator(nn.Module):
    """G(z, y): noise and attribute inputs -> upsampling blocks with efficient attention and skip-layer
    excitation -> RGB. ``labels`` are (B, A) attribute levels."""

    def __init__(self, condition: Condition, settings: AttributeGANSettings):
        super().__init__()
        s = settings
        self.condition = as_condition(condition)
        self.latent_dim, self.num_classes, self.image_size = s.latent_dim, self.condition.num_classes, s.image_size
        self.output_tanh = s.output_tanh

        self.noise_input = _input_stage(s.latent_dim, s.latent_dim, "glu")
        self.attribute_input = _input_stage(self.condition.dim, s.attribute_width, s.attribute_activation)

        inputs = upsampling_inputs(s.image_size)
        width = {4: s.latent_dim + s.attribute_width}
        width.update({2 * r: generator_width(2 * r, s.g_channels) for r in inputs})
        self.upsampling_blocks = nn.ModuleList(UpsamplingBlock(width[r], width[2 * r]) for r in inputs)
        self.attention = nn.ModuleDict({
            _side_key(r): AttentionBlock(width[r], s.attention_heads, s.attention_dim, s.attention_normalisation)
            for r in (s.attention_sizes if s.efficient_attention else ())})
        self.sle_targets = {src: dst for src, dst in s.sle_pairs}
        self.skip_layer_excitation = nn.ModuleDict({
            _sle_key(src, dst): SkipLayerExcitation(width[src], width[dst]) for src, dst in s.sle_pairs})
        self.to_rgb = nn.Conv2d(width[s.image_size], 3, 3, padding=1)
        kaiming_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attributes = self.condition.one_hot(labels, z.dtype).to(z.device)
        x = torch.cat([self.noise_input(z[:, :, None, None]), self.attribute_input(attributes[:, :, None, None])], 1)
        x = F.normalize(x, dim=1)
        gates: dict[int, torch.Tensor] = {}
        for block in self.upsampling_blocks:
            side = x.shape[-1]
            if _side_key(side) in self.attention:
                x = self.attention[_side_key(side)](x)
            x = block(x)
            side = x.shape[-1]
            if side in self.sle_targets:
                target = self.sle_targets[side]
                gates[target] = self.skip_layer_excitation[_sle_key(side, target)](x)
            if side in gates:
                x = x * gates.pop(side)
        x = self.to_rgb(x)
        return torch.tanh(x) if self.output_tanh else x


# --------------------------------------------------------------------------- discriminator


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Nearest resize (the code's F.interpolate default); identity at the same size."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="nearest")


class ProjectionHead(nn.Module):
    """Logits from 8x8 features: phi = LReLU(1x1 conv), psi = 4x4 conv (5x5 patch logits), and the
    attribute projection.

    ``feedforward`` ([A]): score = mean_patches psi(phi) + <FF(y), mean_positions phi>, shape (B, 1).
    ``elementwise`` (code): s = Linear(25, sum L)(psi patches), score = s + y (.) s, shape (B, sum L).
    """

    def __init__(self, channels: int, attribute_dim: int, projection: str, phi_conv: bool = True):
        super().__init__()
        self.projection = projection
        self.phi = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.LeakyReLU(LEAK)) if phi_conv else nn.Identity()
        self.psi = nn.Conv2d(channels, 1, 4)
        if projection == "feedforward":
            self.attribute_feedforward = nn.Linear(attribute_dim, channels, bias=False)
        else:
            self.patch_mix = nn.Linear(25, attribute_dim)

    def forward(self, h: torch.Tensor, attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, phi pooled over positions (B, C))."""
        phi = self.phi(h)
        patches = self.psi(phi).flatten(1)                     # (B, 25) at 8x8
        pooled = phi.mean(dim=(2, 3))
        if self.projection == "feedforward":
            score = patches.mean(dim=1) + (self.attribute_feedforward(attributes) * pooled).sum(dim=1)
            return score[:, None], pooled
        s = self.patch_mix(patches)
        return s + attributes * s, pooled


class LowResolutionBranch(nn.Module):
    """The code's second discriminator branch on the image resized to 32x32 ([A] does not describe it)."""

    def __init__(self, d_channels: int, attribute_dim: int, settings: AttributeGANSettings):
        super().__init__()
        c1, c2 = max(1, d_channels // 8), max(1, d_channels // 16)   # 64 and 32 at d_channels 512 (code)
        self.stem = nn.Conv2d(3, c1, 3, padding=1)
        self.down = DownBlock(c1, c2)
        attention = settings.efficient_attention
        args = (settings.attention_heads, settings.attention_dim, settings.attention_normalisation)
        self.attention = nn.ModuleDict({
            "32x32": ReZero(EfficientAttention(c1, *args)), "16x16": ReZero(EfficientAttention(c2, *args)),
        } if attention else {})
        # the code: adaptive pooling to 8x8, then the 4x4 conv directly (no 1x1 conv before it)
        self.head = ProjectionHead(c2, attribute_dim, settings.projection, phi_conv=False)

    def forward(self, image: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        h = self.stem(_resize(image, 32))
        if "32x32" in self.attention:
            h = self.attention["32x32"](h)
        h = self.down(h)
        if "16x16" in self.attention:
            h = self.attention["16x16"](h)
        return self.head(F.adaptive_avg_pool2d(h, 8), attributes)[0]


class AttributeGANDiscriminator(nn.Module):
    """D(x, y) with attribute projection, contrastive heads f and l, and two auxiliary decoders.

    ``forward(x, labels)`` returns a dict:

    * ``source`` (B,): the score, the sum over scales of each scale's mean score;
    * ``scores``: list of (B, n) scores per scale, what the hinge loss runs over (n = 1 for the
      feed-forward projection, sum L for the code's elementwise one);
    * ``class_logits``: None;
    * ``phi`` (B, C): the 8x8 logit features averaged over positions (the projection's phi);
    * ``features`` f(x) and ``proxy`` l(y), (B, contrastive_dim), L2-normalised, or None without CCL;
    * ``reconstruct``: a function computing the decoders only when called (only real images in the D
      step need them, as in the code), returning {"full": (recon, target), "quadrant": (recon,
      target), "quadrant_index": q}; q in 0..3 is row-major (0 top-left, 1 top-right, ...) and is
      drawn from torch's RNG at the call; targets are the image (quadrant) resized to the output.
    """

    def __init__(self, condition: Condition, settings: AttributeGANSettings):
        super().__init__()
        s = settings
        self.condition = as_condition(condition)
        self.num_classes, self.image_size = self.condition.num_classes, s.image_size
        width = {r: discriminator_width(r, s.d_channels) for r in [s.image_size // 2**k for k in range(1, 10)] if r >= 8}

        self.input_conv = nn.Sequential(Blur(), nn.Conv2d(3, width[s.image_size // 2], 4, stride=2, padding=1),
                                        nn.LeakyReLU(LEAK))
        inputs = down_block_inputs(s.image_size)
        self.down_blocks = nn.ModuleList(DownBlock(width[r], width[r // 2]) for r in inputs)
        d_sizes = [r for r in s.attention_sizes if r in inputs] if (s.efficient_attention and s.d_attention) else []
        self.attention = nn.ModuleDict({
            _side_key(r): AttentionBlock(width[r], s.attention_heads, s.attention_dim, s.attention_normalisation)
            for r in d_sizes})
        self.logits = ProjectionHead(width[8], self.condition.dim, s.projection)
        self.low_resolution = LowResolutionBranch(s.d_channels, self.condition.dim, s) if s.low_resolution_branch else None

        self.contrastive_side = s.image_size // 4
        if s.uses_contrastive:
            c = width[self.contrastive_side]
            self.feature_projector = nn.Sequential(
                nn.Conv2d(c, c, 1), nn.LeakyReLU(LEAK), nn.Conv2d(c, 1, 1), nn.Flatten(),
                nn.Linear(self.contrastive_side**2, s.contrastive_dim))
            self.attribute_projector = ConditionEmbedding(self.condition, s.contrastive_dim)
        else:
            self.feature_projector = self.attribute_projector = None

        self.full_side = min(128, s.image_size)
        self.quadrant_side = min(128, s.image_size // 2)
        self.decoder_8x8 = SimpleDecoder(width[8], int(math.log2(self.full_side // 8)))
        self.decoder_16x16_quadrant = (SimpleDecoder(width[16], int(math.log2(self.quadrant_side // 8)))
                                       if s.quadrant_decoder else None)
        kaiming_init(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        image = x
        attributes = self.condition.one_hot(labels, x.dtype).to(x.device)
        h = self.input_conv(x)
        maps = {h.shape[-1]: h}
        for block in self.down_blocks:
            key = _side_key(h.shape[-1])
            if key in self.attention:
                h = self.attention[key](h)
            h = block(h)
            maps[h.shape[-1]] = h
        score, phi = self.logits(maps[8], attributes)
        scores = [score]
        if self.low_resolution is not None:
            scores.append(self.low_resolution(image, attributes))
        source = sum(sc.mean(dim=1) for sc in scores)

        features = proxy = None
        if self.feature_projector is not None:
            features = F.normalize(self.feature_projector(maps[self.contrastive_side]), dim=1)
            proxy = F.normalize(self.attribute_projector(labels), dim=1)

        def reconstruct() -> dict:
            full = self.decoder_8x8(maps[8])
            out = {"full": (full, _resize(image, full.shape[-1]))}
            if self.decoder_16x16_quadrant is not None:
                q = int(torch.randint(4, (1,)))
                row, col = divmod(q, 2)
                part = maps[16][..., 8 * row:8 * row + 8, 8 * col:8 * col + 8]
                half = image.shape[-1] // 2
                image_part = image[..., half * row:half * row + half, half * col:half * col + half]
                recon = self.decoder_16x16_quadrant(part)
                out["quadrant"] = (recon, _resize(image_part, recon.shape[-1]))
                out["quadrant_index"] = q
            return out

        return {"source": source, "scores": scores, "class_logits": None, "phi": phi,
                "features": features, "proxy": proxy, "reconstruct": reconstruct}


# --------------------------------------------------------------------------- the registered family


def build_attributegan(gen_cfg: dict, condition: Condition | dict,
                       name: str = "<name>") -> tuple[AttributeGANGenerator, AttributeGANDiscriminator, AttributeGANObjective]:
    """The three parts from a ``generators.<name>`` entry and an attribute condition."""
    condition = as_condition(condition)
    settings = read_settings(gen_cfg, name)
    return (AttributeGANGenerator(condition, settings), AttributeGANDiscriminator(condition, settings),
            AttributeGANObjective(condition, settings))


@register_family("attributegan")
def attributegan_family(gen_cfg: dict, condition: Condition, name: str = "<name>") -> GANParts:
    """Family ``attributegan`` ([A]); keys and defaults in the module docstring; no DiffAug."""
    generator, discriminator, objective = build_attributegan(gen_cfg, condition, name)
    return GANParts(generator=generator, discriminator=discriminator, objective=objective, augment=None)


__all__ = [
    "AttributeGANGenerator", "AttributeGANDiscriminator", "AttributeGANObjective", "AttributeGANSettings",
    "EfficientAttention", "GlobalContext", "SkipLayerExcitation",
    "read_settings", "build_attributegan", "count_parameters", "PAPER_CONFIG", "DEMO_CONFIG", "DEFAULTS",
]
