"""Truncated latents and selective augmentation."""
import numpy as np
import pytest
import torch
from scipy import stats

from histaug.sampling import generate, n_per_class_from_config, select, truncated_normal
from histaug.utils import PipelineError


def test_truncated_normal_bounds_and_distribution():
    g = torch.Generator().manual_seed(0)
    z = truncated_normal(20000, 16, 0.7, g)
    assert z.abs().max() <= 0.7
    # compare with scipy's truncated normal: KS test on one coordinate, and the analytic variance
    ks = stats.kstest(z[:, 0].numpy(), stats.truncnorm(-0.7, 0.7).cdf)
    assert ks.pvalue > 1e-3
    assert z.var().item() == pytest.approx(stats.truncnorm(-0.7, 0.7).var(), rel=0.03)
    again = truncated_normal(20000, 16, 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    plain = truncated_normal(5000, 4, -1, torch.Generator().manual_seed(0))
    assert plain.abs().max() > 2.0  # no truncation when tau < 0


def test_select_threshold_is_inclusive_and_per_intended_class():
    p = np.array([[0.6, 0.4], [0.59, 0.41], [0.2, 0.8], [0.7, 0.3]])
    y = np.array([0, 0, 1, 1])
    keep, conf = select(p, y, 0.6)
    assert keep.tolist() == [True, False, True, False]
    np.testing.assert_allclose(conf, [0.6, 0.59, 0.8, 0.3])
    with pytest.raises(PipelineError, match="selection.lambda"):
        select(p, y, 1.5)


class TinyGenerator(torch.nn.Module):
    latent_dim, num_classes, image_size = 4, 2, 8

    def forward(self, z, labels):
        base = z.mean(1, keepdim=True) + labels[:, None].float()
        return torch.tanh(base)[:, :, None, None].expand(-1, 3, 8, 8)


def test_generate_counts_labels_and_determinism():
    x, y = generate(TinyGenerator(), {0: 5, 1: 3}, 0.7, seed=1, batch_size=3)
    assert x.shape == (8, 8, 8, 3) and x.dtype == np.uint8
    assert y.tolist() == [0] * 5 + [1] * 3
    x2, _ = generate(TinyGenerator(), {0: 5, 1: 3}, 0.7, seed=1, batch_size=4)
    assert np.array_equal(x, x2)  # batching does not change the draws
    assert x[y == 1].mean() > x[y == 0].mean()


def test_n_per_class():
    assert n_per_class_from_config("match", np.array([0, 0, 1]), 2) == {0: 2, 1: 1}
    assert n_per_class_from_config(7, np.array([0]), 3) == {0: 7, 1: 7, 2: 7}
    with pytest.raises(PipelineError, match="n_per_class"):
        n_per_class_from_config("lots", np.array([0]), 2)
