"""Device choice: `auto` and the per-process GPU claim used on machines with several GPUs."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from histaug.utils import PipelineError, get_device

REPO = Path(__file__).resolve().parents[1]

# Each child claims a GPU out of 3, prints its index, then waits for a line on stdin (holding the lock).
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from histaug.utils import claim_gpu
    first = claim_gpu(3, {lock_dir!r})
    assert claim_gpu(3, {lock_dir!r}) == first  # the same process keeps its GPU
    print(first, flush=True)
    sys.stdin.readline()
""")


def start(lock_dir: Path) -> subprocess.Popen:
    code = CHILD.format(repo=str(REPO), lock_dir=str(lock_dir))
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_processes_claim_different_gpus_and_release_them(tmp_path):
    procs = [start(tmp_path) for _ in range(3)]
    claimed = [int(p.stdout.readline()) for p in procs]
    assert sorted(claimed) == [0, 1, 2]
    fourth = start(tmp_path)  # more jobs than GPUs: it shares GPU 0 rather than failing
    assert int(fourth.stdout.readline()) == 0
    # a process that ends (or is killed) frees its GPU for the next job
    freed = claimed.index(1)
    procs[freed].kill()
    procs[freed].wait()
    fifth = start(tmp_path)
    assert int(fifth.stdout.readline()) == 1
    for p in [*procs, fourth, fifth]:
        if p.poll() is None:
            p.communicate("\n", timeout=30)


def test_auto_and_explicit_devices():
    assert get_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert get_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="compute.device='cuda:1'"):
            get_device("cuda:1")


def test_unwritable_lock_folder_falls_back_to_gpu_0(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from histaug.utils import claim_gpu; print(claim_gpu(4, {str(blocker / 'locks')!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
