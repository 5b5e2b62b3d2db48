"""Worker for tests/test_distributed.py, started by torchrun with 1 or 2 processes.

Trains small generators of several families for a few steps through the shared training loop
(:func:`histaug.train_generator.train_generator`) on CPU and writes each final checkpoint to
``OUT/<name>.pt`` (rank 0 writes). Usage: torchrun --nproc_per_node N tests/distributed_worker.py OUT
"""
import sys
from pathlib import Path

import numpy as np
import torch

from histaug import distributed
from histaug.train_generator import train_generator

CONFIGS = {
    # BatchNorm in the generator, WGAN-GP (per-sample mixing weights), EMA
    "cgan_gp": {"family": "cgan", "image_size": 32, "latent_dim": 16, "loss": "wgan-gp", "gp_weight": 10.0,
                "n_critic": 2, "g_channels": 8, "d_channels": 8, "ema_decay": 0.9},
    # BatchNorm in the discriminator too
    "cgan_bce": {"family": "cgan", "image_size": 32, "latent_dim": 16, "loss": "bce", "n_critic": 1,
                 "g_channels": 8, "d_channels": 8},
    "cvae": {"family": "cvae", "image_size": 32, "latent_dim": 16, "channels": 8, "conv_layers": 4, "kl_weight": 1.0,
             "lr": 0.001},
    # ViT generator and discriminator, DiffAug (per-sample draws), loss weighing, gradient penalty
    "hvitgan": {"family": "hvitgan", "image_size": 32, "latent_dim": 16, "embed_dim": 64, "g_depth": 1,
                "heads": [2, 2, 1, 1], "class_projection": True, "d_embed_dim": 16, "d_heads": 2, "patch_size": 4,
                "weighing": "hvitgan", "gp_weight": 10.0, "diffaug": ["color", "translation", "cutout", "scaling",
                                                                     "rotation"], "betas": [0.0, 0.99], "n_critic": 1},
}


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist, device = distributed.init_from_env("cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(48) % 2
    try:
        for name, cfg in CONFIGS.items():
            cfg = {"batch_size": 8, "lr": 0.0002, "steps": 3, "log_every": 1, "checkpoint_every": 2, "seed": 3,
                   "gpus": dist.world, **cfg}
            train_generator(name, cfg, images, labels, 2, Path(out) / f"{name}.pt", Path(out) / f"state_{name}",
                            {"device": "cpu"})
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
