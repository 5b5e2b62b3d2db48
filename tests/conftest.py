"""Shared fixtures. Real data comes from ../shared/data beside the repository (never copied in)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTAUG_SHARED_DATA", REPO.parent / "shared" / "data"))
PCAM_NEGATIVES = SHARED_DATA / "pcam-real-negatives"

os.environ.setdefault("HISTAUG_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def shared_patches_dir() -> Path:
    if not (PCAM_NEGATIVES / "labels.csv").exists():
        raise FileNotFoundError(
            f"real test patches not found at {PCAM_NEGATIVES}; put the shared data folder beside the "
            "repository (../shared/data) or set HISTAUG_SHARED_DATA"
        )
    return PCAM_NEGATIVES


@pytest.fixture(scope="session")
def real_patches(shared_patches_dir) -> np.ndarray:
    """The first 256 real PCam patches as uint8 (N, 96, 96, 3)."""
    ids = pd.read_csv(shared_patches_dir / "labels.csv")["id"].tolist()[:256]
    return np.stack([np.asarray(Image.open(shared_patches_dir / "images" / f"{i}.jpg").convert("RGB")) for i in ids])


def alternating_labels(n: int) -> np.ndarray:
    """Labels 0, 1, 0, 1, ... for the shared patches, which all belong to one class."""
    return (np.arange(n) % 2).astype(np.int64)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules that train tiny networks: faster than two for them, and not
    slowed down by other jobs competing for the cores. Use with ``pytestmark = pytest.mark.usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cgan_cfg(**over) -> dict:
    """A cGAN small enough to train a few steps in a test (override any key)."""
    return {"family": "cgan", "image_size": 32, "latent_dim": 16, "loss": "wgan-gp", "gp_weight": 10.0, "n_critic": 2,
            "g_channels": 8, "d_channels": 8, "batch_size": 8, "lr": 2e-4, "betas": [0.0, 0.9], "steps": 4,
            "ema_decay": 0.9, "checkpoint_every": 2, "log_every": 1, "seed": 0, **over}


def tiny_cvae_cfg(**over) -> dict:
    """A cVAE small enough to train a few steps in a test (override any key)."""
    return {"family": "cvae", "image_size": 32, "latent_dim": 100, "channels": 8, "conv_layers": 4, "kl_weight": 1.0,
            "batch_size": 16, "lr": 1e-3, "steps": 4, "checkpoint_every": 2, "log_every": 1, "seed": 0, **over}


class ListHandler(logging.Handler):
    """Keeps the messages of the records it receives (``.messages``)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def capture_logger(name: str) -> tuple[logging.Logger, ListHandler]:
    """A logger of its own whose messages the returned handler collects."""
    logger = logging.getLogger(f"histaug-tests.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = ListHandler()
    logger.handlers = [handler]
    return logger, handler
