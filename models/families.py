"""What is known about each generator family without building it: the one table of family metadata.

The workflow reads this at parse time (config validation, ``selection.selector: auto``, which
families have a class head) and must not import torch to do so, so this module imports nothing
heavier than :mod:`models.conditioning`. :mod:`models.registry` takes every family's trainer, class
head and conditions from here when a builder registers, and imports a built-in family's module
(``FamilyInfo.module``) the first time that family is built.

Adding a built-in family means one :class:`FamilyInfo` line in ``BUILTIN`` below and a module that
decorates its builder with ``@register_family("<name>")``. A family registered from elsewhere
(a plugin, a test) passes its metadata to ``register_family`` and is declared here at that moment.
"""
from __future__ import annotations

from dataclasses import dataclass

from histaug.utils import PipelineError

from .conditioning import KINDS as CONDITION_KINDS

TRAINERS = ("adversarial", "vae")


@dataclass(frozen=True)
class FamilyInfo:
    """name: the ``family:`` value in the config's ``generators:`` entries.
    module: the module that registers the builder (None for families registered from elsewhere).
    trainer: the training loop, ``"adversarial"`` (G + D, alternating updates) or ``"vae"``.
    class_head: the discriminator returns class logits, so its head can select generated images
        (``selection.selector: head``) and serve as a downstream classifier (``downstream.head_classifiers``).
    conditions: the condition kinds the family supports (``"class"``, ``"attributes"``)."""

    name: str
    module: str | None = None
    trainer: str = "adversarial"
    class_head: bool = False
    conditions: tuple[str, ...] = ("class",)

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"family {self.name!r}: trainer must be one of {TRAINERS}, got {self.trainer!r}")
        unknown = sorted(set(self.conditions) - set(CONDITION_KINDS))
        if unknown or not self.conditions:
            raise ValueError(f"family {self.name!r}: conditions must be a non-empty subset of {CONDITION_KINDS}, "
                             f"got {self.conditions}")


BUILTIN = (
    FamilyInfo("cgan", "models.cgan", conditions=("class", "attributes")),
    FamilyInfo("cvae", "models.cvae", trainer="vae", conditions=("class", "attributes")),
    FamilyInfo("hvitgan", "models.hvitgan", class_head=True),
    FamilyInfo("medvitgan", "models.hvitgan", class_head=True),
    FamilyInfo("biggan", "models.biggan"),
    FamilyInfo("attributegan", "models.attributegan", conditions=("attributes",)),
)

_FAMILIES: dict[str, FamilyInfo] = {info.name: info for info in BUILTIN}


def declare_family(name: str, trainer: str | None = None, class_head: bool | None = None,
                   conditions: tuple[str, ...] | None = None) -> FamilyInfo:
    """The metadata of family ``name``; a name not in the table is added with the values given
    (defaults: adversarial, no class head, class condition). For a declared family every value
    given must agree with the table, which stays the only place they are written."""
    given = {"trainer": trainer, "class_head": class_head,
             "conditions": tuple(conditions) if conditions is not None else None}
    info = _FAMILIES.get(name)
    if info is None:
        info = FamilyInfo(name, **{k: v for k, v in given.items() if v is not None})
        _FAMILIES[name] = info
        return info
    clashes = {k: v for k, v in given.items() if v is not None and v != getattr(info, k)}
    if clashes:
        table = {k: getattr(info, k) for k in clashes}
        raise ValueError(f"family {name!r} is registered with {clashes}, but models/families.py declares {table}; "
                         "change the table there and drop the arguments from register_family")
    return info


def family_info(family: str, gen_name: str = "<name>") -> FamilyInfo:
    """The metadata of ``family``, or a PipelineError naming ``generators.<gen_name>.family``."""
    try:
        return _FAMILIES[family]
    except KeyError:
        raise PipelineError(
            f"config key generators.{gen_name}.family={family!r}: unknown generator family; "
            f"expected one of {available_families()}"
        ) from None


def available_families() -> list[str]:
    return sorted(_FAMILIES)


def family_conditions(family: str) -> tuple[str, ...]:
    """The condition kinds family ``family`` supports."""
    return family_info(family).conditions


def families_with_class_head() -> list[str]:
    """Families whose discriminator has a classification head."""
    return sorted(n for n, info in _FAMILIES.items() if info.class_head)
