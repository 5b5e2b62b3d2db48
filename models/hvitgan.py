"""HViTGAN: a pure-transformer conditional GAN for histopathology images (Li et al., [H]).

The words in this module follow the paper ([H] §2.1–2.2, Fig. 1).

Generator ([H] §2.1):
    "the latent vector noise z is concatenated with the one-hot label c and passed through a
    linear projection layer to generate embedding tokens", a b×b grid of tokens of dimension C.
    Four generator blocks follow, each "a class projection layer, an upsampling module, and four
    ViT encoders". Stage 1 upsamples ×2 "by cubic interpolation without dimension reduction".
    Stages 2–4 use a pixel shuffle that doubles the side and divides the channels by four. The
    third and fourth stages use "grid transformer encoders": self-attention only among the
    tokens of one window of the feature map.

Conditioned class projection ([H] §2.2, Eq. 1):
    skip-z splits z "into one chunk per stage" and concatenates each chunk to c. The class
    projection layer is a conditional layer normalisation, LN(a)·γ + β, with
    γ = W_γᵀ[c, z_i] and β = W_βᵀ[c, z_i].

Discriminator ([H] §2.1):
    four stages. "Each of the first three includes a ViT encoder and an average pooling layer":
    ViT encoders (one by default, as the paper's wording says; TG's d_depth is 3) and then
    2×2 average pooling. Between stages, coarser patches of the same image (2p, then 4p pixels) are embedded and
    concatenated to the pooled tokens ("multi-scale pyramid"). A class token and a source token
    are then put in front of the sequence and go through a fourth stage of two ViT encoders.
    The class head gives K logits; the source (critic) head gives one score and sees no
    condition ([H] §2.4).

Choices the paper leaves open (model notes §1.1–1.2; *(TG)* = as TransGAN does):
    * All of z goes into the input projection together with c, because the paper says the
      latent vector z is concatenated with c there. z is also split into four equal chunks,
      one per stage, so ``latent_dim`` must be divisible by 4. (BigGAN instead sends only
      chunk 0 to the input.)
    * There is one class projection layer per generator block, at its start, as drawn in
      Fig. 1. The LNs inside the ViT encoders are plain. γ is parametrised as
      1 + W_γᵀ[c, z_i] and the linear maps have no bias. W_γ and W_β start small
      (N(0, 0.02²)), so at initialisation the layer is close to a plain LN (γ ≈ 1, β ≈ 0) but
      already depends on c and z_i.
    * ``class_projection=False`` is the CP ablation and MedViTGAN. The class projection layer
      becomes a plain affine LayerNorm, there is no skip-z, and the label enters only at the
      input projection.
    * Each stage adds a learned absolute position embedding after upsampling *(TG)*. TG's
      relative-position bias is not used.
    * Encoders are pre-LN, with MLP ratio 4 and GELU *(TG)*.
    * The output is a per-token linear layer (a 1×1 convolution) to RGB *(TG)*, followed by
      tanh. TG has no tanh, but the training contract wants images in [-1, 1], and tanh keeps
      gradients where a clamp would cut them.
    * Windows. The paper uses 32×32 in stage 3 and 16×16 in stage 4. At 96 px (b = 6) the
      stages are 12/24/48/96 px and 32 does not divide 48. The default is therefore
      ``windows = [None, None, 4·b, 16]``: stage 3 gets 2×2 windows of half its side, as the
      paper's 32 does on a 64-px stage 3 of a 128-px image, and stage 4 keeps the paper's 16.
      At 96 px this gives 24 and 16; at 128 px it is exactly the paper's 32 and 16; at 32 px
      it gives 8 and 16. ``None`` (or 0) means global attention. Every window must divide its
      stage's side.
    * Generator attention uses PyTorch's fused scaled-dot-product kernel to save memory. The
      discriminator uses the explicit softmax(QKᵀ/√d)V, because the WGAN-GP gradient penalty
      differentiates D twice and the fused kernels have no double backward; with
      ``gp_weight: 0`` it is fused too. ``fused_attention: false`` makes every attention explicit.
    * Discriminator patch embeddings are one linear layer per flattened p×p×3 patch. That is
      the paper's "MLP layer", built the way TG builds it (a convolution with kernel = stride =
      p). Their widths are 3D/4, D/8 and D/8 for patches p, 2p and 4p *(TG)*, so the
      discriminator stages have widths 3D/4, 7D/8 and D.
    * At 96 px the discriminator's first stage has (96/p)² tokens (48² for p = 2). By default
      it attends within 16×16 windows whenever its side is a multiple of 16 larger than 16.
      Later stages are global. This choice is about cost; the paper does not say.

Sizes: ``image_size = 16·b``. The stages run at 2b, 4b, 8b and 16b with widths C, C/4, C/16
and C/64, so C must be a multiple of 64. ``PAPER_CONFIG`` uses TG's gf_dim C = 1024, giving 16
channels at 96 px. ``DEMO_CONFIG`` is a 32-px model that trains on two CPU cores.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from histaug.utils import PipelineError

from .diffaug import PAPER_POLICY, DiffAugment, parse_policy
from .hvitgan_objective import HViTGANObjective
from .registry import GANParts, register_family
from .vit_layers import ConditionalLayerNorm, MultiHeadSelfAttention, TransformerEncoder, init_vit_weights, map_to_tokens, tokens_to_map

N_STAGES = 4
N_D_PATCH_SCALES = 3

# --------------------------------------------------------------------------- configuration

#: Keys read by :func:`build_hvitgan` and their defaults. ``None`` values are derived from
#: ``image_size`` (see the module docstring).
HVITGAN_DEFAULTS: dict[str, Any] = {
    "image_size": 96,        # output side in pixels; must be 16·bottom
    "latent_dim": 256,       # size of z (split into 4 skip-z chunks)
    "embed_dim": 1024,       # C, the token width of the first stage
    "bottom": None,          # b, side of the first token grid; None = image_size // 16
    "g_depth": 4,            # ViT encoders per generator stage (int or 4 ints); [H]: 4
    "heads": 4,              # attention heads per generator stage (int or 4 ints)
    "windows": None,         # grid-attention window per stage (4 entries, None = global)
    "mlp_ratio": 4.0,        # MLP hidden width / token width (G and D)
    "class_projection": True,  # CLN + skip-z (False = CP ablation / MedViTGAN)
    "d_embed_dim": 384,      # D, the token width of the last discriminator stages
    "d_depth": 1,            # ViT encoders in each of discriminator stages 1-3 (int or 3 ints); [H]: "a ViT encoder"
    "d_final_depth": 2,      # encoders in stage 4, after the class/source tokens; [H]: 2
    "d_heads": 4,            # attention heads in the discriminator
    "d_windows": None,       # window per discriminator stage 1-3 (3 entries, None = global)
    "patch_size": 2,         # p; the discriminator also embeds 2p and 4p patches
}

#: Paper-size model at 96 px: TransGAN widths (gf_dim 1024, df_dim 384, 4 heads), [H]'s four
#: encoders per generator stage, and one encoder per discriminator stage 1-3 plus two in stage 4.
PAPER_CONFIG: dict[str, Any] = dict(HVITGAN_DEFAULTS)

#: Small model for 32-px CPU runs: a few hundred steps take a couple of minutes on 2 cores.
#: Patches of 4/8/16 px keep the discriminator's first stage at 8×8 tokens.
DEMO_CONFIG: dict[str, Any] = {
    **HVITGAN_DEFAULTS,
    "image_size": 32,
    "latent_dim": 64,
    "embed_dim": 256,
    "g_depth": 1,
    "heads": [4, 4, 2, 1],
    "d_embed_dim": 64,
    "d_heads": 2,
    "patch_size": 4,
}


def _per_stage(value: Any, n: int, key: str) -> list:
    """Broadcast an int (or None) to ``n`` stages, or check a list has ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise PipelineError(f"config key {key!r} has {len(value)} entries; give one per stage ({n}) or a single value")
        return list(value)
    return [value] * n


def _check_positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"config key {key!r} must be a positive integer, got {value!r}")
    return value


def _check_window(window: Any, side: int, key: str, stage: int) -> int | None:
    """Return a window side that tiles a ``side``×``side`` map, or None for global attention."""
    if window in (None, 0):
        return None
    window = _check_positive_int(window, key)
    if side % window:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        raise PipelineError(
            f"config key {key!r}: window {window} of stage {stage} does not divide its {side}×{side} "
            f"feature map; use one of {divisors} or null for global attention"
        )
    return window


def default_generator_windows(bottom: int) -> list[int | None]:
    """Default grid-attention windows: global, global, half of stage 3's side, 16 (see module docstring)."""
    return [None, None, 4 * bottom, 16]


def default_discriminator_windows(first_side: int) -> list[int | None]:
    """16×16 windows in discriminator stage 1 when its side is a larger multiple of 16, else global."""
    first = 16 if first_side > 16 and first_side % 16 == 0 else None
    return [first, None, None]



# --------------------------------------------------------------------------- generator


class GeneratorStage(nn.Module):
    """One generator block: class projection layer -> ×2 upsampling -> ViT encoders.

    ``upsample="bicubic"`` keeps the width (stage 1). ``"pixel_shuffle"`` divides it by four
    (stages 2–4). ``cond_dim=None`` makes the class projection layer a plain LayerNorm (the CP
    ablation).
    """

    def __init__(
        self,
        in_dim: int,
        in_side: int,
        upsample: str,
        depth: int,
        heads: int,
        window: int | None,
        mlp_ratio: float,
        cond_dim: int | None,
    ):
        super().__init__()
        if upsample not in ("bicubic", "pixel_shuffle"):
            raise ValueError(f"unknown upsampling {upsample!r}")
        self.upsample = upsample
        self.in_dim = in_dim
        self.out_dim = in_dim if upsample == "bicubic" else in_dim // 4
        self.out_side = 2 * in_side
        self.conditional = cond_dim is not None
        self.class_projection: nn.Module = (
            ConditionalLayerNorm(in_dim, cond_dim) if cond_dim is not None else nn.LayerNorm(in_dim)
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, self.out_side**2, self.out_dim))
        self.encoders = nn.ModuleList(
            TransformerEncoder(self.out_dim, heads, mlp_ratio, window=window, fused=True) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int], cond: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.class_projection(x, cond) if self.conditional else self.class_projection(x)
        fmap = tokens_to_map(x, size)
        if self.upsample == "bicubic":
            fmap = F.interpolate(fmap, scale_factor=2, mode="bicubic", align_corners=False)
        else:
            fmap = F.pixel_shuffle(fmap, 2)
        size = (fmap.shape[-2], fmap.shape[-1])
        x = map_to_tokens(fmap) + self.pos_embed
        for encoder in self.encoders:
            x = encoder(x, size)
        return x, size


class HViTGANGenerator(nn.Module):
    """HViTGAN generator: [z, one-hot c] -> linear -> b×b tokens -> 4 generator blocks -> RGB.

    ``forward(z, labels)`` takes z (B, latent_dim) and labels (B,) long and returns images
    (B, 3, image_size, image_size) in [-1, 1]. With ``return_stages=True`` it also returns
    each stage's output as a (B, C_i, H_i, W_i) feature map.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int = 96,
        latent_dim: int = 256,
        embed_dim: int = 1024,
        bottom: int | None = None,
        depth: int | Sequence[int] = 4,
        heads: int | Sequence[int] = 4,
        windows: Sequence[int | None] | None = None,
        mlp_ratio: float = 4.0,
        class_projection: bool = True,
    ):
        super().__init__()
        num_classes = _check_positive_int(num_classes, "num_classes")
        image_size = _check_positive_int(image_size, "image_size")
        latent_dim = _check_positive_int(latent_dim, "latent_dim")
        embed_dim = _check_positive_int(embed_dim, "embed_dim")
        if image_size % 16:
            raise PipelineError(
                f"config key 'image_size'={image_size}: the HViTGAN generator doubles the side in 4 stages, "
                "so image_size must be a multiple of 16 (e.g. 32, 64, 96, 128)"
            )
        if bottom is None:
            bottom = image_size // 16
        bottom = _check_positive_int(bottom, "bottom")
        if 16 * bottom != image_size:
            raise PipelineError(
                f"config keys 'bottom'={bottom} and 'image_size'={image_size} disagree: 4 doublings give "
                f"{16 * bottom} px; set bottom to {image_size // 16} or leave it null"
            )
        if embed_dim % 64:
            raise PipelineError(
                f"config key 'embed_dim'={embed_dim}: three pixel shuffles divide it by 64, so it must be a "
                "multiple of 64 (e.g. 256, 512, 1024)"
            )
        if class_projection and latent_dim % N_STAGES:
            raise PipelineError(
                f"config key 'latent_dim'={latent_dim}: skip-z splits z into {N_STAGES} equal chunks, so it "
                f"must be divisible by {N_STAGES}"
            )
        depths = [_check_positive_int(d, "g_depth") for d in _per_stage(depth, N_STAGES, "g_depth")]
        head_counts = [_check_positive_int(h, "heads") for h in _per_stage(heads, N_STAGES, "heads")]
        if windows is None:
            windows = default_generator_windows(bottom)
        windows = _per_stage(windows, N_STAGES, "windows")

        self.num_classes = num_classes
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.embed_dim = embed_dim
        self.bottom = bottom
        self.class_projection = bool(class_projection)
        self.chunk_dim = latent_dim // N_STAGES if self.class_projection else 0
        cond_dim = num_classes + self.chunk_dim if self.class_projection else None

        self.input_proj = nn.Linear(latent_dim + num_classes, bottom * bottom * embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, bottom * bottom, embed_dim))

        stages = []
        self.windows: list[int | None] = []
        dim, side = embed_dim, bottom
        for i in range(N_STAGES):
            upsample = "bicubic" if i == 0 else "pixel_shuffle"
            out_dim = dim if i == 0 else dim // 4
            if out_dim % head_counts[i]:
                raise PipelineError(
                    f"config key 'heads': stage {i + 1} has width {out_dim}, which {head_counts[i]} heads do not "
                    f"divide (stage widths are {[embed_dim, embed_dim // 4, embed_dim // 16, embed_dim // 64]}); "
                    "give one head count per stage"
                )
            window = _check_window(windows[i], 2 * side, "windows", i + 1)
            self.windows.append(window)
            stage = GeneratorStage(dim, side, upsample, depths[i], head_counts[i], window, mlp_ratio, cond_dim)
            stages.append(stage)
            dim, side = stage.out_dim, stage.out_side
        self.stages = nn.ModuleList(stages)
        self.to_rgb = nn.Linear(dim, 3)

        self.apply(init_vit_weights)
        for p in [self.pos_embed, *(s.pos_embed for s in self.stages)]:
            nn.init.trunc_normal_(p, std=0.02)

    def stage_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each stage's output."""
        return [(s.out_dim, s.out_side, s.out_side) for s in self.stages]

    def stage_conditions(self, z: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor | None]:
        """Skip-z: the inputs [c, z_i] of each stage's class projection layer (None without CP)."""
        if not self.class_projection:
            return [None] * N_STAGES
        c = F.one_hot(labels, self.num_classes).to(z.dtype)
        return [torch.cat([c, chunk], dim=1) for chunk in z.split(self.chunk_dim, dim=1)]

    def _check_inputs(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise PipelineError(f"generator expects z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if labels.shape != (z.shape[0],) or labels.dtype != torch.long:
            raise PipelineError(f"generator expects labels of shape ({z.shape[0]},) and dtype long, got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise PipelineError(f"class labels must lie in [0, {self.num_classes - 1}], got {labels.min().item()}..{labels.max().item()}")

    def forward(self, z: torch.Tensor, labels: torch.Tensor, return_stages: bool = False):
        self._check_inputs(z, labels)
        c = F.one_hot(labels, self.num_classes).to(z.dtype)
        x = self.input_proj(torch.cat([z, c], dim=1)).reshape(z.shape[0], self.bottom**2, self.embed_dim)
        x = x + self.pos_embed
        size = (self.bottom, self.bottom)
        stage_maps = []
        for stage, cond in zip(self.stages, self.stage_conditions(z, labels)):
            x, size = stage(x, size, cond)
            if return_stages:
                stage_maps.append(tokens_to_map(x, size))
        image = torch.tanh(tokens_to_map(self.to_rgb(x), size))
        return (image, stage_maps) if return_stages else image


# --------------------------------------------------------------------------- discriminator


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) image -> (B, (H/p)·(W/p), p·p·C) flattened non-overlapping patches."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def avg_pool_tokens(x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """2×2 average pooling of a token grid."""
    fmap = F.avg_pool2d(tokens_to_map(x, size), 2)
    return map_to_tokens(fmap), (fmap.shape[-2], fmap.shape[-1])


class HViTGANDiscriminator(nn.Module):
    """HViTGAN discriminator with a class head and a source (critic) head ([H] §2.1, §2.4).

    ``forward(x, labels=None)`` takes images (B, 3, image_size, image_size) and returns
    ``{"source": (B,) critic scores, "class_logits": (B, K)}``. ``labels`` is accepted so the
    discriminator fits the training loop's ``D(x, labels)`` call, and is ignored: the critic
    involves no conditioned information ([H] §2.4).
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int = 96,
        patch_size: int = 2,
        embed_dim: int = 384,
        depth: int | Sequence[int] = 3,
        final_depth: int = 2,
        heads: int = 4,
        windows: Sequence[int | None] | None = None,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        num_classes = _check_positive_int(num_classes, "num_classes")
        image_size = _check_positive_int(image_size, "image_size")
        patch_size = _check_positive_int(patch_size, "patch_size")
        embed_dim = _check_positive_int(embed_dim, "d_embed_dim")
        final_depth = _check_positive_int(final_depth, "d_final_depth")
        heads = _check_positive_int(heads, "d_heads")
        if image_size % (8 * patch_size):
            raise PipelineError(
                f"config keys 'image_size'={image_size}, 'patch_size'={patch_size}: the discriminator embeds "
                f"patches of p, 2p and 4p and pools three times, so image_size must be a multiple of 8·p = {8 * patch_size}"
            )
        if embed_dim % 8:
            raise PipelineError(f"config key 'd_embed_dim'={embed_dim} must be a multiple of 8 (patch widths 3D/4, D/8, D/8)")
        depths = [_check_positive_int(d, "d_depth") for d in _per_stage(depth, N_D_PATCH_SCALES, "d_depth")]
        side = image_size // patch_size
        if windows is None:
            windows = default_discriminator_windows(side)
        windows = _per_stage(windows, N_D_PATCH_SCALES, "d_windows")

        self.num_classes = num_classes
        self.image_size = image_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        patch_dims = [embed_dim - 2 * (embed_dim // 8), embed_dim // 8, embed_dim // 8]
        stage_dims = [sum(patch_dims[: i + 1]) for i in range(N_D_PATCH_SCALES)]
        for i, d in enumerate(stage_dims):
            if d % heads:
                raise PipelineError(
                    f"config key 'd_heads'={heads} does not divide discriminator stage {i + 1} width {d} "
                    f"(stage widths {stage_dims}); pick a head count dividing all of them"
                )

        self.patch_embeds = nn.ModuleList(
            nn.Linear(3 * (patch_size * 2**i) ** 2, patch_dims[i]) for i in range(N_D_PATCH_SCALES)
        )
        self.pos_embeds = nn.ParameterList()
        stages = []
        self.windows: list[int | None] = []
        for i in range(N_D_PATCH_SCALES):
            window = _check_window(windows[i], side, "d_windows", i + 1)
            self.windows.append(window)
            self.pos_embeds.append(nn.Parameter(torch.zeros(1, side * side, stage_dims[i])))
            stages.append(
                nn.ModuleList(
                    TransformerEncoder(stage_dims[i], heads, mlp_ratio, window=window, fused=False)
                    for _ in range(depths[i])
                )
            )
            side //= 2
        self.stages = nn.ModuleList(stages)
        self.class_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.source_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.final_encoders = nn.ModuleList(
            TransformerEncoder(embed_dim, heads, mlp_ratio, window=None, fused=False) for _ in range(final_depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.class_head = nn.Linear(embed_dim, num_classes)
        self.source_head = nn.Linear(embed_dim, 1)

        self.apply(init_vit_weights)
        for p in [*self.pos_embeds, self.class_token, self.source_token]:
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1:] != (3, self.image_size, self.image_size):
            raise PipelineError(
                f"discriminator expects images of shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        side = self.image_size // self.patch_size
        size = (side, side)
        tokens = None
        for i in range(N_D_PATCH_SCALES):
            patches = self.patch_embeds[i](patchify(x, self.patch_size * 2**i))
            tokens = patches if tokens is None else torch.cat([tokens, patches], dim=-1)
            tokens = tokens + self.pos_embeds[i]
            for encoder in self.stages[i]:
                tokens = encoder(tokens, size)
            tokens, size = avg_pool_tokens(tokens, size)
        b = x.shape[0]
        tokens = torch.cat([self.class_token.expand(b, -1, -1), self.source_token.expand(b, -1, -1), tokens], dim=1)
        for encoder in self.final_encoders:
            tokens = encoder(tokens)
        tokens = self.norm(tokens)
        return {
            "source": self.source_head(tokens[:, 1]).squeeze(-1),
            "class_logits": self.class_head(tokens[:, 0]),
        }


# --------------------------------------------------------------------------- factory


def resolve_config(cfg: dict) -> dict[str, Any]:
    """The model keys of ``cfg`` over :data:`HVITGAN_DEFAULTS`; other keys (training settings) are ignored."""
    return {**HVITGAN_DEFAULTS, **{k: cfg[k] for k in HVITGAN_DEFAULTS if k in cfg}}


def build_hvitgan(cfg: dict, num_classes: int) -> tuple[HViTGANGenerator, HViTGANDiscriminator]:
    """Build the HViTGAN generator and discriminator from a generator config entry.

    Keys (defaults in :data:`HVITGAN_DEFAULTS`): ``image_size``, ``latent_dim``, ``embed_dim``
    (C), ``bottom`` (b), ``g_depth``, ``heads``, ``windows``, ``mlp_ratio``,
    ``class_projection``, ``d_embed_dim`` (D), ``d_depth``, ``d_final_depth``, ``d_heads``,
    ``d_windows``, ``patch_size``.
    """
    p = resolve_config(cfg)
    generator = HViTGANGenerator(
        num_classes,
        image_size=p["image_size"],
        latent_dim=p["latent_dim"],
        embed_dim=p["embed_dim"],
        bottom=p["bottom"],
        depth=p["g_depth"],
        heads=p["heads"],
        windows=p["windows"],
        mlp_ratio=p["mlp_ratio"],
        class_projection=p["class_projection"],
    )
    discriminator = HViTGANDiscriminator(
        num_classes,
        image_size=p["image_size"],
        patch_size=p["patch_size"],
        embed_dim=p["d_embed_dim"],
        depth=p["d_depth"],
        final_depth=p["d_final_depth"],
        heads=p["d_heads"],
        windows=p["d_windows"],
        mlp_ratio=p["mlp_ratio"],
    )
    # Fused scaled-dot-product attention wherever no double backward runs through it: the generator
    # always, the discriminator only without a gradient penalty. fused_attention: false writes out
    # softmax(QKᵀ/√d)V everywhere (a switch for comparisons; the same function up to rounding).
    fused = bool(cfg.get("fused_attention", True))
    set_fused_attention(generator, fused)
    set_fused_attention(discriminator, fused and float(cfg.get("gp_weight", 10.0)) == 0.0)
    return generator, discriminator


def set_fused_attention(module: nn.Module, fused: bool) -> None:
    """Switch every self-attention of ``module`` between the fused kernel and the explicit form."""
    for m in module.modules():
        if isinstance(m, MultiHeadSelfAttention):
            m.fused = bool(fused)


def build_medvitgan(cfg: dict, num_classes: int) -> tuple[HViTGANGenerator, HViTGANDiscriminator]:
    """MedViTGAN: the same GAN without conditioned class projection (no CLN, no skip-z).

    The auxiliary class head is kept.
    """
    if cfg.get("class_projection") is True:
        raise PipelineError("MedViTGAN has no class projection; remove 'class_projection: true' or use family hvitgan")
    return build_hvitgan({**cfg, "class_projection": False}, num_classes)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

# --------------------------------------------------------------------------- registered families


def diffaug_from_config(gen_cfg: dict, gen_name: str = "<name>") -> DiffAugment | None:
    """DiffAug ([H] §3.2) from ``diffaug`` (default :data:`PAPER_POLICY`) and ``diffaug_strength``.

    An empty or null ``diffaug`` turns augmentation off (returns None).
    """
    policy = gen_cfg.get("diffaug", PAPER_POLICY)
    strength = gen_cfg.get("diffaug_strength", 1.0)
    try:
        if not parse_policy(policy):
            return None
        return DiffAugment(policy, strength=strength)
    except PipelineError as exc:
        raise PipelineError(f"config keys generators.{gen_name}.diffaug / diffaug_strength: {exc}") from None


def _vit_gan_parts(build, gen_cfg: dict, num_classes: int, name: str, default_weighing: str) -> GANParts:
    try:
        generator, discriminator = build(gen_cfg, num_classes)
    except PipelineError as exc:
        raise PipelineError(f"generators.{name}: {exc}") from None
    return GANParts(
        generator=generator,
        discriminator=discriminator,
        objective=HViTGANObjective.from_config(gen_cfg, name, default_weighing),
        augment=diffaug_from_config(gen_cfg, name),
    )


@register_family("hvitgan")
def hvitgan_family(gen_cfg: dict, num_classes: int, name: str = "<name>") -> GANParts:
    """Family ``hvitgan``: the HViTGAN generator and discriminator, trained by the adversarial loop.

    Model keys: those of :func:`build_hvitgan` (``class_projection`` defaults to true). Loss and
    augmentation keys: ``weighing`` (default ``"hvitgan"``, [H] Eq. 9), ``gp_weight`` (λ,
    default 10), ``drift_weight`` (default 0), ``diffaug`` (default the paper's policy: color,
    translation, cutout, scaling, rotation; empty = off) and ``diffaug_strength`` (default 1).
    Loop keys (``n_critic``, ``lr``, ``betas``, ``ema_decay``, ``batch_size``, ...) are read by
    the loop; [H] §3.2 uses Adam with β = (0, 0.99), lr 1e-4 and batch 12, TransGAN n_critic 4.
    """
    return _vit_gan_parts(build_hvitgan, gen_cfg, num_classes, name, default_weighing="hvitgan")


@register_family("medvitgan")
def medvitgan_family(gen_cfg: dict, num_classes: int, name: str = "<name>") -> GANParts:
    """Family ``medvitgan``: the MedViTGAN baseline of [H] Table 1.

    [H] does not define MedViTGAN. This family assumes it is the same pure-ViT conditional GAN
    with an auxiliary classifier but without HViTGAN's additions: no conditioned class
    projection (``class_projection`` is forced to false: plain LayerNorm, no skip-z, the label
    enters only at the input projection; setting it to true is an error) and, by default, no
    multi-loss weighing (``weighing`` defaults to ``"none"``: the plain sum L_S + L2 + L3 and
    −E[D_s] + L1). The WGAN-GP loss, the discriminator with its class and source heads, DiffAug
    and every other key are as in family ``hvitgan``.
    """
    return _vit_gan_parts(build_medvitgan, gen_cfg, num_classes, name, default_weighing="none")
