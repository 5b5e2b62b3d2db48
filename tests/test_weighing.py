"""Multi-loss weighing of the classification losses (models/weighing.py, [H] Eq. 4 and Eq. 9)."""
from __future__ import annotations

import math

import pytest
import torch

from histaug.utils import PipelineError
from models.weighing import MultiLossWeighing

LOSSES = [0.7, 2.3, 0.05]


def loss_tensors(values=LOSSES, requires_grad=False):
    return [torch.tensor(v, requires_grad=requires_grad) for v in values]


def test_hvitgan_mode_matches_equation_9():
    w = MultiLossWeighing(3, "hvitgan")
    sigmas = [0.3, -1.2, 2.0]
    with torch.no_grad():
        w.sigma.copy_(torch.tensor(sigmas))
    expected = sum(math.exp(-s) * L + s for s, L in zip(sigmas, LOSSES))
    assert w(loss_tensors()).item() == pytest.approx(expected, rel=1e-6)
    assert w.weights() == pytest.approx([math.exp(-s) for s in sigmas], rel=1e-6)


def test_hvitgan_sigma_gradient_is_analytic():
    w = MultiLossWeighing(3, "hvitgan")
    sigmas = torch.tensor([0.0, 0.8, -0.5])
    with torch.no_grad():
        w.sigma.copy_(sigmas)
    losses = loss_tensors(requires_grad=True)
    w(losses).backward()
    L = torch.tensor(LOSSES)
    torch.testing.assert_close(w.sigma.grad, -torch.exp(-sigmas) * L + 1)
    # and each loss is scaled by its weight exp(-σ_i)
    torch.testing.assert_close(torch.stack([l.grad for l in losses]), torch.exp(-sigmas))


def test_hvitgan_sigmas_start_at_zero_with_unit_weights():
    w = MultiLossWeighing(3)
    assert w.mode == "hvitgan"
    assert torch.equal(w.sigma.detach(), torch.zeros(3))
    assert w.weights() == [1.0, 1.0, 1.0]
    assert w(loss_tensors()).item() == pytest.approx(sum(LOSSES), rel=1e-6)


def test_kendall_mode_matches_equation_4():
    w = MultiLossWeighing(3, "kendall")
    gammas = [0.5, 1.0, 3.0]
    with torch.no_grad():
        w.log_gamma.copy_(torch.log(torch.tensor(gammas)))
    expected = sum(L / (2 * g**2) + math.log(g) for g, L in zip(gammas, LOSSES))
    assert w(loss_tensors()).item() == pytest.approx(expected, rel=1e-6)
    assert w.weights() == pytest.approx([1 / (2 * g**2) for g in gammas], rel=1e-6)


def test_kendall_log_gamma_gradient_is_analytic():
    w = MultiLossWeighing(3, "kendall")
    s = torch.tensor([0.2, -0.4, 1.1])
    with torch.no_grad():
        w.log_gamma.copy_(s)
    w(loss_tensors()).backward()
    # d/ds [L / (2 e^{2s}) + s] = -L e^{-2s} + 1
    torch.testing.assert_close(w.log_gamma.grad, -torch.tensor(LOSSES) * torch.exp(-2 * s) + 1)


def test_none_mode_is_the_plain_sum_without_parameters():
    w = MultiLossWeighing(3, "none")
    assert list(w.parameters()) == []
    assert w(loss_tensors()).item() == pytest.approx(sum(LOSSES), rel=1e-6)
    assert w.weights() == [1.0, 1.0, 1.0]


def test_indices_select_the_sigmas_of_one_update():
    w = MultiLossWeighing(3, "hvitgan")
    with torch.no_grad():
        w.sigma.copy_(torch.tensor([0.1, 0.2, 0.3]))
    d_step = w(loss_tensors([2.3, 0.05]), indices=[1, 2])
    assert d_step.item() == pytest.approx(math.exp(-0.2) * 2.3 + 0.2 + math.exp(-0.3) * 0.05 + 0.3, rel=1e-6)
    g_step = w(loss_tensors([0.7]), indices=[0])
    g_step.backward()
    assert w.sigma.grad[1:].abs().sum() == 0 and w.sigma.grad[0] != 0


def test_log_dict_reports_weights_and_sigmas():
    w = MultiLossWeighing(2, "hvitgan")
    assert w.log_dict() == {"cls_weight_0": 1.0, "cls_weight_1": 1.0, "cls_sigma_0": 0.0, "cls_sigma_1": 0.0}
    k = MultiLossWeighing(1, "kendall")
    assert k.log_dict(prefix="w") == {"w_weight_0": 0.5, "w_log_gamma_0": 0.0}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: MultiLossWeighing(2, "uncertainty"), "unknown"),
        (lambda: MultiLossWeighing(0), "positive"),
        (lambda: MultiLossWeighing(3)(loss_tensors([1.0, 2.0])), "expected 3 losses"),
        (lambda: MultiLossWeighing(3)(loss_tensors([1.0]), indices=[3]), "must be distinct"),
        (lambda: MultiLossWeighing(3)(loss_tensors([1.0, 2.0]), indices=[1, 1]), "must be distinct"),
    ],
)
def test_bad_use_raises(call, message):
    with pytest.raises(PipelineError, match=message):
        call()
