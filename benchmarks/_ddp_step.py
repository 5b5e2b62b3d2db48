"""torchrun worker of bench_switches.py (cases ddp-1, ddp-2): cGAN steps of the shared training loop."""
import json
import sys
from pathlib import Path

import numpy as np

from histaug import distributed
from histaug.train_generator import train_generator

out, steps = Path(sys.argv[1]), int(sys.argv[2])
dist, _ = distributed.init_from_env("cpu")
images = np.random.default_rng(0).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
cfg = {"family": "cgan", "image_size": 32, "latent_dim": 64, "loss": "wgan-gp", "gp_weight": 10.0, "n_critic": 1,
       "g_channels": 32, "d_channels": 32, "batch_size": 32, "lr": 2e-4, "steps": steps, "log_every": steps,
       "checkpoint_every": 10 * steps, "seed": 0, "gpus": dist.world}
summary = train_generator("cgan", cfg, images, np.arange(512) % 2, 2, out / "cgan.pt", out / "state", {"device": "cpu"})
if dist.is_main:
    (out / "summary.json").write_text(json.dumps(summary, default=str))
distributed.shutdown()
