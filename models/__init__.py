"""Generator families.

The family metadata (:mod:`models.families`: names, trainers, class heads, conditions) is imported
with the package and needs no torch, so the workflow can parse without it. The builders and the
networks (:mod:`models.registry`, one module per family) are imported when first used: accessing
``models.build_generator`` imports the registry, and building a family imports its module.
"""
import importlib

from .families import available_families, families_with_class_head, family_conditions, family_info

# public name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "GANParts": "models.registry",
    "FamilySpec": "models.registry",
    "build_generator": "models.registry",
    "get_family": "models.registry",
    "register_family": "models.registry",
    "Condition": "models.conditioning",
    "as_condition": "models.conditioning",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "GANParts",
    "FamilySpec",
    "available_families",
    "build_generator",
    "families_with_class_head",
    "family_conditions",
    "family_info",
    "Condition",
    "as_condition",
    "get_family",
    "register_family",
]
