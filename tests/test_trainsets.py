"""Assembly of the downstream training sets."""
import logging

import numpy as np
import pytest

from histaug.io import write_images
from histaug.trainsets import parse_variant, training_set
from histaug.utils import PipelineError

LOG = logging.getLogger("test")


def test_parse_variant():
    assert parse_variant("real") == ("real", None)
    assert parse_variant("real+cgan") == ("augmented", "cgan")
    assert parse_variant("real+cgan.selected") == ("selected", "cgan")
    assert parse_variant("cvae") == ("synthetic", "cvae")


def test_training_sets(tmp_path, real_patches):
    real = (real_patches[:10], np.arange(10) % 2)
    syn = (real_patches[10:16, ::3, ::3], np.array([0, 1, 0, 1, 1, 1]))  # 32 px synthetic
    write_images(tmp_path / "all.h5", *syn)
    write_images(tmp_path / "none.h5", syn[0][:0], syn[1][:0])
    x, y, n, g, kind = training_set("real+cgan", real, [tmp_path / "all.h5"], LOG)
    assert x.shape == (16, 96, 96, 3) and n == 6 and g == "cgan" and kind == "augmented"
    assert np.array_equal(y, np.concatenate([real[1], syn[1]])) and np.array_equal(x[:10], real[0])
    x, y, n, _, kind = training_set("cgan", real, [tmp_path / "all.h5"], LOG)
    assert x.shape == (6, 96, 96, 3) and kind == "synthetic"
    x, y, n, _, kind = training_set("real+cgan.selected", real, [tmp_path / "none.h5"], LOG)
    assert len(x) == 10 and n == 0 and kind == "selected"
    with pytest.raises(PipelineError, match="no synthetic images"):
        training_set("cgan", real, [tmp_path / "none.h5"], LOG)
    x, *_ = training_set("real", real, [], LOG)
    assert x is real[0]
