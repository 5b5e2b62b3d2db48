"""Registry of generator families.

A *family* is a named builder that turns one entry of the config's ``generators:`` section
(``gen_cfg``) into the networks that family trains, bundled as :class:`GANParts`, plus the name
of the training loop that drives them:

* ``"adversarial"`` -- a generator and a discriminator trained by alternating updates
  (``histaug.train_generator.train_adversarial``). The loop is the same for every adversarial
  family; what differs between families is carried by the parts themselves: the networks, the
  loss hooks (``GANParts.objective``, default :class:`histaug.losses.AdversarialObjective`) and an
  optional differentiable augmentation applied to every image the discriminator sees
  (``GANParts.augment``, e.g. DiffAug). Generic knobs (``n_critic``, ``ema_decay``, ``lr``,
  ``betas``) are read from ``gen_cfg`` by the loop.
* ``"vae"`` -- a conditional VAE trained on reconstruction + KL
  (``histaug.train_generator.train_vae``).

Adding a family (HViTGAN, MedViTGAN, AttributeGAN, ...) means writing a module with::

    @register_family("hvitgan")
    def build_hvitgan(gen_cfg, num_classes, name):
        return GANParts(generator=..., discriminator=..., objective=MyLossHooks(...), augment=DiffAug(...))

and declaring it (module, trainer, class head, conditions) in ``models/families.py``, the torch-free
table the workflow reads at parse time; the module is imported when the family is first built. No
training code changes.

Interface every family keeps:

* generator: ``nn.Module`` with attributes ``latent_dim``, ``num_classes``, ``image_size`` and
  ``forward(z: (B, latent_dim) float, labels) -> (B, 3, H, W)`` in ``[-1, 1]``; ``labels`` is a
  (B,) long tensor of classes, or for an attribute condition a (B, A) long tensor of levels.
* discriminator: ``forward(x, labels) -> {"source": (B,) raw score, "class_logits": (B, K) or None}``.

Conditions (:mod:`models.conditioning`): a family declares the condition kinds it supports
(``models/families.py``, ``("class",)`` by default); a family that also takes ``"attributes"`` (a vector of
attribute levels) receives the :class:`~models.conditioning.Condition` itself as its second
argument, a class-only family receives the number of classes K (an int).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from histaug.utils import PipelineError

from . import families
from .conditioning import Condition, as_condition
from .families import FamilyInfo, available_families

GENERATOR_ATTRIBUTES = ("latent_dim", "num_classes", "image_size")


@dataclass
class GANParts:
    """The networks (and optional loss hooks) one family trains.

    generator:     the sampling network (for the VAE family: the whole VAE, whose forward decodes).
    discriminator: the critic/discriminator of adversarial families, None for the VAE.
    objective:     loss hooks for adversarial families, an ``nn.Module`` with
                   ``discriminator_loss(discriminate, real, fake, labels) -> (loss, terms)``,
                   ``generator_loss(discriminate, fake, labels) -> (loss, terms)``,
                   ``discriminator_parameters()`` and ``generator_parameters()`` (extra trainable
                   tensors such as learned loss weights, optimised with D resp. G). None = the
                   default :class:`histaug.losses.AdversarialObjective` built from ``gen_cfg``.
    augment:       callable applied to every batch before the discriminator (real, fake and the
                   gradient-penalty interpolates alike), or None.
    family, trainer: filled in by :func:`build_generator`.
    """

    generator: nn.Module
    discriminator: nn.Module | None = None
    objective: nn.Module | None = None
    augment: Callable[[Any], Any] | None = None
    family: str = ""
    trainer: str = ""


@dataclass(frozen=True)
class FamilySpec:
    """A family's metadata (:class:`models.families.FamilyInfo`) and its builder."""

    info: FamilyInfo
    builder: Callable[[dict, Any, str], GANParts]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def trainer(self) -> str:
        return self.info.trainer

    @property
    def class_head(self) -> bool:
        return self.info.class_head

    @property
    def conditions(self) -> tuple[str, ...]:
        return self.info.conditions


_BUILDERS: dict[str, Callable[[dict, Any, str], GANParts]] = {}


def register_family(name: str, trainer: str | None = None, class_head: bool | None = None,
                    conditions: tuple[str, ...] | None = None):
    """Decorator registering ``builder(gen_cfg, condition, name) -> GANParts`` as family ``name``.

    A built-in family's trainer, class head and conditions come from :mod:`models.families`, so its
    module registers with the name alone. A family from elsewhere (a plugin, a test) gives them here:
    ``trainer`` names the training loop (``"adversarial"`` or ``"vae"``), ``class_head`` declares that
    the discriminator returns class logits, ``conditions`` lists the condition kinds it supports.
    """
    families.declare_family(name, trainer=trainer, class_head=class_head, conditions=conditions)

    def decorate(builder):
        if _BUILDERS.get(name, builder) is not builder:
            raise ValueError(f"generator family {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def get_family(family: str, gen_name: str = "<name>") -> FamilySpec:
    """Metadata and builder of ``family``; a built-in family's module is imported on first use."""
    info = families.family_info(family, gen_name)
    if family not in _BUILDERS and info.module:
        importlib.import_module(info.module)
    if family not in _BUILDERS:
        raise PipelineError(f"generator family {family!r} has no registered builder"
                            + (f": {info.module} defines none named {family!r}" if info.module else ""))
    return FamilySpec(info=info, builder=_BUILDERS[family])


def require(gen_cfg: dict, key: str, gen_name: str, kind: type | tuple = (int, float), minimum: float | None = None):
    """Read ``gen_cfg[key]`` or raise a PipelineError naming ``generators.<name>.<key>``."""
    if key not in gen_cfg or gen_cfg[key] is None:
        raise PipelineError(f"config key generators.{gen_name}.{key} is required by family {gen_cfg.get('family')!r}")
    value = gen_cfg[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise PipelineError(f"config key generators.{gen_name}.{key}={value!r} has the wrong type")
    if minimum is not None and value < minimum:
        raise PipelineError(f"config key generators.{gen_name}.{key}={value!r} must be >= {minimum}")
    return value


def build_generator(gen_cfg: dict, condition: int | Condition | dict, name: str = "<name>") -> GANParts:
    """Build the networks of ``gen_cfg["family"]`` for ``condition``: a number of classes, a
    :class:`~models.conditioning.Condition` or its dict form.

    ``name`` is the key of this entry under ``generators:`` and is used in error messages.
    """
    if not isinstance(gen_cfg, dict):
        raise PipelineError(f"config key generators.{name} must be a mapping, got {type(gen_cfg).__name__}")
    if "family" not in gen_cfg:
        raise PipelineError(f"config key generators.{name}.family is missing; expected one of {available_families()}")
    if isinstance(condition, (int,)) and int(condition) < 1:
        raise PipelineError(f"generator {name!r} needs at least one class, got num_classes={condition}")
    condition = as_condition(condition)
    spec = get_family(gen_cfg["family"], name)
    if condition.kind not in spec.conditions:
        raise PipelineError(f"config key generators.{name}.condition={condition.kind!r}: family {spec.name!r} supports "
                            f"{list(spec.conditions)} conditions; use one of those or a family that supports it")
    parts = spec.builder(gen_cfg, condition if "attributes" in spec.conditions else condition.num_classes, name)
    parts.family, parts.trainer = spec.name, spec.trainer
    missing = [a for a in GENERATOR_ATTRIBUTES if not hasattr(parts.generator, a)]
    if missing:
        raise TypeError(f"family {spec.name!r}: generator lacks attributes {missing}")
    if spec.trainer == "adversarial" and parts.discriminator is None:
        raise TypeError(f"family {spec.name!r} is adversarial but built no discriminator")
    parts.generator.condition = condition
    return parts
