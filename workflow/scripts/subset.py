"""Rule subset: seeded, stratified part of the training split, written out for auditing."""
import pandas as pd

from histaug.data import stratified_subset
from histaug.rulekit import run_rule
from histaug.utils import write_csv


def main(smk, log):
    cfg = smk.params.subset
    table = pd.read_csv(smk.input[0], dtype={"id": str})
    train = table[table["split"] == "train"].sort_values("index")
    rows = stratified_subset(train["label"].to_numpy(), cfg.get("fraction"), cfg.get("count"), int(cfg["seed"]),
                             min_per_class=int(cfg.get("min_per_class", 1)), ids=train["id"].tolist())
    chosen = train.iloc[rows][["index", "id", "label"]]
    write_csv(chosen, smk.output[0])
    log.info("subset: %d of %d training images, per class %s", len(chosen), len(train),
             chosen["label"].value_counts().sort_index().to_dict())


run_rule(snakemake, main)  # noqa: F821
