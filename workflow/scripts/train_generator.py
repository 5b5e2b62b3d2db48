"""Rule train_generator: train one configured generator on the real training subset (resumable).

Class-conditioned generators train on the training subset with the downstream labels; attribute-
conditioned ones on the subset after rare-combination filtering, with the attribute levels.
With generators.<gen>.model_selection the best step is chosen by FID against the validation split,
in the space of the FID Inception network (inputs `valid` and `inception`). With
generators.<gen>.gpus > 1 the job trains in that many processes launched with torchrun.
"""
from histaug.generator_job import dispatch
from histaug.rulekit import run_rule

run_rule(snakemake, dispatch)  # noqa: F821
