"""Data-parallel generator training (histaug.distributed): two gloo processes on CPU compute what one
process computes on the whole batch, through the shared training loop and its checkpoint."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from histaug import distributed
from histaug.distributed import CrossProcessBatchNorm, Distributed, per_sample
from histaug.utils import PipelineError, seed_everything
from models import build_generator

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
sys.path.insert(0, str(WORKER.parent))
from distributed_worker import CONFIGS  # noqa: E402


def _torchrun(nproc: int, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HISTAUG_NO_PROGRESS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER),
           str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.double().reshape(-1) for k, v in sorted(state.items()) if v.is_floating_point()])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    for n in (1, 2):
        _torchrun(n, out / str(n))
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_equal_one_process_on_the_global_batch(runs, name):
    one = torch.load(runs / "1" / f"{name}.pt", map_location="cpu", weights_only=False)
    two = torch.load(runs / "2" / f"{name}.pt", map_location="cpu", weights_only=False)
    assert one["summary"]["steps"] == two["summary"]["steps"] == 3
    cfg = {**one["config"]}
    seed_everything(cfg["seed"])
    init = build_generator(cfg, 2, name=name)
    nets = [("generator_state", init.generator)]
    if "discriminator_state" in one:
        nets.append(("discriminator_state", init.discriminator))
    for key, net in nets:
        assert set(one[key]) == set(two[key]) == set(net.state_dict())
        start, a, b = _flat(net.state_dict()), _flat(one[key]), _flat(two[key])
        moved = (a - start).norm()
        assert moved > 1e-3, f"{name} {key}: training did not change the weights"
        # equal up to float summation order: far below what three steps changed
        assert (a - b).norm() / moved < 1e-2, f"{name} {key}: {(a - b).norm() / moved:.3g} of the update differs"


def test_history_is_written_once_with_global_losses(runs):
    import pandas as pd

    one, two = pd.read_csv(runs / "1" / "history.csv"), pd.read_csv(runs / "2" / "history.csv")
    assert list(one["step"]) == list(two["step"])
    # logged losses are averaged over both processes, i.e. over the global batch (hvitgan is written last)
    assert two["d_cls_real"].to_numpy() == pytest.approx(one["d_cls_real"].to_numpy(), rel=1e-3)


def test_per_sample_draws_are_slices_of_the_global_draw():
    torch.manual_seed(0)
    whole = torch.rand(8, 3)
    for rank in (0, 1):
        torch.manual_seed(0)
        with distributed.use(Distributed(rank, 2)):
            part = per_sample(lambda s: torch.rand(s), (4, 3))
        assert torch.equal(part, whole[4 * rank:4 * rank + 4])
    torch.manual_seed(0)
    assert torch.equal(per_sample(lambda s: torch.rand(s), (8, 3)), whole)  # one process: the plain draw


def test_rows_and_process_counts_are_checked():
    assert Distributed(1, 4).rows(8) == slice(2, 4)
    with pytest.raises(PipelineError, match="multiple"):
        Distributed(0, 3).rows(8)
    assert distributed.requested_processes({"batch_size": 8}, "g") == 1
    assert distributed.requested_processes({"batch_size": 8, "gpus": 2}, "g") == 2
    with pytest.raises(PipelineError, match=r"generators\.g\.batch_size=6 is not a multiple of generators\.g\.gpus=4"):
        distributed.requested_processes({"batch_size": 6, "gpus": 4}, "g")
    with pytest.raises(PipelineError, match=r"generators\.g\.gpus=0"):
        distributed.requested_processes({"batch_size": 8, "gpus": 0}, "g")


def test_sync_batchnorm_conversion_keeps_weights_and_is_plain_batchnorm_in_one_process():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    torch.nn.init.normal_(net[1].weight)
    assert distributed.convert_sync_batchnorm(net, torch.device("cpu")) is net  # one process: unchanged
    with distributed.use(Distributed(0, 2)):
        converted = distributed.convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(converted[1], CrossProcessBatchNorm)
    assert torch.equal(converted[1].weight, net[1].weight)
    x = torch.randn(5, 4, 6, 6)
    ref = torch.nn.BatchNorm2d(4)
    ref.load_state_dict(converted[1].state_dict())
    assert torch.allclose(converted[1](x), ref(x), atol=1e-6)  # no group active: plain BatchNorm
    assert torch.allclose(converted[1].running_var, ref.running_var)


def test_torchrun_command_runs_the_worker_module(tmp_path):
    cmd = distributed.torchrun_command(4, tmp_path / "job.json")
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in cmd and cmd[-3:] == ["-m", "histaug.generator_job", str(tmp_path / "job.json")]
