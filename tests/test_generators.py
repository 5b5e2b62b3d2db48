"""Generator families, the family registry and the training loops (incl. exact resume)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from histaug import train_generator as tg
from histaug.batches import BatchSampler
from histaug.generator_checkpoint import load_generator
from histaug.train_generator import state_hash, train_generator
from histaug.utils import PipelineError
from models import GANParts, available_families, build_generator, register_family

from conftest import alternating_labels, capture_logger, tiny_cgan_cfg, tiny_cvae_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}


cgan_cfg, cvae_cfg = tiny_cgan_cfg, tiny_cvae_cfg


@pytest.fixture(scope="module")
def patches(real_patches):
    """64 real patches with alternating labels (the shared folder holds one class only)."""
    return real_patches[:64], alternating_labels(64)


def generator_state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["generator_state"]


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# --------------------------------------------------------------------------- architectures


def test_builtin_families_registered():
    assert {"cgan", "cvae"} <= set(available_families())


@pytest.mark.parametrize("size", [32, 48, 64, 96])
@pytest.mark.parametrize("loss", ["wgan-gp", "bce"])
def test_cgan_shapes(size, loss):
    torch.manual_seed(0)
    parts = build_generator(cgan_cfg(image_size=size, loss=loss), condition=2, name="cgan")
    G, D = parts.generator, parts.discriminator
    assert (G.latent_dim, G.num_classes, G.image_size) == (16, 2, size)
    labels = torch.tensor([0, 1, 1])
    x = G(torch.randn(3, 16), labels)
    assert x.shape == (3, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1
    out = D(x, labels)
    assert out["source"].shape == (3,) and out["class_logits"] is None
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert has_bn == (loss != "wgan-gp")  # no batch statistics in a gradient-penalty critic


def test_cgan_start_sizes():
    from models.cgan import spatial_plan

    assert spatial_plan(96) == (6, 4)
    assert spatial_plan(48) == (6, 3)
    assert spatial_plan(64) == (4, 4)
    assert spatial_plan(32) == (4, 3)
    with pytest.raises(PipelineError, match=r"generators\.g\.image_size"):
        spatial_plan(100, "g")  # 100 = 25·2²: no start size in 3..7


@pytest.mark.parametrize("latent", [100, 500, 2000])
@pytest.mark.parametrize("size", [32, 96])
def test_cvae_shapes(latent, size):
    torch.manual_seed(0)
    vae = build_generator(cvae_cfg(image_size=size, latent_dim=latent), condition=2, name="cvae").generator
    labels = torch.tensor([1, 0])
    x = torch.rand(2, 3, size, size) * 2 - 1
    mu, logvar = vae.encode(x, labels)
    assert mu.shape == logvar.shape == (2, latent)
    x_hat, mu2, _ = vae.reconstruct(x, labels)
    assert x_hat.shape == x.shape and mu2.shape == (2, latent)
    sample = vae(torch.randn(2, latent), labels)
    assert sample.shape == (2, 3, size, size)
    assert sample.min() >= -1 and sample.max() <= 1
    assert (vae.latent_dim, vae.num_classes, vae.image_size) == (latent, 2, size)


@pytest.mark.parametrize("size", [48, 64])
def test_cvae_other_sizes(size):
    vae = build_generator(cvae_cfg(image_size=size, channels=4), 2).generator
    assert vae(torch.randn(2, 100), torch.tensor([0, 1])).shape == (2, 3, size, size)


def test_cvae_bad_geometry():
    with pytest.raises(PipelineError, match=r"generators\.v\.image_size"):
        build_generator(cvae_cfg(image_size=40, conv_layers=4), 2, name="v")


def test_label_changes_outputs():
    torch.manual_seed(0)
    parts = build_generator(cgan_cfg(), 2)
    G, D = parts.generator.eval(), parts.discriminator.eval()
    z = torch.randn(4, 16).repeat(2, 1)
    labels = torch.tensor([0] * 4 + [1] * 4)
    x = G(z, labels)
    assert not torch.allclose(x[:4], x[4:], atol=1e-6)
    img = x[:4].detach().repeat(2, 1, 1, 1)
    s = D(img, labels)["source"]
    assert not torch.allclose(s[:4], s[4:], atol=1e-7)

    vae = build_generator(cvae_cfg(), 2).generator.eval()
    zv = torch.randn(3, 100).repeat(2, 1)
    lv = torch.tensor([0] * 3 + [1] * 3)
    xv = vae(zv, lv)
    assert not torch.allclose(xv[:3], xv[3:], atol=1e-6)
    mu, _ = vae.encode(xv[:3].detach().repeat(2, 1, 1, 1), lv)
    assert not torch.allclose(mu[:3], mu[3:], atol=1e-7)


def test_config_errors():
    with pytest.raises(PipelineError, match=r"generators\.g\.family"):
        build_generator({"family": "stylegan9", "image_size": 32, "latent_dim": 8}, 2, name="g")
    with pytest.raises(PipelineError, match=r"generators\.g\.loss"):
        build_generator(cgan_cfg(loss="least-squares"), 2, name="g")
    with pytest.raises(PipelineError, match=r"generators\.g\.latent_dim"):
        build_generator({k: v for k, v in cgan_cfg().items() if k != "latent_dim"}, 2, name="g")


def test_train_rejects_unknown_loss(tmp_path, patches):
    x, y = patches
    with pytest.raises(PipelineError, match=r"generators\.mygan\.loss"):
        train_generator("mygan", cgan_cfg(loss="wasserstein"), x, y, 2, tmp_path / "g.pt", tmp_path / "s", CPU)


# --------------------------------------------------------------------------- a plugged-in family


class _TinyACGenerator(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_size = 8, num_classes, 32
        self.net = nn.Linear(8 + num_classes, 3 * 32 * 32)

    def forward(self, z, labels):
        h = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).float()], 1)
        return torch.tanh(self.net(h)).view(-1, 3, 32, 32)


class _TinyACDiscriminator(nn.Module):
    """Source/critic head and auxiliary class head, as in AC-GAN / HViTGAN / MedViTGAN."""

    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.LeakyReLU(0.2), nn.Flatten())
        self.source = nn.Linear(4 * 8 * 8, 1)
        self.cls = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x, labels):
        h = self.body(x)
        return {"source": self.source(h).squeeze(1), "class_logits": self.cls(h)}


AUGMENT_CALLS: list[int] = []


def _record_flip(x):
    """A differentiable augmentation the loop must apply to every discriminator input."""
    AUGMENT_CALLS.append(x.shape[0])
    return torch.flip(x, dims=[3])


@register_family("test_tiny_acgan")
def _build_tiny_acgan(gen_cfg, num_classes, name):
    return GANParts(
        generator=_TinyACGenerator(num_classes),
        discriminator=_TinyACDiscriminator(num_classes),
        augment=_record_flip,
    )


def test_plugged_in_family_uses_shared_adversarial_loop(tmp_path, patches):
    x, y = patches
    AUGMENT_CALLS.clear()
    cfg = cgan_cfg(family="test_tiny_acgan", n_critic=1, steps=3)
    summary = train_generator("acgan", cfg, x, y, 2, tmp_path / "out" / "g.pt", tmp_path / "state", CPU)
    hist = pd.read_csv(tmp_path / "out" / "history.csv")
    # default hooks: WGAN-GP + auxiliary-classifier terms from the class head
    assert {"d_adv", "d_gp", "d_cls_real", "d_cls_fake", "g_adv", "g_cls"} <= set(hist.columns)
    assert summary["steps"] == 3 and summary["images_per_s"] > 0
    # per step: D sees real, fake and the GP interpolates, G's update one fake batch -> 4 augmented batches
    assert AUGMENT_CALLS == [8] * 12
    G = load_generator(tmp_path / "out" / "g.pt")
    assert G(torch.randn(2, 8), torch.tensor([0, 1])).shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- training runs


def test_vae_training_on_real_patches_decreases_loss(tmp_path, real_patches):
    x = real_patches[:128]
    y = (np.arange(len(x)) % 2).astype(np.int64)
    cfg = cvae_cfg(steps=25, batch_size=16, log_every=1)
    out = tmp_path / "cvae" / "checkpoint.pt"
    summary = train_generator("cvae", cfg, x, y, 2, out, tmp_path / "cvae" / "state", CPU)
    hist = pd.read_csv(out.parent / "history.csv")
    assert list(hist["step"]) == list(range(1, 26))
    assert {"recon", "kl", "loss"} <= set(hist.columns)
    assert hist["loss"].iloc[-5:].mean() < 0.7 * hist["loss"].iloc[:5].mean()
    assert summary["final_losses"]["loss"] == pytest.approx(hist["loss"].iloc[-1])
    assert summary["images_per_s"] > 0 and summary["seconds"] > 0

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert {"family", "name", "config", "num_classes", "image_size", "latent_dim", "generator_state", "step", "summary"} <= set(ckpt)
    assert (ckpt["family"], ckpt["image_size"], ckpt["latent_dim"], ckpt["step"]) == ("cvae", 32, 100, 25)
    G = load_generator(out)
    assert not G.training
    with torch.no_grad():
        s = G(torch.randn(4, 100), torch.tensor([0, 1, 0, 1]))
    assert s.shape == (4, 3, 32, 32) and s.min() >= -1 and s.max() <= 1


def test_cgan_bce_bf16_channels_last_run(tmp_path, patches):
    x, y = patches
    compute = {"device": "cpu", "channels_last": True, "precision": {"generators": "bf16"}}
    cfg = cgan_cfg(loss="bce", n_critic=1, steps=2, ema_decay=None, sampler="shuffle")
    out = tmp_path / "g" / "checkpoint.pt"
    summary = train_generator("cgan_bce", cfg, x, y, 2, out, tmp_path / "state", compute)
    assert np.isfinite(summary["final_losses"]["d_loss"]) and np.isfinite(summary["final_losses"]["g_loss"])
    G = load_generator(out)
    assert G(torch.randn(2, 16), torch.tensor([0, 1])).shape == (2, 3, 32, 32)


def test_ema_weights_are_saved(tmp_path, patches):
    x, y = patches
    cfg = cgan_cfg(steps=2, n_critic=1, ema_decay=0.5, keep_state=True)
    out = tmp_path / "checkpoint.pt"
    train_generator("cgan", cfg, x, y, 2, out, tmp_path / "state", CPU)
    state = torch.load(tmp_path / "state" / "last.pt", weights_only=True)["trainer"]
    saved = generator_state(out)
    assert_states_equal(saved, {k: v.contiguous() for k, v in state["ema"].items()})
    assert not torch.equal(saved["fc.weight"], state["generator"]["fc.weight"])


def test_state_hash_ignores_steps_and_logging():
    a = cgan_cfg()
    assert state_hash(a, 2) == state_hash({**a, "steps": 99, "log_every": 7, "checkpoint_every": 3}, 2)
    assert state_hash(a, 2) != state_hash({**a, "lr": 1e-3}, 2)
    assert state_hash(a, 2) != state_hash(a, 3)


def test_resume_extends_bit_identically(tmp_path, patches):
    """train 2N straight == train N with keep_state, then call again with steps=2N (resumes from state_dir/last.pt)."""
    x, y = patches
    compute = {**CPU, "channels_last": True}
    straight = tmp_path / "a" / "g.pt"
    train_generator("cgan", cgan_cfg(steps=4, keep_state=True), x, y, 2, straight, tmp_path / "a" / "state", compute)

    log, handler = capture_logger("extend")
    split = tmp_path / "b" / "g.pt"
    first = train_generator("cgan", cgan_cfg(steps=2, keep_state=True), x, y, 2, split, tmp_path / "b" / "state", compute,
                            log=log)
    assert first["resumed_from"] == 0
    second = train_generator("cgan", cgan_cfg(steps=4, keep_state=True), x, y, 2, split, tmp_path / "b" / "state", compute,
                             log=log)
    assert second["resumed_from"] == 2 and second["steps_run"] == 2
    assert any("resuming" in m for m in handler.messages)

    assert_states_equal(generator_state(straight), generator_state(split))
    sa = torch.load(tmp_path / "a" / "state" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "state" / "last.pt", weights_only=True)
    assert_states_equal(sa["trainer"]["discriminator"], sb["trainer"]["discriminator"])
    assert_states_equal(sa["trainer"]["generator"], sb["trainer"]["generator"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    ha, hb = pd.read_csv(straight.parent / "history.csv"), pd.read_csv(split.parent / "history.csv")
    pd.testing.assert_frame_equal(ha, hb)


def test_resume_after_crash_is_bit_identical(tmp_path, patches, monkeypatch):
    """A run killed after its step-2 checkpoint and restarted ends with the same weights as one never stopped."""
    x, y = patches
    cfg = cgan_cfg(steps=4, checkpoint_every=2)
    straight = tmp_path / "a" / "g.pt"
    train_generator("cgan", cfg, x, y, 2, straight, tmp_path / "a" / "state", CPU)

    real_step = tg.AdversarialTrainer.step
    calls = {"n": 0}

    def crashing_step(self, next_batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill during step 3")
        return real_step(self, next_batch)

    monkeypatch.setattr(tg.AdversarialTrainer, "step", crashing_step)
    crashed = tmp_path / "b" / "g.pt"
    with pytest.raises(KeyboardInterrupt):
        train_generator("cgan", cfg, x, y, 2, crashed, tmp_path / "b" / "state", CPU)
    assert not crashed.exists()
    assert torch.load(tmp_path / "b" / "state" / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(tg.AdversarialTrainer, "step", real_step)

    summary = train_generator("cgan", cfg, x, y, 2, crashed, tmp_path / "b" / "state", CPU)
    assert summary["resumed_from"] == 2
    assert_states_equal(generator_state(straight), generator_state(crashed))


def test_vae_resume_is_bit_identical(tmp_path, patches):
    x, y = patches
    cfg = cvae_cfg(steps=4, ema_decay=0.9)
    train_generator("cvae", cfg, x, y, 2, tmp_path / "a" / "g.pt", tmp_path / "a" / "s", CPU)
    train_generator("cvae", cvae_cfg(steps=2, ema_decay=0.9, keep_state=True), x, y, 2, tmp_path / "b" / "g.pt",
                    tmp_path / "b" / "s", CPU)
    train_generator("cvae", cfg, x, y, 2, tmp_path / "b" / "g.pt", tmp_path / "b" / "s", CPU)
    assert_states_equal(generator_state(tmp_path / "a" / "g.pt"), generator_state(tmp_path / "b" / "g.pt"))


def test_changed_config_ignores_old_state(tmp_path, patches):
    x, y = patches
    state_dir = tmp_path / "s"
    train_generator("cvae", cvae_cfg(steps=2, keep_state=True), x, y, 2, tmp_path / "g.pt", state_dir, CPU)
    log, handler = capture_logger("hash")
    summary = train_generator("cvae", cvae_cfg(steps=3, lr=5e-4, keep_state=True), x, y, 2, tmp_path / "g.pt", state_dir,
                              CPU, log=log)
    assert summary["resumed_from"] == 0 and summary["steps_run"] == 3
    assert any("ignoring" in m and "another config" in m for m in handler.messages)
    # other training data is not resumed either
    log, handler = capture_logger("data")
    summary = train_generator("cvae", cvae_cfg(steps=4, lr=5e-4), x[::-1].copy(), y, 2, tmp_path / "g.pt", state_dir, CPU, log=log)
    assert summary["resumed_from"] == 0
    assert any("other training data" in m for m in handler.messages)


def test_balanced_sampler_is_balanced_and_resumable():
    labels = np.array([0] * 30 + [1] * 6)
    s = BatchSampler(labels, batch_size=8, balanced=True, seed=0)
    for _ in range(5):
        b = s.next()
        assert len(b) == 8 and (labels[b.numpy()] == 1).sum() == 4
    state = s.state_dict()
    ahead = [s.next() for _ in range(3)]
    s2 = BatchSampler(labels, batch_size=8, balanced=True, seed=123)
    s2.load_state_dict(state)
    for a in ahead:
        assert torch.equal(a, s2.next())
    plain = BatchSampler(labels, batch_size=36, balanced=False, seed=0)
    assert sorted(plain.next().tolist()) == list(range(36))  # one pass = a permutation


def test_images_are_resized_with_area_averaging():
    img = np.zeros((1, 96, 96, 3), np.uint8)
    img[:, ::2, :, :] = 255  # horizontal stripes: area averaging gives a flat grey, subsampling would not
    out = tg.prepare_images(img, 48, "cpu")
    assert out.shape == (1, 3, 48, 48) and out.dtype == torch.uint8
    assert int(out.min()) == int(out.max()) == 128
    x = tg.to_model_range(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.tolist() == [-1.0, 1.0]
