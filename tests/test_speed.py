"""Speed switches (histaug.speed, fused attention): config parsing, and the same results either way."""
import pytest
import torch

from histaug.speed import compile_enabled, compiled, pin_memory_enabled, to_device
from histaug.utils import PipelineError
from models.hvitgan import DEMO_CONFIG, build_hvitgan, set_fused_attention
from models.vit_layers import MultiHeadSelfAttention


def test_compile_setting_per_stage():
    assert compile_enabled({}, "generators") is False
    assert compile_enabled({"compile": True}, "downstream") is True
    assert compile_enabled({"compile": {"generators": True}}, "generators") is True
    assert compile_enabled({"compile": {"generators": True}}, "downstream") is False
    with pytest.raises(PipelineError, match="compute.compile.*unknown stage"):
        compile_enabled({"compile": {"classifiers": True}}, "downstream")
    with pytest.raises(PipelineError, match=r"compute\.compile\.downstream='yes'"):
        compile_enabled({"compile": "yes"}, "downstream")


def test_compiled_keeps_the_module_and_its_weights():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    assert compiled(net, False) is net
    fast = compiled(net, True)
    x = torch.randn(5, 4)
    assert torch.allclose(fast(x), net(x), atol=1e-6)
    assert set(net.state_dict()) == {"0.weight", "0.bias"}  # the module's own names are untouched


def test_pin_memory_setting():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pin_memory_enabled({}, cpu) is False
    assert pin_memory_enabled({}, cuda) is True
    assert pin_memory_enabled({"pin_memory": False}, cuda) is False
    with pytest.raises(PipelineError, match="compute.pin_memory=true needs a CUDA device"):
        pin_memory_enabled({"pin_memory": True}, cpu)
    x = torch.arange(6)
    assert torch.equal(to_device(x, cpu, False), x)


def _attention_flags(module):
    return {m.fused for m in module.modules() if isinstance(m, MultiHeadSelfAttention)}


def test_fused_attention_where_no_double_backward():
    cfg = {**DEMO_CONFIG, "image_size": 32, "bottom": None}
    G, D = build_hvitgan(cfg, 2)  # gradient penalty on (default gp_weight 10): D stays explicit
    assert _attention_flags(G) == {True} and _attention_flags(D) == {False}
    G, D = build_hvitgan({**cfg, "gp_weight": 0.0}, 2)
    assert _attention_flags(D) == {True}
    G, D = build_hvitgan({**cfg, "fused_attention": False, "gp_weight": 0.0}, 2)
    assert _attention_flags(G) == _attention_flags(D) == {False}


def test_fused_and_explicit_attention_compute_the_same_function():
    torch.manual_seed(0)
    G, _ = build_hvitgan({**DEMO_CONFIG, "image_size": 32, "bottom": None}, 2)
    z, y = torch.randn(3, G.latent_dim), torch.tensor([0, 1, 0])
    fused = G(z, y)
    set_fused_attention(G, False)
    explicit = G(z, y)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert not torch.equal(fused, G(torch.randn(3, G.latent_dim), y))  # the comparison can fail


def test_gpu_hours_flop_count_matches_torch_and_counts_the_double_backward():
    import sys
    from pathlib import Path

    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_gpu_hours import flops

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert flops(lambda: a @ b) == 2 * 8 * 16 * 4
    conv, x = torch.nn.Conv2d(3, 8, 3), torch.randn(2, 3, 16, 16)
    with FlopCounterMode(display=False) as reference:
        conv(x).sum().backward()
    assert flops(lambda: conv(x).sum().backward()) == reference.get_total_flops()

    def penalty():  # a WGAN-GP-style double backward, which FlopCounterMode's module hooks cannot follow
        x_hat = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(conv(x_hat).sum(), x_hat, create_graph=True)
        grad.square().sum().backward()

    assert flops(penalty) > flops(lambda: conv(x).sum().backward())
