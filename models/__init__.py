"""Generator families. Importing this package registers every built-in family."""
from .registry import (
    GANParts,
    FamilySpec,
    available_families,
    build_generator,
    families_with_class_head,
    family_conditions,
    get_family,
    register_family,
)
from .conditioning import Condition, as_condition  # noqa: E402
from . import attributegan, biggan, cgan, cvae, hvitgan  # noqa: E402,F401  (registration side effects)

__all__ = [
    "GANParts",
    "FamilySpec",
    "available_families",
    "build_generator",
    "families_with_class_head",
    "family_conditions",
    "Condition",
    "as_condition",
    "get_family",
    "register_family",
]
