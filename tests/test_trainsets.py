"""Assembly of the downstream training sets."""
import logging

import numpy as np
import pytest

from histaug.io import write_images
from histaug.trainsets import parse_trainset, parse_variant, training_set
from histaug.utils import PipelineError

LOG = logging.getLogger("test")


def test_parse_variant():
    assert parse_variant("real") == ("real", None)
    assert parse_variant("real+cgan") == ("augmented", "cgan")
    assert parse_variant("real+cgan.selected") == ("selected", "cgan")
    assert parse_variant("cvae") == ("synthetic", "cvae")
    assert parse_variant("real+hvitgan_nocp.truncated") == ("truncated", "hvitgan_nocp")
    assert parse_variant("cvae.selected") == ("synthetic", "cvae")


def test_trainset_files():
    """SA off reads plain-latent samples, SA on the selected ones, truncation alone the truncated ones."""
    assert parse_trainset("real").samples_file("R") is None
    assert parse_trainset("real+hvitgan").samples_file("R") == "R/samples/hvitgan/normal.h5"
    assert parse_trainset("real+hvitgan.selected").samples_file("R") == "R/samples/hvitgan/selected.h5"
    assert parse_trainset("real+hvitgan.truncated").samples_file("R") == "R/samples/hvitgan/truncated.h5"
    ts = parse_trainset("cgan.selected")
    assert (ts.with_real, ts.generator, ts.source, ts.kind) == (False, "cgan", "selected", "synthetic")


@pytest.mark.parametrize("bad", ["Real", "real+", "real+cgan.all", "real+CGAN", "cgan.selected.x", "real+a+b", "", "real.selected"])
def test_bad_trainset_names_are_named(bad):
    with pytest.raises(PipelineError, match="downstream.trainsets"):
        parse_trainset(bad)


def test_training_sets(tmp_path, real_patches):
    real = (real_patches[:10], np.arange(10) % 2)
    syn = (real_patches[10:16, ::3, ::3], np.array([0, 1, 0, 1, 1, 1]))  # 32 px synthetic
    write_images(tmp_path / "normal.h5", *syn)
    write_images(tmp_path / "none.h5", syn[0][:0], syn[1][:0])
    x, y, n, g, kind = training_set("real+cgan", real, [tmp_path / "normal.h5"], LOG)
    assert x.shape == (16, 96, 96, 3) and n == 6 and g == "cgan" and kind == "augmented"
    assert np.array_equal(y, np.concatenate([real[1], syn[1]])) and np.array_equal(x[:10], real[0])
    x, y, n, _, kind = training_set("cgan", real, [tmp_path / "normal.h5"], LOG)
    assert x.shape == (6, 96, 96, 3) and kind == "synthetic"
    x, y, n, _, kind = training_set("real+cgan.selected", real, [tmp_path / "none.h5"], LOG)
    assert len(x) == 10 and n == 0 and kind == "selected"
    with pytest.raises(PipelineError, match="no synthetic images"):
        training_set("cgan", real, [tmp_path / "none.h5"], LOG)
    x, *_ = training_set("real", real, [], LOG)
    assert x is real[0]
