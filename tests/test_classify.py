"""Downstream classifiers: construction, local weights, training on real patches, resume, inference."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import histaug.classifier_training as classifier_training
import histaug.classify as classify
from histaug.classifier_training import train_classifier
from histaug.classify import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_classifier,
    load_classifier,
    penultimate_features,
    predict_proba,
)
from histaug.metrics import binary_metrics
from histaug.utils import PipelineError

FEATURE_DIMS = {"resnet34": 512, "resnet50_cbam": 2048, "densenet169": 1664}
META_96 = {"image_size": 96, "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}

# Small, fast training settings: resnet34 at 32 px, two epochs.
TRAIN_CFG = {
    "image_size": 32,
    "epochs": 2,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "augment": True,
    "pretrained": {},
}
COMPUTE_BF16 = {"device": "cpu", "channels_last": True, "precision": {"downstream": "bf16", "evaluation": "fp32"}}
COMPUTE_FP32 = {"device": "cpu", "channels_last": False, "precision": {"downstream": "fp32", "evaluation": "fp32"}}


@pytest.fixture(scope="module")
def brightness_split(real_patches):
    """Real patches with a learnable label: mean intensity above the median = class 1.

    Returns (train_x, train_y, valid_x, valid_y) with 128 training and 64 validation patches.
    """
    x = real_patches
    brightness = x.reshape(len(x), -1).mean(axis=1)
    y = (brightness > np.median(brightness)).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    tr, va = order[:128], order[128:192]
    assert 0 < y[va].sum() < len(va)
    return x[tr], y[tr], x[va], y[va]


@pytest.fixture(scope="module")
def trained_run(brightness_split, tmp_path_factory):
    """One uninterrupted resnet34 run (bf16 + channels_last, the configured CPU setting)."""
    out = tmp_path_factory.mktemp("resnet34_seed0")
    summary = train_classifier("resnet34", *brightness_split, TRAIN_CFG, COMPUTE_BF16, seed=0, out_dir=out)
    return out, summary


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_gives_logits_and_penultimate_features(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=2).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    x = classify.to_model_input(images, 96)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    feats = penultimate_features(model, META_96, images, batch_size=2)
    assert feats.shape == (2, FEATURE_DIMS[arch])
    assert feats.dtype == np.float32
    # the classifier head applied to these features gives the same logits
    head = model.get_classifier()
    np.testing.assert_allclose(head(torch.from_numpy(feats)).detach().numpy(), logits.numpy(), rtol=1e-4, atol=1e-4)


def test_resnet50_cbam_has_cbam_in_every_bottleneck():
    import timm
    from timm.layers.cbam import CbamModule

    cbam = build_classifier("resnet50_cbam")
    plain = timm.create_model("resnet50", pretrained=False, num_classes=2)
    assert sum(isinstance(m, CbamModule) for m in cbam.modules()) == 16
    assert not any(isinstance(m, CbamModule) for m in plain.modules())
    n_cbam = sum(p.numel() for p in cbam.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_cbam > n_plain
    assert 25.5e6 < n_cbam < 26.5e6 and 23.0e6 < n_plain < 24.0e6


def test_unknown_arch_lists_valid_names():
    with pytest.raises(PipelineError, match="resnet34, resnet50_cbam, densenet169"):
        build_classifier("vgg16")


def test_missing_pretrained_file_names_config_key(tmp_path):
    missing = tmp_path / "weights" / "resnet34.pth"
    with pytest.raises(PipelineError) as err:
        build_classifier("resnet34", pretrained_path=missing)
    msg = str(err.value)
    assert "downstream.pretrained.resnet34" in msg
    assert "cannot download" in msg
    assert str(missing) in msg


def test_local_pretrained_weights_load_and_head_reinitialised(tmp_path):
    torch.manual_seed(1)
    source = build_classifier("resnet34", num_classes=2)
    path = tmp_path / "r34.pth"
    torch.save(source.state_dict(), path)

    same = build_classifier("resnet34", num_classes=2, pretrained_path=path)
    for k, v in source.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k

    torch.manual_seed(2)
    three = build_classifier("resnet34", num_classes=3, pretrained_path=path)
    assert three.fc.weight.shape == (3, 512)
    assert torch.equal(three.conv1.weight, source.conv1.weight)
    assert torch.equal(three.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)

    # strict on the backbone: weights of another architecture are refused
    torch.save(build_classifier("densenet169").state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(PipelineError, match="does not match the resnet34 backbone"):
        build_classifier("resnet34", pretrained_path=tmp_path / "wrong.pth")


def test_input_pipeline_resizes_normalises_and_augments_with_dihedral_maps():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 12, 12, 3), dtype=np.uint8)
    plain = classify.to_model_input(images, 12)
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / (
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(plain, expected)
    assert classify.to_model_input(images, 8).shape == (64, 3, 8, 8)
    assert classify.to_model_input(images, 12, channels_last=True).is_contiguous(memory_format=torch.channels_last)

    augmented = classify.to_model_input(images, 12, augment_generator=torch.Generator().manual_seed(0))
    variants = [plain, plain.flip(-1)]
    variants = [torch.rot90(v, k, dims=(-2, -1)) for v in variants for k in range(4)]
    used = set()
    for i in range(len(images)):
        matches = [j for j, v in enumerate(variants) if torch.equal(augmented[i], v[i])]
        assert matches, f"image {i} is not a flip/rotation of its input"
        used.add(matches[0])
    assert len(used) == 8  # all eight flips/rotations occur across 64 images


# --------------------------------------------------------------------------- training


def test_training_writes_best_epoch_model_and_history(trained_run, brightness_split):
    out, summary = trained_run
    _, _, valid_x, valid_y = brightness_split
    assert summary["finished"] and summary["resumed_from_epoch"] == 0
    assert (out / "model.pt").is_file() and (out / "history.csv").is_file()
    assert not (out / "state").exists()  # resume state is cleared once the model is final

    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "valid_auc", "valid_acc", "seconds"]
    assert hist["epoch"].tolist() == [1, 2]
    assert np.isfinite(hist[["train_loss", "valid_auc", "valid_acc"]].to_numpy()).all()

    model, meta = load_classifier(out / "model.pt")
    best_row = hist.iloc[int(np.argmax(hist["valid_auc"].to_numpy()))]
    assert meta["best_epoch"] == summary["best_epoch"] == int(best_row["epoch"])
    assert meta["valid_auc"] == pytest.approx(best_row["valid_auc"])
    assert meta["arch"] == "resnet34" and meta["num_classes"] == 2 and meta["image_size"] == 32
    assert meta["normalisation"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    # the brightness label is learnable from real patches
    assert meta["valid_auc"] > 0.7

    # the saved weights are the selected epoch's: they reproduce its validation AUC
    prob = predict_proba(model, meta, valid_x, batch_size=50, compute=COMPUTE_BF16, precision="bf16")
    assert prob.shape == (len(valid_x), 2)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    assert binary_metrics(valid_y, prob[:, 1])["auc"] == pytest.approx(meta["valid_auc"], abs=1e-6)

    fp32 = predict_proba(model, meta, valid_x[:5])
    assert fp32.dtype == np.float32 and np.allclose(fp32.sum(axis=1), 1.0, atol=1e-6)
    assert penultimate_features(model, meta, valid_x[:3]).shape == (3, 512)
    assert predict_proba(model, meta, valid_x[:0]).shape == (0, 2)


def test_resume_matches_uninterrupted_run(trained_run, brightness_split, tmp_path):
    out_a, summary_a = trained_run
    out_b = tmp_path / "resumed"
    first = train_classifier("resnet34", *brightness_split, TRAIN_CFG, COMPUTE_BF16, seed=0, out_dir=out_b, stop_after=1)
    assert not first["finished"] and first["epochs_completed"] == 1
    assert (out_b / "state" / "last.pt").is_file() and not (out_b / "model.pt").exists()

    second = train_classifier("resnet34", *brightness_split, TRAIN_CFG, COMPUTE_BF16, seed=0, out_dir=out_b)
    assert second["finished"] and second["resumed_from_epoch"] == 1
    assert second["best_epoch"] == summary_a["best_epoch"]

    state_a = torch.load(out_a / "model.pt", weights_only=True)["state_dict"]
    state_b = torch.load(out_b / "model.pt", weights_only=True)["state_dict"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    hist_a = pd.read_csv(out_a / "history.csv")
    hist_b = pd.read_csv(out_b / "history.csv")
    pd.testing.assert_frame_equal(hist_a.drop(columns="seconds"), hist_b.drop(columns="seconds"))


def _tiny(brightness_split, n_train=32, n_valid=16):
    tx, ty, vx, vy = brightness_split
    return tx[:n_train], ty[:n_train], vx[:n_valid], vy[:n_valid]


TINY_CFG = {**TRAIN_CFG, "image_size": 16, "epochs": 3, "batch_size": 16, "augment": False}


def test_resume_state_from_other_settings_is_not_used(brightness_split, tmp_path):
    data = _tiny(brightness_split)
    train_classifier("resnet34", *data, TINY_CFG, COMPUTE_FP32, seed=0, out_dir=tmp_path, stop_after=1)
    assert (tmp_path / "state" / "last.pt").is_file()
    changed = {**TINY_CFG, "lr": 5e-4}
    result = train_classifier("resnet34", *data, changed, COMPUTE_FP32, seed=0, out_dir=tmp_path)
    assert result["resumed_from_epoch"] == 0 and result["finished"]
    assert len(pd.read_csv(tmp_path / "history.csv")) == 3


def test_checkpoint_is_the_best_validation_epoch_not_the_last(brightness_split, tmp_path, monkeypatch):
    scripted = iter([(0.60, 0.55), (0.90, 0.80), (0.70, 0.75)])
    monkeypatch.setattr(classifier_training, "_validation_scores", lambda y, prob, selection: next(scripted))
    data = _tiny(brightness_split)
    result = train_classifier("resnet34", *data, TINY_CFG, COMPUTE_FP32, seed=3, out_dir=tmp_path / "full", keep_state=True)
    assert result["best_epoch"] == 2 and result["valid_auc"] == 0.90
    hist = pd.read_csv(tmp_path / "full" / "history.csv")
    assert hist["valid_auc"].tolist() == [0.60, 0.90, 0.70]

    saved = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    last = torch.load(tmp_path / "full" / "state" / "last.pt", weights_only=True)["model"]
    assert saved["meta"]["best_epoch"] == 2
    assert any(not torch.equal(saved["state_dict"][k], last[k]) for k in last)  # not the epoch-3 weights

    # the same run stopped after epoch 2 holds exactly the saved weights
    scripted = iter([(0.60, 0.55), (0.90, 0.80)])
    monkeypatch.setattr(classifier_training, "_validation_scores", lambda y, prob, selection: next(scripted))
    train_classifier("resnet34", *data, TINY_CFG, COMPUTE_FP32, seed=3, out_dir=tmp_path / "two", stop_after=2)
    epoch2 = torch.load(tmp_path / "two" / "state" / "last.pt", weights_only=True)["model"]
    for k in epoch2:
        assert torch.equal(saved["state_dict"][k], epoch2[k]), k


def test_single_class_validation_selects_by_accuracy(brightness_split, tmp_path):
    tx, ty, vx, vy = _tiny(brightness_split, n_valid=64)
    only_neg = vy == 0
    result = train_classifier("resnet34", tx, ty, vx[only_neg], vy[only_neg], TINY_CFG, COMPUTE_FP32, seed=0, out_dir=tmp_path)
    assert result["selection_metric"] == "accuracy"
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["valid_auc"].isna().all()
    assert result["best_epoch"] == int(hist["epoch"][int(np.argmax(hist["valid_acc"].to_numpy()))])
    assert math.isnan(result["valid_auc"])


def test_invalid_training_inputs(brightness_split, tmp_path):
    tx, ty, vx, vy = _tiny(brightness_split)
    with pytest.raises(PipelineError, match="uint8"):
        train_classifier("resnet34", tx.astype(np.float32), ty, vx, vy, TINY_CFG, COMPUTE_FP32, seed=0, out_dir=tmp_path)
    with pytest.raises(PipelineError, match="labels"):
        train_classifier("resnet34", tx, ty[:-1], vx, vy, TINY_CFG, COMPUTE_FP32, seed=0, out_dir=tmp_path)
    with pytest.raises(PipelineError, match="valid names"):
        train_classifier("resnet19", tx, ty, vx, vy, TINY_CFG, COMPUTE_FP32, seed=0, out_dir=tmp_path)
    assert not (tmp_path / "model.pt").exists()


def test_warmup_then_cosine_schedule():
    from histaug.classifier_training import warmup_cosine

    f = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [round(f(t), 6) for t in range(3)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8))) and f(10) == pytest.approx(0.0)
    assert warmup_cosine(10, 0)(5) == pytest.approx(0.5)


def test_early_stopping_stops_on_patience_and_resumes_to_the_same_end(brightness_split, tmp_path, monkeypatch):
    cfg = {**TINY_CFG, "epochs": 6, "patience": 2}
    scores = [(0.6, 0.6), (0.9, 0.8), (0.7, 0.7), (0.8, 0.7), (0.95, 0.9), (0.96, 0.9)]
    data = _tiny(brightness_split)

    def scripted():
        it = iter(scores)
        return lambda y, prob, selection: next(it)

    monkeypatch.setattr(classifier_training, "_validation_scores", scripted())
    full = train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "a")
    assert full["finished"] and full["stopped_early"] and full["epochs_completed"] == 4 and full["best_epoch"] == 2
    meta = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["meta"]
    assert meta["epochs_trained"] == 4 and meta["stopped_early"]
    # interrupted after 3 epochs, then resumed: stops at the same epoch with the same weights
    monkeypatch.setattr(classifier_training, "_validation_scores", scripted())
    first = train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "b", stop_after=3)
    assert not first["finished"]
    it = iter(scores[3:])
    monkeypatch.setattr(classifier_training, "_validation_scores", lambda y, prob, selection: next(it))
    second = train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "b")
    assert second["stopped_early"] and second["epochs_completed"] == 4 and second["resumed_from_epoch"] == 3
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_imbalanced_training_sets_get_class_balanced_batches(brightness_split, tmp_path, monkeypatch):
    tx, ty, vx, vy = _tiny(brightness_split, n_train=64)
    keep = np.concatenate([np.flatnonzero(ty == 0), np.flatnonzero(ty == 1)[:4]])  # about 8 : 1
    seen = []
    real_step = classifier_training.train_step

    def recording_step(model, optimizer, x, y, *args, **kwargs):
        seen.append(y.tolist())
        return real_step(model, optimizer, x, y, *args, **kwargs)

    monkeypatch.setattr(classifier_training, "train_step", recording_step)
    train_classifier("resnet34", tx[keep], ty[keep], vx, vy, {**TINY_CFG, "epochs": 1, "sampler": "auto"}, COMPUTE_FP32,
                     seed=0, out_dir=tmp_path / "auto")
    assert all(abs(sum(batch) - len(batch) / 2) <= 1 for batch in seen)  # half of every batch is the rare class
    seen.clear()
    train_classifier("resnet34", tx[keep], ty[keep], vx, vy, {**TINY_CFG, "epochs": 1, "sampler": "shuffle"}, COMPUTE_FP32,
                     seed=0, out_dir=tmp_path / "shuffle")
    assert sum(map(sum, seen)) == 4  # one pass: each image once


def test_state_every_seconds_skips_state_writes_but_not_the_last_before_a_stop(brightness_split, tmp_path, monkeypatch):
    """With a long state interval no epoch writes optimiser state, except the one a time-boxed call ends on, and
    the resumed run ends with the same weights as the uninterrupted one."""
    writes = []
    real_save = classifier_training.save_state
    monkeypatch.setattr(classifier_training, "save_state", lambda path, obj: (writes.append(Path(path).name), real_save(path, obj)))
    data = _tiny(brightness_split)
    cfg = {**TINY_CFG, "epochs": 3, "state_every_seconds": 3600}
    train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "a")
    assert writes == ["model.pt"]
    writes.clear()
    train_classifier("resnet34", *data, {**cfg, "state_every_seconds": 0}, COMPUTE_FP32, seed=0, out_dir=tmp_path / "c")
    assert writes == ["last.pt"] * 3 + ["model.pt"]
    writes.clear()
    first = train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "b", stop_after=2)
    assert not first["finished"] and writes == ["last.pt"]
    second = train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "b")
    assert second["resumed_from_epoch"] == 2
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_arch_overrides_change_only_their_architecture(brightness_split, tmp_path):
    data = _tiny(brightness_split)
    cfg = {**TINY_CFG, "epochs": 1, "lr": 1e-3, "arch_overrides": {"resnet50_cbam": {"lr": 3e-3}}}
    train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "r34")
    assert torch.load(tmp_path / "r34" / "model.pt", weights_only=True)["meta"]["lr"] == pytest.approx(1e-3)
    cfg["arch_overrides"] = {"resnet34": {"lr": 3e-3}}
    train_classifier("resnet34", *data, cfg, COMPUTE_FP32, seed=0, out_dir=tmp_path / "r34o")
    assert torch.load(tmp_path / "r34o" / "model.pt", weights_only=True)["meta"]["lr"] == pytest.approx(3e-3)


def test_min_steps_per_epoch_makes_an_epoch_several_passes_over_a_small_set(brightness_split, tmp_path):
    """32 images in batches of 16 are 2 steps per pass; min_steps_per_epoch 3 makes an epoch 2 passes. Two such
    epochs are the same training, step for step, as four one-pass epochs with the same total warm-up: the
    same final weights, and each long epoch's loss the mean of two short ones."""
    data = _tiny(brightness_split)
    cfg = {**TINY_CFG, "warmup_epochs": 0.5}
    long = train_classifier("resnet34", *data, {**cfg, "epochs": 2, "min_steps_per_epoch": 3}, COMPUTE_FP32, seed=0,
                            out_dir=tmp_path / "long", keep_state=True)
    short = train_classifier("resnet34", *data, {**cfg, "epochs": 4, "warmup_epochs": 1.0}, COMPUTE_FP32, seed=0,
                             out_dir=tmp_path / "short", keep_state=True)
    assert long["finished"] and short["finished"]
    h_long, h_short = pd.read_csv(tmp_path / "long/history.csv"), pd.read_csv(tmp_path / "short/history.csv")
    assert len(h_long) == 2 and len(h_short) == 4
    np.testing.assert_allclose(h_long["train_loss"], h_short["train_loss"].to_numpy().reshape(2, 2).mean(axis=1),
                               rtol=1e-5)
    w_long = torch.load(tmp_path / "long/state/last.pt", weights_only=True)["model"]
    w_short = torch.load(tmp_path / "short/state/last.pt", weights_only=True)["model"]
    assert all(torch.allclose(w_long[k].float(), w_short[k].float(), atol=1e-6) for k in w_long)
    # a set that already has enough steps per pass is trained exactly as without the setting
    same = train_classifier("resnet34", *data, {**cfg, "epochs": 2, "min_steps_per_epoch": 2}, COMPUTE_FP32, seed=0,
                            out_dir=tmp_path / "same")
    plain = train_classifier("resnet34", *data, {**cfg, "epochs": 2}, COMPUTE_FP32, seed=0, out_dir=tmp_path / "plain")
    assert same["valid_auc"] == plain["valid_auc"]
    assert pd.read_csv(tmp_path / "same/history.csv")["train_loss"].tolist() == \
        pd.read_csv(tmp_path / "plain/history.csv")["train_loss"].tolist()
