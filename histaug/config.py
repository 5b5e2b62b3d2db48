"""Configuration: schema validation and cross-key checks, run once when the workflow starts."""
from __future__ import annotations

from pathlib import Path

import yaml

from .generator_runs import attribute_conditioned, check_conditions, expand_per_attribute
from .utils import PipelineError

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def merge_config(base: dict, layer: dict) -> dict:
    """``layer`` over ``base`` the way Snakemake layers ``--configfile`` files: mappings merge key by
    key, anything else (lists included) is replaced."""
    import copy

    out = copy.deepcopy(base)
    for k, v in layer.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_config(*paths: str | Path) -> dict:
    """The YAML files ``paths`` layered in order (``config/config.yaml``, then ``config/demo.yaml``, ...)."""
    cfg: dict = {}
    for path in paths:
        cfg = merge_config(cfg, yaml.safe_load(Path(path).read_text()) or {})
    return cfg


def validate_config(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Validate against the JSON schema and the rules a schema cannot say. Raises PipelineError."""
    import jsonschema

    schema = yaml.load(Path(schema_path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
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

    from models.families import available_families, families_with_class_head  # torch-free family table

    families = available_families()
    for name, g in config["generators"].items():
        if g["family"] not in families:
            raise PipelineError(f"config generators.{name}.family={g['family']!r}: unknown family; "
                                f"choose one of {families}")
    for g in config["run_generators"]:
        if g not in config["generators"]:
            raise PipelineError(f"config run_generators lists {g!r}, which is not defined under `generators` "
                                f"(defined: {sorted(config['generators'])})")
    from .attribute_names import attribute_names  # light: the DAG is built before any measurement

    names = attribute_names(config.get("attributes") or {}) if (config.get("attributes") or {}).get("source") else []
    expand_per_attribute(config, names)
    check_conditions(config, names)
    figure = (config["report"].get("attributegan_figure") or {}).get("attribute")
    if figure is not None and figure not in names:
        raise PipelineError(f"config report.attributegan_figure.attribute={figure!r}: not an attribute of this run ({names})")
    from .trainsets import parse_trainset

    ds = config["downstream"]
    stray = sorted(set(ds.get("synthetic_archs") or []) - set(ds["archs"]))
    if stray:
        raise PipelineError(f"config downstream.synthetic_archs lists {stray}, which are not in downstream.archs {ds['archs']}")
    for arch, trainset in downstream_runs(config):
        key = f"downstream.head_classifiers.{head_generator(arch)}" if head_generator(arch) else "downstream.trainsets"
        ts = parse_trainset(trainset)
        if ts.generator is not None and ts.generator not in config["run_generators"]:
            raise PipelineError(f"config {key} lists {trainset!r}, whose generator {ts.generator!r} is not in run_generators "
                                f"{config['run_generators']}")
    heads = families_with_class_head()
    heads_listed = [h["generator"] for h in ds.get("head_classifiers") or []]
    if len(set(heads_listed)) < len(heads_listed):
        raise PipelineError(f"config downstream.head_classifiers lists a generator twice: {heads_listed}")
    for gen in heads_listed:
        if gen not in config["run_generators"]:
            raise PipelineError(f"config downstream.head_classifiers.{gen}: {gen!r} is not in run_generators {config['run_generators']}")
        if config["generators"][gen]["family"] not in heads:
            raise PipelineError(f"config downstream.head_classifiers.{gen}: family {config['generators'][gen]['family']!r} has no "
                                f"classification head (families with one: {heads})")
    sel = config["selection"]
    class_generators = [g for g in config["run_generators"] if not attribute_conditioned(config, g)]
    if sel["selector"] == "head":
        no_head = [n for n in class_generators if config["generators"][n]["family"] not in heads]
        if no_head:
            raise PipelineError(f"config selection.selector='head' needs a generator with a classification head, but "
                                f"{no_head} have none; use selector 'auto' (head where there is one, baseline elsewhere), "
                                "'baseline', or remove them")
    if any(selector_for(config, g) == "baseline" for g in class_generators):
        if sel.get("selector_arch", "resnet34") not in ds["archs"]:
            raise PipelineError(f"config selection.selector_arch={sel.get('selector_arch')!r} must be one of "
                                f"downstream.archs {ds['archs']} (the selector is that real-data classifier)")
        if sel.get("selector_seed", 0) not in ds["seeds"]:
            raise PipelineError(f"config selection.selector_seed={sel.get('selector_seed')} must be one of downstream.seeds")
    fs = config["evaluation"]["feature_space"]
    if fs["arch"] not in config["downstream"]["archs"] or fs["seed"] not in config["downstream"]["seeds"]:
        raise PipelineError(f"config evaluation.feature_space={fs}: arch and seed must be among downstream.archs/seeds")
    from .embedding import parse_panels

    parse_panels(config["report"].get("tsne"), class_generators)  # each panel's generator must run, class-conditioned
    fr = config["split"]["fractions"]
    if abs(sum(fr.values()) - 1) > 1e-6:
        raise PipelineError(f"config split.fractions={fr}: must sum to 1")
    sub = config["subset"]
    if sub.get("count") is None and sub.get("fraction") is None:
        raise PipelineError("config subset: set `fraction` (e.g. 0.1) or `count`")
    if config.get("data_dir") and not Path(config["data_dir"]).exists():
        raise PipelineError(f"config data_dir={config['data_dir']!r}: folder not found. Point data_dir at a Kaggle-layout "
                            "folder (images/ + labels.csv) or a folder with the PCam HDF5 files, or set it to null to use PCam.")
    if config.get("data_dir"):
        data_dir, results_dir = Path(config["data_dir"]).resolve(), Path(config["results_dir"]).resolve()
        if results_dir.is_relative_to(data_dir):  # equal counts as inside
            raise PipelineError(f"config results_dir={config['results_dir']!r} lies inside data_dir={config['data_dir']!r} "
                                f"({results_dir} is in {data_dir}); data_dir is only ever read. Set results_dir to a "
                                "folder outside data_dir.")
    return config


HEAD_SUFFIX = "_head"


def head_arch(generator: str) -> str:
    """Downstream architecture name of generator `generator`'s discriminator class head."""
    return f"{generator}{HEAD_SUFFIX}"


def head_generator(arch: str) -> str | None:
    """The generator whose class head `arch` is (``hvitgan_head`` -> ``hvitgan``), None for timm networks."""
    return arch[: -len(HEAD_SUFFIX)] if arch.endswith(HEAD_SUFFIX) else None


def synthetic_only(trainset: str) -> bool:
    """True for a training set of generated images alone (``G``, ``G.truncated``, ``G.selected``)."""
    return not (trainset == "real" or str(trainset).startswith("real+"))


def downstream_runs(config: dict) -> list[tuple[str, str]]:
    """(architecture, training set) pairs of a run, in table order; each is trained for every seed.

    Every architecture in ``downstream.archs`` on every set in ``downstream.trainsets``, then the
    class heads of ``downstream.head_classifiers`` ({generator, trainsets} entries) as ``<gen>_head``.
    Sets without real images (``G``, ``G.selected``: the slides' train-on-synthetic protocol) run on
    ``downstream.synthetic_archs`` when that is set (the slides train one classifier), else on every arch.
    """
    ds = config["downstream"]
    synthetic_archs = ds.get("synthetic_archs")
    runs = [(arch, ts) for arch in ds["archs"] for ts in ds["trainsets"]
            if synthetic_archs is None or arch in synthetic_archs or not synthetic_only(ts)]
    for entry in ds.get("head_classifiers") or []:
        runs += [(head_arch(entry["generator"]), ts) for ts in entry["trainsets"]]
    return runs


def selector_for(config: dict, generator: str) -> str:
    """Selector that judges `generator`'s images: ``selection.selector``, with ``auto`` meaning the
    generator's own class head when its family has one (HViTGAN §2.3), else the real-data classifier."""
    kind = config["selection"]["selector"]
    if kind != "auto":
        return kind
    from models.families import families_with_class_head

    return "head" if config["generators"][generator]["family"] in families_with_class_head() else "baseline"
