# GAN-based synthetic augmentation of histopathology images: the whole study as one DAG.
#   snakemake --cores all                                  full reproduction (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml    CPU demo
# docs/pipeline.md describes every rule and file.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from histaug.config import validate_config

configfile: "config/config.yaml"

validate_config(config)

R = config["results_dir"]
SPLITS = ["train", "valid", "test"]
GENERATORS = list(config["run_generators"])
DS = config["downstream"]
SEL_ARCH = config["selection"].get("selector_arch", "resnet34")
SEL_SEED = config["selection"].get("selector_seed", DS["seeds"][0])
THREADS = config["compute"].get("threads", 1)


def variants():
    """Downstream training sets: real | real+G | real+G.selected | G (synthetic only)."""
    out = []
    for kind in DS["variants"]:
        if kind == "real":
            out.append("real")
            continue
        for g in DS["generators"]:
            out.append({"augmented": f"real+{g}", "selected": f"real+{g}.selected", "synthetic": g}[kind])
    return out


VARIANTS = variants()

wildcard_constraints:
    gen="|".join(GENERATORS),
    split="train|valid|test",
    arch="|".join(DS["archs"]),
    seed=r"\d+",
    variant=r"real|(real\+)?[a-z][a-z0-9_]*(\.selected)?",


include: "workflow/rules/data.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules: all, download_pcam, inception_weights


rule all:
    input:
        f"{R}/report.md",
