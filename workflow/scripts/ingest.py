"""Rule ingest: PCam HDF5 or a Kaggle-layout folder -> data/{train,valid,test}.h5 + source_labels.csv.

Whole PCam splits are linked (HDF5 external links to the source files), not copied; the rule's
threads checksum that many files at once."""
from pathlib import Path

from histaug.data import ingest
from histaug.rulekit import run_rule


def main(smk, log):
    cfg = {"data_dir": smk.params.data_dir, "pcam_dir": smk.params.pcam_dir, "pcam": smk.params.pcam,
           "split": smk.params.split, "labels": smk.params.labels}
    ingest(cfg, Path(smk.output.table).parent, log, threads=int(smk.threads or 1))


run_rule(snakemake, main)  # noqa: F821
