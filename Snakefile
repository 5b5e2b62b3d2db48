# GAN-based synthetic augmentation of histopathology images: the whole study as one DAG.
#   snakemake --cores all                                  full reproduction (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml    CPU demo
# docs/pipeline.md describes every rule and file. `snakemake --lint` is clean; parsing imports no torch.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from histaug.config import validate_config

configfile: "config/config.yaml"

validate_config(config)

report: "workflow/report/workflow.rst"

# Derived names (R, GENERATORS, ARCHS, ...) and every input/params function: workflow/rules/common.smk.
include: "workflow/rules/common.smk"


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
