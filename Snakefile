# GAN-based synthetic augmentation of histopathology images: the whole study as one DAG.
#   snakemake --cores all                                  full reproduction (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml    CPU demo
# docs/pipeline.md describes every rule and file.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from histaug.attribute_table import attribute_names
from histaug.config import downstream_runs, head_generator, selector_for, validate_config
from histaug.attributegan_table import table_rows
from histaug.generator_runs import attribute_conditioned, condition_attribute, generator_condition, generator_group
from histaug.trainsets import parse_trainset
from models import families_with_class_head

configfile: "config/config.yaml"

validate_config(config)

report: "workflow/report/workflow.rst"

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
SEL_ARCH = config["selection"].get("selector_arch", "resnet34")
SEL_SEED = config["selection"].get("selector_seed", DS["seeds"][0])
THREADS = config["compute"].get("threads", 1)


# (architecture, training set) pairs, each trained for every seed: downstream.archs x downstream.trainsets,
# then the class heads of downstream.head_classifiers as `<generator>_head`.
RUNS = downstream_runs(config)
ARCHS = list(dict.fromkeys(arch for arch, _ in RUNS))
# The sanity row (downstream.sanity_baseline, null = off): logistic regression on pixels, rule pixel_baseline.
BASELINE_RUNS = [("pixel_logreg", "real")] if DS.get("sanity_baseline", {"size": 8}) is not None else []
REPORT_RUNS = BASELINE_RUNS + RUNS
REPORT_ARCHS = [a for a, _ in BASELINE_RUNS] + ARCHS


wildcard_constraints:
    gen="|".join(GENERATORS),
    split="train|valid|test",
    arch="|".join(re.escape(a) for a in ARCHS),
    seed=r"\d+",
    variant=r"real|(real\+)?[a-z][a-z0-9_]*(\.(truncated|selected))?",
    source="normal|truncated",


include: "workflow/rules/data.smk"
include: "workflow/rules/attributes.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules: all, download_pcam, inception_weights


rule all:
    input:
        f"{R}/report.md",
