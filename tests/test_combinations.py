"""Attribute combinations and AttributeGAN's rare-combination filter (histaug/combinations.py)."""

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from histaug.combinations import (apply_filter, compare_with_authors, contrastive_table, count_combinations,
                                  filter_combinations, rare_threshold, read_annotations)
from histaug.utils import PipelineError

AUTHORS_CSV = SHARED_DATA / "attributegan-annotations" / "bladder_attributes.csv"
NAMES = ["crowding", "polarity", "mitosis"]


def hand_levels() -> np.ndarray:
    """Combinations with known counts: 1-0-1 x5, 0-2-1 x3, 1-1-0 x3, 2-0-0 x1, 0-0-0 x1 (13 images)."""
    rows = [(1, 0, 1)] * 5 + [(0, 2, 1)] * 3 + [(1, 1, 0)] * 3 + [(2, 0, 0)] + [(0, 0, 0)]
    return np.array(rows)[np.random.default_rng(0).permutation(len(rows))]


@pytest.fixture(scope="module")
def authors():
    levels, names, frame = read_annotations(AUTHORS_CSV)
    return levels, names, frame, count_combinations(levels, names, source=str(AUTHORS_CSV))


def test_counts_on_hand_made_table():
    t = count_combinations(hand_levels(), NAMES)
    assert list(t.columns) == ["combination", "crowding_level", "polarity_level", "mitosis_level", "count"]
    # count descending, ties by the levels ascending
    assert t["combination"].tolist() == ["1-0-1", "0-2-1", "1-1-0", "0-0-0", "2-0-0"]
    assert t["count"].tolist() == [5, 3, 3, 1, 1]
    assert t.loc[1, ["crowding_level", "polarity_level", "mitosis_level"]].tolist() == [0, 2, 1]
    # names that already end in _level are not doubled
    assert "crowding_level" in count_combinations(hand_levels(), ["crowding_level", "b", "c"]).columns


def test_counts_reject_bad_levels():
    with pytest.raises(PipelineError, match="negative attribute levels in rows 1"):
        count_combinations(np.array([[0, 1], [0, -1]]), ["a", "b"])
    with pytest.raises(PipelineError, match="names"):
        count_combinations(np.array([[0, 1]]), ["a"])
    with pytest.raises(PipelineError, match="whole numbers"):
        count_combinations(np.array([[0.5, 1.0]]), ["a", "b"])


@pytest.mark.parametrize("percentile", [0, 20, 37.5, 50, 80, 100])
def test_threshold_is_numpy_percentile_of_per_combination_counts(percentile):
    counts = count_combinations(hand_levels(), NAMES)
    direct = np.percentile(np.array([5, 3, 3, 1, 1]), percentile)  # numpy default = linear
    assert rare_threshold(counts["count"], percentile) == pytest.approx(direct)
    f = filter_combinations(counts, percentile, rule="below")
    assert f.attrs["threshold"] == pytest.approx(direct)
    assert f["frequent"].tolist() == [c >= direct for c in [5, 3, 3, 1, 1]]


def test_drop_and_merge_on_hand_made_table():
    counts = count_combinations(hand_levels(), NAMES)
    # 40th percentile of [1, 1, 3, 3, 5] (linear): index 0.4 * 4 = 1.6, 1 + 0.6 * (3 - 1) = 2.2: counts 1 are rare under either rule
    drop = filter_combinations(counts, 40, mode="drop")
    assert drop.attrs["threshold"] == pytest.approx(2.2)
    assert drop["kept"].tolist() == [True, True, True, False, False]
    assert drop["contrastive_class"].tolist() == [0, 1, 2, -1, -1]
    merge = filter_combinations(counts, 40, mode="merge")
    assert merge["kept"].tolist() == [True] * 5
    assert merge["frequent"].tolist() == [True, True, True, False, False]
    assert merge["contrastive_class"].tolist() == [0, 1, 2, 3, 3]
    assert merge.attrs["n_classes"] == 4 and drop.attrs["n_classes"] == 3
    # rule: at the 50th percentile the threshold is 3, an observed count
    assert filter_combinations(counts, 50, rule="below")["frequent"].tolist() == [True, True, True, False, False]
    assert filter_combinations(counts, 50, rule="at_or_below")["frequent"].tolist() == [True, False, False, False, False]
    assert filter_combinations(counts, 50, mode="merge", rule="at_or_below")["contrastive_class"].tolist() == [0, 1, 1, 1, 1]
    assert "kept" not in counts.columns  # the input is not modified


def test_filter_that_leaves_nothing_is_an_error():
    counts = count_combinations(hand_levels(), NAMES)
    for mode in ("drop", "merge"):
        with pytest.raises(PipelineError, match=r"attributes\.rare\.percentile=100.*attributes\.rare\.mode=" + mode
                           + r".*all 5 combinations.*lower attributes\.rare\.percentile"):
            filter_combinations(counts, 100, mode=mode, rule="at_or_below")
    flat = count_combinations(np.array([[0, 0], [0, 1], [1, 0]]), ["a", "b"])  # every count is 1
    with pytest.raises(PipelineError, match=r"attributes\.rare\.rule=below"):
        filter_combinations(flat, 20, rule="at_or_below")
    assert filter_combinations(flat, 100, rule="below")["kept"].all()  # "below" never drops the largest count


@pytest.mark.parametrize("kwargs,key", [({"percentile": -1}, "attributes.rare.percentile"),
                                        ({"percentile": 100.5}, "attributes.rare.percentile"),
                                        ({"percentile": float("nan")}, "attributes.rare.percentile"),
                                        ({"percentile": "20"}, "attributes.rare.percentile"),
                                        ({"mode": "keep"}, "attributes.rare.mode"),
                                        ({"rule": "strictly_below"}, "attributes.rare.rule")])
def test_bad_arguments_name_their_key(kwargs, key):
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        filter_combinations(count_combinations(hand_levels(), NAMES), **kwargs)


def test_contrastive_table_mixed_radix_against_loop():
    dims = (4, 3, 2)
    rng = np.random.default_rng(1)
    levels = np.stack([rng.integers(0, d, 60) for d in dims], axis=1)
    levels = levels[~((levels[:, 0] == 3) & (levels[:, 1] == 2))]  # some combinations absent
    f = filter_combinations(count_combinations(levels, NAMES), 30, mode="drop", rule="at_or_below")
    assert (~f["kept"]).any() and f["kept"].any()
    table = contrastive_table(f, dims)
    assert len(table) == 24
    lookup = {tuple(r[:3]): r[3] for r in f[["crowding_level", "polarity_level", "mitosis_level",
                                            "contrastive_class"]].itertuples(index=False)}
    expected, index = [], 0
    for a in range(dims[0]):
        for b in range(dims[1]):
            for c in range(dims[2]):
                assert index == (a * dims[1] + b) * dims[2] + c
                expected.append(lookup.get((a, b, c), -1))
                index += 1
    assert table == expected
    assert table[(3 * 3 + 2) * 2 + 1] == -1  # absent
    with pytest.raises(PipelineError, match="crowding_level reaches 3 but the attribute has 3 levels"):
        contrastive_table(f, (3, 3, 2))


def test_apply_filter_per_image():
    levels = hand_levels()
    merge = filter_combinations(count_combinations(levels, NAMES), 40, mode="merge")
    drop = filter_combinations(count_combinations(levels, NAMES), 40, mode="drop")
    keep, cls = apply_filter(levels, drop)
    by_combo = {"1-0-1": 0, "0-2-1": 1, "1-1-0": 2, "2-0-0": -1, "0-0-0": -1}
    expected = np.array([by_combo["-".join(map(str, r))] for r in levels])
    np.testing.assert_array_equal(cls, expected)
    np.testing.assert_array_equal(keep, expected >= 0)
    assert keep.sum() == 11
    keep, cls = apply_filter(levels, merge)
    assert keep.all() and sorted(set(cls.tolist())) == [0, 1, 2, 3] and (cls == 3).sum() == 2
    keep, cls = apply_filter(np.array([[2, 2, 1], [1, 0, 1]]), merge)  # unseen combination
    assert keep.tolist() == [False, True] and cls.tolist() == [-1, 0]
    with pytest.raises(PipelineError, match="2 attributes per image"):
        apply_filter(np.array([[0, 1]]), merge)


# ---------------------------------------------------------------- the authors' CSV


def test_authors_csv_counts(authors):
    levels, names, frame, counts = authors
    assert levels.shape == (4062, 5) and len(counts) == 290 and counts["count"].sum() == 4062
    assert names == ["cell_crowding", "cell_polarity", "mitosis", "nucleoli", "pleomorphism"]
    hist = np.bincount(counts["count"])
    assert hist[1:12].tolist() == [85, 39, 24, 16, 9, 11, 5, 9, 5, 4, 3] and (counts["count"] >= 12).sum() == 80
    assert counts["count"].max() == 234 and counts.loc[0, "combination"] == "2-2-1-1-2"
    # every numpy percentile method gives the same 20th percentile: 1
    for method in ("linear", "lower", "higher", "nearest", "midpoint", "inverted_cdf", "hazen", "weibull"):
        assert np.percentile(counts["count"], 20, method=method) == 1


@pytest.mark.parametrize("rule,mode,kept_c,kept_i,classes", [("below", "drop", 290, 4062, 290),
                                                             ("below", "merge", 290, 4062, 290),
                                                             ("at_or_below", "drop", 205, 3977, 205),
                                                             ("at_or_below", "merge", 290, 4062, 206)])
def test_authors_csv_each_rule_and_mode(authors, rule, mode, kept_c, kept_i, classes):
    levels, _, _, counts = authors
    f = filter_combinations(counts, 20, mode=mode, rule=rule)
    assert f.attrs["threshold"] == 1.0
    keep, cls = apply_filter(levels, f)
    assert f["kept"].sum() == kept_c and keep.sum() == kept_i
    n_frequent = int(f["frequent"].sum())
    assert len(set(cls[keep].tolist())) == classes == f.attrs["n_classes"]
    if mode == "merge":
        assert keep.all() and len(keep) == 4062
        assert classes == n_frequent + int((~f["frequent"]).any())
        if rule == "at_or_below":
            assert classes == 1 + n_frequent == 206 and (cls == 205).sum() == 85  # the 85 single images
    table = contrastive_table(f, (5, 4, 4, 3, 5))
    flat = np.ravel_multi_index(tuple(levels.T), (5, 4, 4, 3, 5))
    np.testing.assert_array_equal(np.asarray(table)[flat], cls)
    assert sum(c >= 0 for c in table) == kept_c


def test_agreement_with_authors_marking(authors):
    rep = compare_with_authors(AUTHORS_CSV).set_index(["rule", "mode"])
    cols = ["combinations_kept", "images_kept", "classes", "combinations_frequent", "images_frequent",
            "combinations_agree", "images_agree", "images_kept_agree", "authors_frequent_kept"]
    got = {k: rep.loc[k, cols].astype(int).tolist() for k in rep.index}
    assert got == {("below", "drop"): [290, 4062, 290, 290, 4062, 94, 3530, 3530, 94],
                   ("below", "merge"): [290, 4062, 290, 290, 4062, 94, 3530, 3530, 94],
                   ("at_or_below", "drop"): [205, 3977, 205, 205, 3977, 179, 3615, 3615, 94],
                   ("at_or_below", "merge"): [290, 4062, 206, 205, 3977, 179, 3615, 3530, 94],
                   ("authors", "freq_id"): [94, 3530, 94, 94, 3530, 290, 4062, 4062, 94]}


def test_authors_marking_facts_quoted_in_docs(authors):
    levels, _, frame, counts = authors
    combo = pd.Series(["-".join(map(str, r)) for r in levels])
    per = frame.assign(combo=combo, n=combo.map(combo.value_counts())).groupby("combo").agg(
        n=("n", "first"), freq=("freq_id", "first"), cl=("cl_labels", "first"),
        crowd=("cell_crowding_level", "first"))
    frequent = per[per["freq"] == 0]
    assert len(frequent) == 94 and frequent["n"].sum() == 3530 and set(per.loc[per["freq"] == 1, "cl"]) == {100}
    # their cl_labels number the frequent combinations in lexicographic order of the levels
    lex = frequent.assign(key=[tuple(map(int, c.split("-"))) for c in frequent.index]).sort_values("key")
    assert lex["cl"].tolist() == list(range(94))
    # no single count cutoff reproduces the split; the best one (>= 12 images) agrees on 276 of 290
    best = max(((per["n"] >= t) == (per["freq"] == 0)).sum() for t in range(1, 300))
    assert best == ((per["n"] >= 12) == (per["freq"] == 0)).sum() == 276
    f = filter_combinations(counts, 72, rule="at_or_below")  # the percentile closest to their split
    assert f.attrs["threshold"] == 11 and f["frequent"].sum() == 80
    # a per-crowding-level cutoff fits all 290: >= 12 images at crowding 0-3, >= 5 at crowding 4
    fit = np.where(per["crowd"] < 4, per["n"] >= 12, per["n"] >= 5)
    assert (fit == (per["freq"] == 0)).all()
    mixed = per[(per["n"] >= 5) & (per["n"] <= 11)]
    assert len(mixed) == 46 and (mixed.loc[mixed["freq"] == 0, "crowd"] == 4).all()
    assert (mixed["freq"] == 0).sum() == 14


def test_read_annotations_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        read_annotations(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,a_level,b_level,freq_id,cl_labels\nx,0,1,0,0\ny,1,abc,0,0\nz,1,-2,0,0\n")
    with pytest.raises(PipelineError, match=r"bad\.csv.*rows 3, 4"):
        read_annotations(bad)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("path,a_level\nx,0\n")
    with pytest.raises(PipelineError, match=r"missing columns \['freq_id', 'cl_labels'\]"):
        compare_with_authors(nocol)
