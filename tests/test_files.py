"""Atomic output files: they appear complete or not at all, with the permissions the umask allows."""
from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from histaug.io import read_images, write_images
from histaug.utils import atomic_path, current_umask, default_file_mode, read_json, write_csv, write_json, write_text


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_mode_the_umask_allows(tmp_path, umask):
    expected = {0o022: 0o644, 0o002: 0o664}[umask]
    assert current_umask() == umask and default_file_mode() == expected

    write_json({"a": 1}, tmp_path / "out" / "a.json")
    write_csv(pd.DataFrame({"x": [1, 2]}), tmp_path / "out" / "a.csv")
    write_text("hello\n", tmp_path / "out" / "a.txt")
    x = np.zeros((3, 4, 4, 3), np.uint8)
    write_images(tmp_path / "out" / "a.h5", x, np.array([0, 1, 0]))
    with atomic_path(tmp_path / "out" / "a.pt") as tmp:
        torch.save({"w": torch.ones(2)}, tmp)

    for name in ["a.json", "a.csv", "a.txt", "a.h5", "a.pt"]:
        assert mode(tmp_path / "out" / name) == expected, name
    assert read_json(tmp_path / "out" / "a.json") == {"a": 1}
    assert read_images(tmp_path / "out" / "a.h5")[0].shape == (3, 4, 4, 3)
    assert torch.equal(torch.load(tmp_path / "out" / "a.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv", "a.h5", "a.json", "a.pt", "a.txt"]


def test_writer_that_recreates_the_file_still_gets_the_mode(tmp_path, umask):
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # e.g. a library creating its own private file
        os.write(fd, b"data")
        os.close(fd)
    assert mode(tmp_path / "b.bin") == 0o666 & ~umask


def test_failed_block_leaves_nothing(tmp_path, umask):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "c.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_umask_without_proc_is_read_and_restored(monkeypatch, umask):
    from histaug import utils

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(utils, "open", no_proc, raising=False)
    assert utils.current_umask() == umask
    assert os.umask(umask) == umask  # left as it was


@pytest.mark.parametrize("block", [None, 1, 7, 10_000])
def test_row_selection_reads_slabs_and_equals_numpy_indexing(tmp_path, block):
    """Selected rows (unsorted, repeated) come back in the asked order, equal to indexing the whole array."""
    import h5py

    from histaug.io import take_rows

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (300, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 300)
    write_images(tmp_path / "a.h5", x, y)
    rows = np.array([299, 3, 3, 0, 150, 151, 42])
    rx, ry = read_images(tmp_path / "a.h5", indices=rows)
    assert np.array_equal(rx, x[rows]) and np.array_equal(ry, y[rows])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        sorted_rows = np.unique(rows)
        assert np.array_equal(take_rows(f["x"], sorted_rows, block), x[sorted_rows])
        assert take_rows(f["x"], sorted_rows[:0], block).shape == (0, 4, 4, 3)
