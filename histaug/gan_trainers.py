"""One training step per generator family type: the adversarial step and the VAE step.

A trainer owns the networks of one family (:class:`models.registry.GANParts`), their optimisers,
AMP scalers and the EMA copy of the generator, and exposes what the shared loop in
:mod:`histaug.train_generator` needs:

* ``step(next_batch) -> terms``: one generator update (for adversarial families after
  ``n_critic`` discriminator updates). ``terms`` are 0-d tensors: the loss terms and the gradient
  norms of each update (``d_grad_norm``, ``g_grad_norm``; ``grad_norm`` for the VAE), which the
  divergence guard checks. With fp16 the GradScaler skips steps with infinite gradients by design,
  so gradient norms are then not reported (losses and weights are still checked).
* ``networks()``: every network whose weights must stay finite (name -> module);
* ``set_lr_scale(s)``: every learning rate = configured rate x s (automatic retries after a
  divergence);
* ``export_generator()``, ``state_dict()``, ``load_state_dict()``.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from models.registry import GANParts, require

from .distributed import average_gradients, broadcast_from_main, convert_sync_batchnorm, per_sample
from .guard import grad_norm
from .speed import compile_enabled, compiled
from .losses import AdversarialObjective, vae_loss
from .utils import PipelineError, autocast, get_device

# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a network's weights: θ_ema ← β θ_ema + (1 - β) θ (buffers copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def _make_ema(gen_cfg: dict, model: nn.Module, gen_name: str) -> EMA | None:
    decay = gen_cfg.get("ema_decay")
    if decay in (None, 0, 0.0):
        return None
    if not 0.0 < float(decay) < 1.0:
        raise PipelineError(f"config key generators.{gen_name}.ema_decay={decay!r}: expected a number in (0, 1) or null")
    return EMA(model, float(decay))


def _betas(gen_cfg: dict, gen_name: str, default: tuple[float, float]) -> tuple[float, float]:
    betas = gen_cfg.get("betas", default)
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise PipelineError(f"config key generators.{gen_name}.betas={betas!r}: expected two numbers, e.g. [0.0, 0.9]")
    return float(betas[0]), float(betas[1])


class _Optimised:
    """Optimisers with their configured learning rates, scalable as a whole (divergence retries)."""

    optimizers: tuple[torch.optim.Optimizer, ...] = ()

    def _remember_lrs(self) -> None:
        self._base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self.lr_scale = 1.0

    def set_lr_scale(self, scale: float) -> None:
        for opt, base in zip(self.optimizers, self._base_lrs):
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * scale
        self.lr_scale = float(scale)

    def learning_rates(self) -> list[float]:
        return [g["lr"] for opt in self.optimizers for g in opt.param_groups]


def _update(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list) -> torch.Tensor | None:
    """Backward, gradients averaged over the processes (several GPUs), optimiser step; returns the
    gradient norm (None under fp16 loss scaling)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    average_gradients(params)
    norm = None if scaler.is_enabled() else grad_norm(params)
    scaler.step(opt)
    scaler.update()
    return norm


def _placed(model: nn.Module, device: torch.device, fmt: torch.memory_format) -> nn.Module:
    """``model`` in training mode on ``device`` in memory format ``fmt``; with several processes its
    BatchNorm layers synchronised and its weights and buffers rank 0's (:mod:`histaug.distributed`)."""
    model = convert_sync_batchnorm(model, device).to(device=device, memory_format=fmt).train()
    broadcast_from_main([model], parameters=True)
    return model


# --------------------------------------------------------------------------- per-family steps


class AdversarialTrainer(_Optimised):
    """One adversarial step: ``n_critic`` D updates, one G update, EMA update."""

    kind = "adversarial"

    def __init__(self, gen_name: str, gen_cfg: dict, parts: GANParts, device, precision: str, channels_last: bool,
                 compile_networks: bool = False):
        self.device, self.precision = torch.device(device), precision
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.G = _placed(parts.generator, self.device, fmt)
        self.generate = compiled(self.G, compile_networks)  # the discriminator is never compiled: penalties
        # differentiate it twice, which compiled graphs cannot
        self.D = _placed(parts.discriminator, self.device, fmt)
        self.objective = (parts.objective or AdversarialObjective.from_config(gen_cfg, gen_name)).to(self.device)
        broadcast_from_main([self.objective], parameters=True)
        self.augment = parts.augment
        self.n_critic = int(gen_cfg.get("n_critic", 1))
        if self.n_critic < 1:
            raise PipelineError(f"config key generators.{gen_name}.n_critic={self.n_critic}: must be >= 1")
        self.batch_size = int(gen_cfg["batch_size"])
        lr = float(require(gen_cfg, "lr", gen_name, (int, float)))
        betas = _betas(gen_cfg, gen_name, (0.0, 0.9))
        self.g_params = list(self.G.parameters()) + list(self.objective.generator_parameters())
        self.d_params = list(self.D.parameters()) + list(self.objective.discriminator_parameters())
        self.opt_g = torch.optim.Adam(self.g_params, lr=float(gen_cfg.get("g_lr", lr)), betas=betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=float(gen_cfg.get("d_lr", lr)), betas=betas)
        self.optimizers = (self.opt_g, self.opt_d)
        self._remember_lrs()
        scaler_on = precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.ema = _make_ema(gen_cfg, self.G, gen_name)
        self.images_per_step = self.n_critic * self.batch_size  # the global batch, over all processes

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        if self.augment is not None:
            x = self.augment(x)
        return self.D(x, labels)

    def _latent(self, n: int) -> torch.Tensor:
        return per_sample(lambda s: torch.randn(s, device=self.device), (n, self.G.latent_dim))

    def step(self, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> dict:
        d_terms: dict[str, torch.Tensor] = {}
        for _ in range(self.n_critic):
            real, labels = next_batch()
            with torch.no_grad(), autocast(self.device, self.precision):
                fake = self.generate(self._latent(real.shape[0]), labels)
            with autocast(self.device, self.precision):
                d_loss, terms = self.objective.discriminator_loss(self.discriminate, real, fake.float(), labels)
            norm = _update(d_loss, self.opt_d, self.scaler_d, self.d_params)
            if norm is not None:
                terms = {**terms, "d_grad_norm": norm}
            for k, v in terms.items():
                d_terms[k] = d_terms.get(k, 0.0) + v / self.n_critic

        self.D.requires_grad_(False)
        try:
            with autocast(self.device, self.precision):
                fake = self.generate(self._latent(labels.shape[0]), labels)
                g_loss, g_terms = self.objective.generator_loss(self.discriminate, fake, labels)
            norm = _update(g_loss, self.opt_g, self.scaler_g, self.g_params)
        finally:
            self.D.requires_grad_(True)
        if norm is not None:
            g_terms = {**g_terms, "g_grad_norm": norm}
        broadcast_from_main([self.G, self.D, self.objective])
        if self.ema is not None:
            self.ema.update(self.G)
        return {**d_terms, **g_terms}

    def export_generator(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.G

    def networks(self) -> dict[str, nn.Module]:
        nets = {"generator": self.G, "discriminator": self.D, "loss weights": self.objective}
        if self.ema is not None:
            nets["EMA generator"] = self.ema.model
        return nets

    def state_dict(self) -> dict:
        state = {
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "objective": self.objective.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.objective.load_state_dict(state["objective"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


class VAETrainer(_Optimised):
    """One VAE step: Adam on Σ(x̂ - x)² + kl_weight · KL."""

    kind = "vae"

    def __init__(self, gen_name: str, gen_cfg: dict, parts: GANParts, device, precision: str, channels_last: bool,
                 compile_networks: bool = False):
        self.device, self.precision = torch.device(device), precision
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = _placed(parts.generator, self.device, fmt)
        if not hasattr(self.model, "reconstruct"):
            raise TypeError(f"family {parts.family!r}: the VAE loop needs a model with reconstruct(x, labels)")
        self.reconstruct = torch.compile(self.model.reconstruct) if compile_networks else self.model.reconstruct
        self.kl_weight = float(gen_cfg.get("kl_weight", 1.0))
        self.batch_size = int(gen_cfg["batch_size"])
        lr = float(require(gen_cfg, "lr", gen_name, (int, float)))
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=_betas(gen_cfg, gen_name, (0.9, 0.999)))
        self.optimizers = (self.opt,)
        self._remember_lrs()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.ema = _make_ema(gen_cfg, self.model, gen_name)
        self.images_per_step = self.batch_size

    def step(self, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> dict:
        real, labels = next_batch()
        with autocast(self.device, self.precision):
            x_hat, mu, logvar = self.reconstruct(real, labels)
            loss, terms = vae_loss(x_hat, real, mu, logvar, self.kl_weight)
        norm = _update(loss, self.opt, self.scaler, self.params)
        broadcast_from_main([self.model])
        if self.ema is not None:
            self.ema.update(self.model)
        return terms if norm is None else {**terms, "grad_norm": norm}

    def export_generator(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def networks(self) -> dict[str, nn.Module]:
        nets = {"VAE": self.model}
        if self.ema is not None:
            nets["EMA VAE"] = self.ema.model
        return nets

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


TRAINER_CLASSES = {"adversarial": AdversarialTrainer, "vae": VAETrainer}


def build_trainer(gen_name: str, gen_cfg: dict, parts: GANParts, compute: dict | None = None):
    """The step object of ``parts.trainer`` on the device/precision/memory format from ``compute``."""
    device, precision, channels_last = compute_settings(compute or {})
    return TRAINER_CLASSES[parts.trainer](gen_name, gen_cfg, parts, device, precision, channels_last,
                                          compile_enabled(compute, "generators"))


def compute_settings(compute: dict) -> tuple[torch.device, str, bool]:
    """(device, generator precision, channels_last) from the config's ``compute`` section."""
    device = get_device(compute)
    precision = compute.get("precision", "fp32")
    if isinstance(precision, dict):
        precision = precision.get("generators", "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise PipelineError(f"config key compute.precision.generators={precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise PipelineError("config key compute.precision.generators='fp16' needs a CUDA device; use bf16 or fp32")
    return device, precision, bool(compute.get("channels_last", False))
