"""A ViT GAN's discriminator class head as a downstream classifier (HViTGAN Table 1 "Cls Head" rows)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from histaug.classifier_training import train_classifier
from histaug.classify import head_source, load_classifier, predict_proba
from histaug.selectors import load_selector
from histaug.train_generator import train_generator
from histaug.utils import PipelineError
from models.hvitgan import DEMO_CONFIG

from conftest import alternating_labels  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32", "downstream": "fp32", "evaluation": "fp32"}}
LOG = logging.getLogger("test")
DS = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-4, "weight_decay": 0.0, "augment": False, "image_size": 96}


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory, real_patches):
    """A tiny HViTGAN trained for 3 steps on 32 real patches with alternating labels."""
    x, y = real_patches[:32], alternating_labels(32)
    cfg = {**DEMO_CONFIG, "family": "hvitgan", "embed_dim": 64, "latent_dim": 16, "g_depth": 1, "batch_size": 4,
           "n_critic": 1, "lr": 1e-4, "betas": [0.0, 0.99], "steps": 3, "ema_decay": 0.9, "log_every": 1, "seed": 0}
    out = tmp_path_factory.mktemp("hv") / "checkpoint.pt"
    train_generator("hv", cfg, x, y, 2, out, out.parent / "state", CPU)
    return out


def test_head_starts_from_the_gan_discriminator(gan_checkpoint, real_patches):
    """Before fine-tuning the classifier is exactly the GAN's class head: same softmax as the head selector."""
    from histaug.classify import build_head_classifier

    head = head_source(gan_checkpoint)
    assert (head["family"], head["image_size"], head["num_classes"]) == ("hvitgan", 32, 2)
    model = build_head_classifier(head).eval()
    images = real_patches[100:106, ::3, ::3]  # already at the generator's 32 px: no resampling on either path
    meta = {"image_size": 32, "normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    ours = predict_proba(model, meta, images)
    selector = load_selector("head", gan_checkpoint, CPU)(images)
    np.testing.assert_allclose(ours, selector, rtol=1e-5, atol=1e-6)


def test_head_fine_tunes_and_reloads(gan_checkpoint, real_patches, tmp_path):
    x, y = real_patches[:48], alternating_labels(48)
    xv, yv = real_patches[48:64], alternating_labels(16)
    head = head_source(gan_checkpoint)
    summary = train_classifier("hv_head", x, y, xv, yv, DS, CPU, 0, tmp_path, log=LOG, head=head)
    assert summary["finished"] and summary["best_epoch"] in (1, 2)
    model, meta = load_classifier(tmp_path / "model.pt")
    # The head sees its generator's resolution and the GAN's [-1, 1] scaling, trained at head_lr
    assert meta["image_size"] == 32 and meta["normalisation"]["mean"] == [0.5] * 3 and meta["lr"] == 1e-4
    assert meta["head"]["generator"] == "hv" and meta["head"]["family"] == "hvitgan"
    prob = predict_proba(model, meta, xv)
    assert prob.shape == (16, 2) and np.allclose(prob.sum(1), 1, atol=1e-5)
    # fine-tuning changed the class head (the GAN's weights were the start, not the result)
    start = torch.load(gan_checkpoint, weights_only=True)["discriminator_state"]["class_head.weight"]
    assert not torch.equal(model.discriminator.class_head.weight.detach(), start)


def test_head_of_a_family_without_one_is_refused(tmp_path, real_patches):
    x, y = real_patches[:16], alternating_labels(16)
    cfg = {"family": "cvae", "image_size": 32, "latent_dim": 8, "channels": 4, "conv_layers": 4, "batch_size": 4,
           "lr": 1e-3, "steps": 1}
    out = tmp_path / "cvae.pt"
    train_generator("cv", cfg, x, y, 2, out, tmp_path / "state", CPU)
    with pytest.raises(PipelineError, match="no discriminator class head"):
        head_source(out)
