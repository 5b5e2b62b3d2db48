"""Conditions: one class or a vector of attribute levels, through the models, the training loop and sampling."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from histaug.combinations import contrastive_table, count_combinations, filter_combinations
from histaug.generator_checkpoint import load_generator
from histaug.sampling import draw_combinations, generate_for
from histaug.train_generator import train_generator
from histaug.utils import PipelineError
from models import Condition, as_condition, build_generator, family_conditions
from models.condition_layers import ConditionEmbedding

from conftest import tiny_cgan_cfg, tiny_cvae_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"device": "cpu", "channels_last": False, "precision": {"generators": "fp32"}}
LEVELS = (4, 3, 2)  # mixed level counts
NAMES = ("density", "crowding", "stroma")


def attributes(contrastive=None) -> Condition:
    return Condition.attributes(NAMES, LEVELS, contrastive)


def test_one_hot_blocks_for_mixed_level_counts():
    c = attributes()
    rows = torch.tensor([[0, 0, 0], [3, 2, 1], [1, 0, 1]])
    onehot = c.one_hot(rows)
    assert onehot.shape == (3, 9) and c.dim == 9 and c.offsets == (0, 4, 7)
    expected = np.zeros((3, 9))
    for i, row in enumerate(rows.tolist()):
        for a, level in enumerate(row):
            expected[i, c.offsets[a] + level] = 1
    assert np.array_equal(onehot.numpy(), expected)
    # a class condition is the plain one-hot of the class
    assert torch.equal(Condition.classes(3).one_hot(torch.tensor([2, 0])), torch.tensor([[0., 0., 1.], [1., 0., 0.]]))


def test_combination_index_matches_the_contrastive_table_layout():
    rng = np.random.default_rng(0)
    levels = np.stack([rng.integers(0, n, 200) for n in LEVELS], axis=1)
    filtered = filter_combinations(count_combinations(levels, NAMES), 20, "drop")
    table = contrastive_table(filtered, LEVELS)
    c = attributes(table)
    got = c.contrastive_class(torch.from_numpy(levels)).numpy()
    lookup = {tuple(r[[f"{n}_level" for n in NAMES]]): r["contrastive_class"] for _, r in filtered.iterrows()}
    assert got.tolist() == [lookup[tuple(row)] for row in levels.tolist()]
    index = c.combination_index(torch.from_numpy(levels)).numpy()
    assert index.tolist() == np.ravel_multi_index(levels.T, LEVELS).tolist()


def test_condition_round_trip_and_checks():
    c = attributes(list(range(24)))
    assert as_condition(c.to_dict()) == c and as_condition(c.to_dict()).contrastive == c.contrastive
    assert as_condition(3) == Condition.classes(3)
    with pytest.raises(ValueError, match="crowding levels must lie in"):
        c.check(np.array([[0, 3, 0]]))
    with pytest.raises(ValueError, match="does not fit"):
        c.check(np.array([0, 1]))


def test_condition_embedding_is_the_sum_of_per_attribute_embeddings():
    emb = ConditionEmbedding(attributes(), 5)
    rows = torch.tensor([[1, 2, 0]])
    w = emb.weight.detach()
    assert torch.allclose(emb(rows), w[1] + w[4 + 2] + w[7 + 0])
    assert torch.allclose(emb(rows), attributes().one_hot(rows) @ w)
    assert emb.weight.shape == (9, 5)


@pytest.mark.parametrize("family, cfg", [("cgan", tiny_cgan_cfg()), ("cvae", tiny_cvae_cfg())])
def test_baselines_take_attribute_conditions_and_react_to_one_level(family, cfg):
    assert "attributes" in family_conditions(family)
    parts = build_generator(cfg, attributes(), name=family)
    g = parts.generator.eval()
    z = torch.randn(4, g.latent_dim)
    base = torch.tensor([[1, 1, 0]] * 4)
    changed = base.clone()
    changed[:, 1] = 2
    with torch.no_grad():
        a, b = g(z, base), g(z, changed)
    assert a.shape == (4, 3, 32, 32) and not torch.allclose(a, b)
    if parts.discriminator is not None:
        out = parts.discriminator(a, base)
        assert out["source"].shape == (4,) and out["class_logits"] is None


def test_class_only_families_refuse_attributes():
    from models.hvitgan import DEMO_CONFIG

    with pytest.raises(PipelineError, match=r"generators\.hv\.condition='attributes'.*supports \['class'\]"):
        build_generator({**DEMO_CONFIG, "family": "hvitgan"}, attributes(), name="hv")


def test_attribute_conditioned_training_sampling_and_checkpoint(tmp_path, real_patches):
    x = real_patches[:48]
    rng = np.random.default_rng(1)
    levels = np.stack([rng.integers(0, n, len(x)) for n in LEVELS], axis=1)
    filtered = filter_combinations(count_combinations(levels, NAMES), 0, "drop")
    cond = attributes(contrastive_table(filtered, LEVELS))
    out = tmp_path / "g" / "checkpoint.pt"
    summary = train_generator("cvae_attr", tiny_cvae_cfg(steps=3, sampler="balanced"), x, levels, cond, out,
                              tmp_path / "g" / "state", CPU)
    assert summary["steps_run"] == 3
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["condition"]["kind"] == "attributes" and ckpt["condition"]["levels"] == list(LEVELS)
    g = load_generator(out)
    assert g.condition == cond and g.condition.contrastive == cond.contrastive
    requested = draw_combinations(levels, 10, "frequency", seed=0)
    images = generate_for(g, requested, tau=-1, seed=0)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    # the same seed gives the same images; another level of one attribute other images
    assert np.array_equal(images, generate_for(g, requested, tau=-1, seed=0))
    other = requested.copy()
    other[:, 0] = (other[:, 0] + 1) % LEVELS[0]
    z = torch.randn(10, g.latent_dim)
    with torch.no_grad():  # float outputs: after 3 steps the uint8 images may round alike
        assert not torch.allclose(g(z, torch.from_numpy(requested)), g(z, torch.from_numpy(other)))


def test_draw_combinations_by_frequency_and_uniformly():
    rows = np.array([[0, 0]] * 90 + [[1, 1]] * 10)
    freq = draw_combinations(rows, 2000, "frequency", seed=0)
    uni = draw_combinations(rows, 2000, "uniform", seed=0)
    assert 0.85 < np.mean(freq[:, 0] == 0) < 0.95 and 0.45 < np.mean(uni[:, 0] == 0) < 0.55
    assert set(map(tuple, uni.tolist())) == {(0, 0), (1, 1)}
    with pytest.raises(PipelineError, match="weights"):
        draw_combinations(rows, 5, "rare", seed=0)
    with pytest.raises(PipelineError, match="no attribute combinations"):
        draw_combinations(np.zeros((0, 2)), 5, "uniform", seed=0)


def test_attribute_labels_out_of_range_are_refused(tmp_path, real_patches):
    levels = np.zeros((8, 3), np.int64)
    levels[0, 2] = 5
    with pytest.raises(PipelineError, match="stroma levels must lie in"):
        train_generator("g", tiny_cvae_cfg(steps=1), real_patches[:8], levels, attributes(), tmp_path / "c.pt",
                        tmp_path / "s", CPU)


def test_frame_levels_helper_columns():
    counts = count_combinations(np.array([[0, 1, 1], [0, 1, 1], [3, 2, 0]]), NAMES)
    assert list(counts.columns) == ["combination", "density_level", "crowding_level", "stroma_level", "count"]
    assert isinstance(counts, pd.DataFrame) and counts["count"].tolist() == [2, 1]
