# What every stage shares: names derived from the validated config, and the input and parameter
# functions of the rules. The stage files (data, attributes, generate, downstream, evaluate, report)
# hold only their rules. Nothing here imports torch: the DAG is built from the config alone.

import re
from pathlib import Path

from histaug.attribute_names import attribute_names
from histaug.attributegan_table import table_rows
from histaug.config import downstream_runs, head_generator, selector_for
from histaug.embedding import parse_panels, tsne_settings
from histaug.generator_runs import attribute_conditioned, condition_attribute, generator_condition, generator_group
from histaug.trainsets import parse_trainset
from models.families import families_with_class_head

R = config["results_dir"]
SPLITS = ["train", "valid", "test"]
GENERATORS = list(config["run_generators"])
# Attribute-conditioned generators (AttributeGAN and the multi-attribute baselines) are judged by FID and
# attribute error; class-conditioned ones also feed selective augmentation and the classifiers.
ATTR_GENERATORS = [g for g in GENERATORS if attribute_conditioned(config, g)]
CLASS_GENERATORS = [g for g in GENERATORS if g not in ATTR_GENERATORS]
SWEEP_GENERATORS = [g for g in GENERATORS if generator_condition(config, g) == "attributes"]  # all attributes at once
ATTR = config.get("attributes") or {}
ATTR_NAMES = attribute_names(ATTR) if ATTR.get("source") else []
DS = config["downstream"]
EV = config["evaluation"]
FS = EV["feature_space"]
SEL_ARCH = config["selection"].get("selector_arch", "resnet34")
SEL_SEED = config["selection"].get("selector_seed", DS["seeds"][0])
THREADS = config["compute"].get("threads", 1)
# The software of every rule (`--sdm conda`); relative to workflow/rules/, where the rules are defined.
HISTAUG_ENV = "../../envs/histaug.yaml"

# (architecture, training set) pairs, each trained for every seed: downstream.archs x downstream.trainsets,
# then the class heads of downstream.head_classifiers as `<generator>_head`.
RUNS = downstream_runs(config)
ARCHS = list(dict.fromkeys(arch for arch, _ in RUNS))
# The sanity row (downstream.sanity_baseline, null = off): logistic regression on pixels, rule pixel_baseline.
BASELINE_RUNS = [("pixel_logreg", "real")] if DS.get("sanity_baseline", {"size": 8}) is not None else []
REPORT_RUNS = BASELINE_RUNS + RUNS
REPORT_ARCHS = [a for a, _ in BASELINE_RUNS] + ARCHS

# The real training data every generator and classifier reads.
DATA_INPUTS = dict(
    train=f"{R}/data/train.h5",
    labels=f"{R}/data/labels.csv",
    labels_meta=f"{R}/data/labels.json",
    subset=f"{R}/data/train_subset.csv",
)


def only(names):
    """A wildcard constraint matching exactly these generator names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


# ------------------------------------------------------------------------------------------ data

PCAM_RAW = [f"{config['pcam_dir']}/camelyonpatch_level_2_split_{s}_{k}.h5"
            for s in (config["pcam"]["splits"] if not (config["pcam"].get("sample")) else [config["pcam"]["sample"]["split"]])
            for k in ("x", "y")]


def ingest_inputs(wildcards):
    """PCam files to download, or the user's folder (read only, never written)."""
    if config.get("data_dir"):
        d = Path(config["data_dir"])
        return [str(d / "labels.csv")] if (d / "labels.csv").exists() else sorted(str(p) for p in d.glob("camelyonpatch_level_2_split_*.h5"))
    return PCAM_RAW


def output_folder(wildcards, output):
    """The folder of the job's first output file (where a download lands)."""
    return str(Path(output[0]).parent)


# ------------------------------------------------------------------------------------ attributes


def attribute_source_files(wildcards):
    """The annotation file or the reports file the attribute levels are read from (none for pixels)."""
    spec = ATTR.get(ATTR["source"]) or {}
    return [spec["path"]] if ATTR["source"] in ("file", "reports") and spec.get("path") else []


def attributegan_figure_runs(rows, attribute):
    """Per AttributeGAN table row, (label, the run that shows `attribute`): a run conditioned on all
    attributes, or the per-attribute run of that attribute."""
    return [(row["label"], [r for r in row["runs"] if condition_attribute(config, r) in (None, attribute)][0])
            for row in rows]


def attribute_runs_by_group():
    """Attribute-conditioned runs under their config entry (an entry expanded per attribute has several)."""
    runs = {}
    for gen in ATTR_GENERATORS:
        runs.setdefault(generator_group(config, gen), []).append(gen)
    return runs


# AttributeGAN Table 1 and Fig. 3 (report.attributegan_table / attributegan_figure): rows are config entries of
# attribute-conditioned generators; an entry expanded per attribute (BigGAN) is one row over its runs.
AG_ROWS = table_rows(config["report"].get("attributegan_table") or [], attribute_runs_by_group(),
                     list(config["generators"])) if ATTR.get("source") else []
AG_FIGURE = dict(config["report"].get("attributegan_figure") or {})
if AG_ROWS:
    AG_FIGURE.setdefault("attribute", ATTR_NAMES[0])
AG_FIGURE_RUNS = attributegan_figure_runs(AG_ROWS, AG_FIGURE.get("attribute"))

# ------------------------------------------------------------------------------------ generators


def model_selection_inputs(wildcards):
    """generators.<gen>.model_selection picks the best step by FID against the validation split
    (Inception weights from the inception_weights job); without it the job keeps its data inputs."""
    if not config["generators"][wildcards.gen].get("model_selection"):
        return {}
    return {"valid": f"{R}/data/valid.h5", "inception": f"{R}/metrics/inception.json"}


def attribute_inputs(wildcards):
    """Attribute-conditioned generators train and sample on the filtered subset with its levels."""
    if wildcards.gen not in ATTR_GENERATORS:
        return {}
    return {"attributes_meta": f"{R}/data/attributes.json", "combinations": f"{R}/data/combinations.csv",
            "attribute_subset": f"{R}/data/attribute_subset.csv"}


def generator_gpus(wildcards):
    """GPUs (training processes) of generator `wildcards.gen`: its `gpus` key, 1 when unset."""
    return int(config["generators"][wildcards.gen].get("gpus", 1))


def state_folder(wildcards, output):
    """The resumable training state of a generator, next to its checkpoint."""
    return str(Path(output.checkpoint).parent / "state")


def selector_input(wildcards):
    """`baseline`: the real-data classifier; `head`: the generator's own classification head."""
    if selector_for(config, wildcards.gen) == "head":
        return f"{R}/generators/{wildcards.gen}/checkpoint.pt"
    return f"{R}/downstream/{SEL_ARCH}/real/seed{SEL_SEED}/model.pt"


# ------------------------------------------------------------------------------------ downstream


# downstream.seeds_in_one_job: one train_classifier job per (architecture, training set) trains every seed in
# turn (one process start-up and data load instead of one per seed: a single machine); false (the default)
# gives one job per seed (a cluster runs the seeds side by side). The files per seed are the same either way.
SEEDS_IN_ONE_JOB = bool(DS.get("seeds_in_one_job", False))


def classifier_run_files(kind, name):
    """Output, log or benchmark path(s) of train_classifier: per seed, or for every seed when they share a job."""
    if kind == "output":
        pattern = f"{R}/downstream/{{arch}}/{{variant}}/seed{{seed}}/{name}"
        return [pattern.replace("{seed}", str(s)) for s in DS["seeds"]] if SEEDS_IN_ONE_JOB else pattern
    seeds = "all_seeds" if SEEDS_IN_ONE_JOB else "seed{seed}"
    return f"{R}/{kind}/train_classifier/{{arch}}/{{variant}}/{seeds}.{'log' if kind == 'logs' else 'tsv'}"


def synthetic_input(wildcards):
    """The generated-image file of the training set (none for `real`); see histaug/trainsets.py."""
    path = parse_trainset(wildcards.variant).samples_file(R)
    return [path] if path else []


def head_input(wildcards):
    """For `<gen>_head`: the GAN checkpoint whose discriminator (with its class head) is fine-tuned."""
    gen = head_generator(wildcards.arch)
    return [f"{R}/generators/{gen}/checkpoint.pt"] if gen else []


# ------------------------------------------------------------------------------------ evaluation


def selected_input(wildcards):
    """Selective augmentation exists for class-conditioned generators only."""
    return {"selected": f"{R}/samples/{wildcards.gen}/selected.h5"} if wildcards.gen in CLASS_GENERATORS else {}


def real_features_file(kind):
    """Input function: the cached real `kind` features (inception, classifier) at the generator's image size."""
    return lambda wc: f"{R}/metrics/real/{EV['real_split']}_{config['generators'][wc.gen]['image_size']}px_{kind}.npz"


def has_class_head(wildcards):
    """A class-conditioned generator whose family's discriminator has a class head."""
    return wildcards.gen in CLASS_GENERATORS and config["generators"][wildcards.gen]["family"] in families_with_class_head()


# ---------------------------------------------------------------------------------------- report

DOWNSTREAM_RUNS = [f"{R}/downstream/{arch}/{trainset}/seed{seed}" for arch, trainset in REPORT_RUNS for seed in DS["seeds"]]
# HViTGAN Fig. 3: t-SNE panels of generated image sets (report.tsne); no panels = no tsne job, no figure.
TSNE_PANELS = parse_panels(config["report"].get("tsne"), CLASS_GENERATORS)
TSNE_SETTINGS = tsne_settings(config["report"].get("tsne_settings"))
