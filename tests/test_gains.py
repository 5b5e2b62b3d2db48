"""Paired augmentation gains with t-intervals."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from histaug.gains import gains_latex, gains_markdown, gains_sentences, paired_gains, t_interval


def test_t_interval_against_scipy():
    x = [0.012, -0.004, 0.020, 0.007, 0.015]
    mean, low, high = t_interval(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert mean == pytest.approx(np.mean(x)) and (low, high) == pytest.approx(ref)
    # known data: n = 4, sd = 1 -> half width t_{0.975,3} / 2
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0 - 0.0], level=0.90)
    half = stats.t.ppf(0.95, 3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half))
    assert all(math.isnan(v) for v in t_interval([0.3])[1:])


def runs_table(rng, gains_by_variant, seeds=(0, 1, 2, 3, 4)):
    rows = []
    for arch in ("resnet34", "densenet169"):
        base = {s: 0.8 + 0.02 * rng.standard_normal() for s in seeds}
        for s in seeds:
            rows.append({"arch": arch, "variant": "real", "seed": s, "auc": base[s], "accuracy": base[s] - 0.1})
            for variant, gain in gains_by_variant.items():
                d = gain + 0.002 * rng.standard_normal()
                rows.append({"arch": arch, "variant": variant, "seed": s, "auc": base[s] + d, "accuracy": base[s] - 0.1 + d})
    return pd.DataFrame(rows)


def test_gains_are_per_seed_differences_and_pairing_ignores_row_order():
    rng = np.random.default_rng(0)
    runs = runs_table(rng, {"real+g": 0.05, "real+h": 0.0})
    gains = paired_gains(runs)
    r = gains[(gains["arch"] == "resnet34") & (gains["trainset"] == "real+g") & (gains["metric"] == "auc")].iloc[0]
    a = runs[(runs["arch"] == "resnet34")].pivot(index="seed", columns="variant", values="auc")
    diffs = (a["real+g"] - a["real"]).to_numpy()
    ref = stats.t.interval(0.95, 4, loc=diffs.mean(), scale=stats.sem(diffs))
    assert r["mean_gain"] == pytest.approx(diffs.mean()) and (r["ci_low"], r["ci_high"]) == pytest.approx(ref)
    assert r["n_seeds"] == 5 and r["excludes_zero"] and r["p_value"] == pytest.approx(stats.ttest_rel(a["real+g"], a["real"]).pvalue)
    shuffled = paired_gains(runs.sample(frac=1.0, random_state=3))
    key = ["arch", "trainset", "metric"]
    pd.testing.assert_frame_equal(gains.sort_values(key).reset_index(drop=True),
                                  shuffled.sort_values(key).reset_index(drop=True))
    # a zero gain (noise only) does not exclude zero; a seed missing from one side is not paired
    h = gains[(gains["trainset"] == "real+h") & (gains["metric"] == "auc")]
    assert not h["excludes_zero"].any()
    partial = paired_gains(runs[~((runs["variant"] == "real+g") & (runs["seed"] == 4))])
    assert set(partial.loc[partial["trainset"] == "real+g", "n_seeds"]) == {4}


def test_words_and_tables_say_which_gains_exclude_zero():
    rng = np.random.default_rng(1)
    gains = paired_gains(runs_table(rng, {"real+g": 0.05, "real+h": 0.0}))
    label = lambda arch, ts: f"{arch}+{ts}"  # noqa: E731
    text = gains_sentences(gains, label)
    assert "resnet34+real+g improves AUC by 0.05" in text and "not distinguishable from zero" in text
    md = gains_markdown(gains, label)
    assert md.count("**+0.05") >= 2 and "| resnet34+real+h |" in md
    assert r"\textbf{" in gains_latex(gains, label, "caption")
    two = paired_gains(runs_table(rng, {"real+g": 0.0}, seeds=(0, 1)))
    assert "very wide" in gains_sentences(two, label)
