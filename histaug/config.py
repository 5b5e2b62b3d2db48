"""Configuration: schema validation and cross-key checks, run once when the workflow starts."""
from __future__ import annotations

from pathlib import Path

import yaml

from .utils import PipelineError

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_config(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Validate against the JSON schema and the rules a schema cannot say. Raises PipelineError."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            if e.validator == "additionalProperties":
                lines.append(f"  {_key(e.absolute_path)}: {e.message} (unknown key: check its spelling against config/config.yaml)")
            else:
                lines.append(f"  {_key(e.absolute_path)}: {e.message}")
        raise PipelineError("Invalid configuration:\n" + "\n".join(lines))

    from models import available_families  # the registry knows every family that can be trained

    families = available_families()
    for name, g in config["generators"].items():
        if g["family"] not in families:
            raise PipelineError(f"config generators.{name}.family={g['family']!r}: unknown family; "
                                f"choose one of {families}")
    for g in config["run_generators"]:
        if g not in config["generators"]:
            raise PipelineError(f"config run_generators lists {g!r}, which is not defined under `generators` "
                                f"(defined: {sorted(config['generators'])})")
    for g in config["downstream"]["generators"]:
        if g not in config["run_generators"]:
            raise PipelineError(f"config downstream.generators lists {g!r}, which is not in run_generators "
                                f"{config['run_generators']}")
    gen_variants = set(config["downstream"]["variants"]) - {"real"}
    if gen_variants and not config["downstream"]["generators"]:
        raise PipelineError(f"config downstream.variants {sorted(gen_variants)} need synthetic images, but "
                            "downstream.generators is empty")
    sel = config["selection"]
    if sel["selector"] == "head":
        no_head = [n for n in config["run_generators"] if config["generators"][n]["family"] not in ("hvitgan", "medvitgan")]
        if no_head:
            raise PipelineError(f"config selection.selector='head' needs a generator with a classification head, but "
                                f"{no_head} have none; use selector 'baseline' or remove them")
    elif sel.get("selector_arch", "resnet34") not in config["downstream"]["archs"]:
        raise PipelineError(f"config selection.selector_arch={sel.get('selector_arch')!r} must be one of "
                            f"downstream.archs {config['downstream']['archs']} (the selector is that real-data classifier)")
    if sel["selector"] == "baseline" and sel.get("selector_seed", 0) not in config["downstream"]["seeds"]:
        raise PipelineError(f"config selection.selector_seed={sel.get('selector_seed')} must be one of downstream.seeds")
    fs = config["evaluation"]["feature_space"]
    if fs["arch"] not in config["downstream"]["archs"] or fs["seed"] not in config["downstream"]["seeds"]:
        raise PipelineError(f"config evaluation.feature_space={fs}: arch and seed must be among downstream.archs/seeds")
    fr = config["split"]["fractions"]
    if abs(sum(fr.values()) - 1) > 1e-6:
        raise PipelineError(f"config split.fractions={fr}: must sum to 1")
    sub = config["subset"]
    if sub.get("count") is None and sub.get("fraction") is None:
        raise PipelineError("config subset: set `fraction` (e.g. 0.1) or `count`")
    if config.get("data_dir") and not Path(config["data_dir"]).exists():
        raise PipelineError(f"config data_dir={config['data_dir']!r}: folder not found. Point data_dir at a Kaggle-layout "
                            "folder (images/ + labels.csv) or a folder with the PCam HDF5 files, or set it to null to use PCam.")
    return config
