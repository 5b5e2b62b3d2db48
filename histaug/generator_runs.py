"""Which generator runs a config asks for, and what each is conditioned on.

``generators.<name>.condition`` is

* ``class`` (default): the downstream class label;
* ``attributes``: the vector of all attribute levels (AttributeGAN, the multi-attribute baselines);
* ``{attribute: <name>}``: one attribute's level as the class (a single-attribute model);
* ``per_attribute``: one single-attribute run per attribute (the AttributeGAN paper's five BigGANs).
  The entry is expanded when the config is validated into runs ``<name>_<attribute>``, each with
  ``condition: {attribute: <attribute>}``, ``label: "<label> (<attribute>)"`` and ``group: <name>``,
  which replace ``<name>`` in ``run_generators``; tables that show the entry as one row (BigGAN in
  the AttributeGAN Table 1) average over its group.

Attribute-conditioned runs (``attributes`` and single-attribute) have no downstream class label:
they are scored by FID/KID and attribute error and cannot augment the classifiers.
"""
from __future__ import annotations

import copy

from .utils import PipelineError

KINDS = ("class", "attributes", "attribute")


def generator_condition(config: dict, generator: str) -> str:
    """``class``, ``attributes`` or ``attribute`` (a single attribute's levels as the class)."""
    value = config["generators"][generator].get("condition", "class")
    if isinstance(value, dict):
        return "attribute"
    return value


def condition_attribute(config: dict, generator: str) -> str | None:
    """The attribute of a single-attribute run, else None."""
    value = config["generators"][generator].get("condition")
    return value.get("attribute") if isinstance(value, dict) else None


def attribute_conditioned(config: dict, generator: str) -> bool:
    return generator_condition(config, generator) != "class"


def generator_group(config: dict, generator: str) -> str:
    """The config entry a run was expanded from (itself when it was not expanded)."""
    return config["generators"][generator].get("group", generator)


def expand_per_attribute(config: dict, attribute_names: list[str]) -> dict:
    """Replace every ``condition: per_attribute`` entry of ``run_generators`` by one run per attribute (in place)."""
    runs = []
    for name in config["run_generators"]:
        entry = config["generators"][name]
        if entry.get("condition") != "per_attribute":
            runs.append(name)
            continue
        if not attribute_names:
            raise PipelineError(f"config generators.{name}.condition='per_attribute' needs attributes; set "
                                "attributes.source (pixels, file or reports)")
        for attribute in attribute_names:
            run = f"{name}_{attribute}"
            if run in config["generators"] and config["generators"][run].get("group") != name:
                raise PipelineError(f"config generators.{name}: the per-attribute run {run!r} collides with an "
                                    "entry of that name; rename one of them")
            config["generators"][run] = {**copy.deepcopy(entry), "condition": {"attribute": attribute},
                                         "label": f"{entry.get('label', name)} ({attribute})", "group": name}
            runs.append(run)
    config["run_generators"] = runs
    return config


def check_conditions(config: dict, attribute_names: list[str]) -> None:
    """Families support their runs' conditions; attribute runs need attributes and stay out of downstream."""
    from models import family_conditions

    from .trainsets import parse_trainset

    attribute_runs = [g for g in config["run_generators"] if attribute_conditioned(config, g)]
    for g in config["run_generators"]:
        kind, family = generator_condition(config, g), config["generators"][g]["family"]
        needed = "class" if kind == "attribute" else kind
        if needed not in family_conditions(family):
            raise PipelineError(f"config generators.{g}.condition={config['generators'][g].get('condition')!r}: family "
                                f"{family!r} supports {list(family_conditions(family))} conditions")
        attribute = condition_attribute(config, g)
        if attribute is not None and attribute not in attribute_names:
            raise PipelineError(f"config generators.{g}.condition.attribute={attribute!r}: not an attribute of this run "
                                f"({attribute_names})")
    if attribute_runs and not (config.get("attributes") or {}).get("source"):
        raise PipelineError(f"config generators {attribute_runs} are conditioned on attributes, but attributes.source "
                            "is not set; set it to pixels, file or reports")
    used = [t for t in config["downstream"]["trainsets"] if parse_trainset(t).generator in attribute_runs]
    used += [h["generator"] for h in config["downstream"].get("head_classifiers") or [] if h["generator"] in attribute_runs]
    if used:
        raise PipelineError(f"config downstream lists {used}, which use attribute-conditioned generators; their images "
                            "have no class label, so only class-conditioned generators can augment classifiers")
