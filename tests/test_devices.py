"""Device choice: `auto` and the per-process GPU claim used on machines with several GPUs."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from histaug import utils
from histaug.utils import PipelineError, claim_gpu, get_device

REPO = Path(__file__).resolve().parents[1]

# Each child claims a GPU out of 3, prints its index, then waits for a line on stdin (holding the lock).
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from histaug.utils import claim_gpu
    first = claim_gpu(3, {lock_dir!r}, wait_seconds=60, poll_seconds=0.2)
    assert claim_gpu(3, {lock_dir!r}) == first  # the same process keeps its GPU
    print(first, flush=True)
    sys.stdin.readline()
""")

# Holds the locks of the GPUs given, prints "held"; after `release_after` seconds (if >= 0) closes the
# lock of GPU `release`; then waits for a line on stdin.
HOLDER = textwrap.dedent("""
    import fcntl, sys, time
    from pathlib import Path
    folder, gpus, release, release_after = Path({lock_dir!r}), {gpus!r}, {release!r}, {release_after!r}
    folder.mkdir(parents=True, exist_ok=True)
    handles = {{}}
    for i in gpus:
        handles[i] = open(folder / f"gpu{{i}}.lock", "a+")
        fcntl.flock(handles[i], fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("held", flush=True)
    if release_after >= 0:
        time.sleep(release_after)
        handles.pop(release).close()
    sys.stdin.readline()
""")


def start(lock_dir: Path) -> subprocess.Popen:
    code = CHILD.format(repo=str(REPO), lock_dir=str(lock_dir))
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def hold(lock_dir: Path, gpus, release: int = -1, release_after: float = -1.0) -> subprocess.Popen:
    code = HOLDER.format(lock_dir=str(lock_dir), gpus=list(gpus), release=release, release_after=release_after)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.communicate("\n", timeout=30)


@pytest.fixture
def fresh_claim(monkeypatch):
    """This test process has claimed no GPU yet; whatever the test claims is released afterwards."""
    monkeypatch.setattr(utils, "_CLAIMED_GPU", None)
    yield
    claimed = utils._CLAIMED_GPU
    if claimed is not None and claimed[1] is not None:
        claimed[1].close()


@pytest.fixture
def device_log(caplog):
    logger = logging.getLogger("histaug.devices")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="histaug.devices")
    yield caplog
    logger.removeHandler(caplog.handler)


def test_processes_claim_different_gpus_and_wait_for_a_free_one(tmp_path):
    procs = [start(tmp_path) for _ in range(3)]
    claimed = [int(p.stdout.readline()) for p in procs]
    assert sorted(claimed) == [0, 1, 2]
    fourth = start(tmp_path)  # more jobs than GPUs: it waits instead of piling onto GPU 0
    time.sleep(1.0)
    assert fourth.poll() is None
    # a process that ends (or is killed) frees its GPU for the waiting job
    freed = claimed.index(1)
    procs[freed].kill()
    procs[freed].wait()
    assert int(fourth.stdout.readline()) == 1
    finish(*procs, fourth)


def test_repeated_calls_return_the_same_gpu(tmp_path, fresh_claim):
    holder = hold(tmp_path, [0])
    try:
        assert claim_gpu(3, tmp_path, wait_seconds=1) == 1
        assert claim_gpu(3, tmp_path, wait_seconds=1) == 1
        assert claim_gpu(3, tmp_path / "elsewhere") == 1  # the claim belongs to the process
    finally:
        finish(holder)
    assert claim_gpu(3, tmp_path) == 1  # also once GPU 0 is free again


def test_all_gpus_busy_times_out_with_the_fixes(tmp_path, fresh_claim, device_log):
    holder = hold(tmp_path, [0, 1])
    try:
        t0 = time.monotonic()
        with pytest.raises(PipelineError) as err:
            claim_gpu(2, tmp_path, wait_seconds=1.0, poll_seconds=0.1)
        waited = time.monotonic() - t0
    finally:
        finish(holder)
    assert 0.9 <= waited < 10
    msg = str(err.value)
    assert str(tmp_path) in msg and "all 2 GPUs" in msg
    assert "--resources gpu=2" in msg and "compute.gpu_wait_seconds" in msg
    waits = [r.getMessage() for r in device_log.records if "waiting" in r.getMessage()]
    assert len(waits) == 1 and str(tmp_path) in waits[0] and "compute.gpu_wait_seconds" in waits[0]
    assert utils._CLAIMED_GPU is None  # nothing recorded: no GPU was had


def test_gpu_freed_during_the_wait_is_taken(tmp_path, fresh_claim, device_log):
    holder = hold(tmp_path, [0, 1], release=1, release_after=1.0)
    try:
        t0 = time.monotonic()
        index = claim_gpu(2, tmp_path, wait_seconds=30, poll_seconds=0.1)
        waited = time.monotonic() - t0
        assert index == 1 and 0.5 <= waited < 20
        assert claim_gpu(2, tmp_path, wait_seconds=0) == 1
    finally:
        finish(holder)
    assert sum("waiting" in r.getMessage() for r in device_log.records) == 1


def test_unwritable_lock_folder_falls_back_to_gpu_0_and_keeps_it(tmp_path, fresh_claim):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert claim_gpu(4, blocker / "locks") == 0
    holder = hold(tmp_path / "locks", [0])  # GPU 0 is taken elsewhere; the answer stays 0 all the same
    try:
        assert claim_gpu(4, tmp_path / "locks", wait_seconds=0) == 0
    finally:
        finish(holder)


def test_unwritable_lock_folder_in_a_fresh_process(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from histaug.utils import claim_gpu; "
            f"print(claim_gpu(4, {str(blocker / 'locks')!r}), claim_gpu(4, {str(tmp_path)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0"]
    assert "not writable" in out.stderr and not list(tmp_path.glob("gpu*.lock"))


def test_get_device_passes_the_wait_from_the_compute_section(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(utils, "claim_gpu", lambda count, wait_seconds=None: seen.append((count, wait_seconds)) or 1)
    assert get_device({"device": "auto", "gpu_wait_seconds": 7}) == torch.device("cuda", 1)
    assert get_device("auto", wait_seconds=5) == torch.device("cuda", 1)
    assert get_device("auto") == torch.device("cuda", 1)  # default: claim_gpu's own (3600 s)
    assert seen == [(2, 7), (2, 5), (2, None)]


def test_auto_and_explicit_devices():
    assert get_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert get_device("cpu") == torch.device("cpu")
    assert get_device({"device": "cpu", "gpu_wait_seconds": 1}) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="compute.device='cuda:1'"):
            get_device("cuda:1")
        with pytest.raises(PipelineError, match="compute.device='cuda'"):
            get_device({"device": "cuda"})


def test_set_threads_limits_torch_without_importing_it():
    """A rule without networks does not import torch to set its threads, yet a later import starts limited."""
    import subprocess
    import sys

    code = ("import sys; from histaug.utils import set_threads; set_threads(1); assert 'torch' not in sys.modules; "
            "import torch; print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1"
    code = "import torch; from histaug.utils import set_threads; set_threads(1); print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr[-2000:]
