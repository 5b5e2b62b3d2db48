"""Rule download_pcam: fetch one PCam HDF5 file (MD5-checked) into pcam_dir, with the MD5 of the unpacked file
recorded beside it (<name>.h5.md5) for ingest to check."""
from histaug.data import download_pcam_file
from histaug.rulekit import run_rule


def main(smk, log):
    download_pcam_file(smk.wildcards.split, smk.wildcards.xy, smk.params.url, smk.params.dest, log)


run_rule(snakemake, main)  # noqa: F821
