"""Cellular attribute measurements: drawn H&E-like images with known content, fitted parameters, real patches."""
import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.color import hed2rgb, rgb2hed
from skimage.draw import disk

from histaug import attribute_measures as am
from histaug.attributes import nuclear_density
from histaug.io import resize_images
from histaug.utils import PipelineError

S = 96
# fixed parameters for the drawn images (thresholds between the drawn stains, see the colour test)
DRAW_PARAMS = am.MeasureParams(size=S, nucleus_h_threshold=0.06, eosin_threshold=0.03)


def od_rgb(h: float, e: float) -> np.ndarray:
    """uint8 RGB of a pixel with hematoxylin OD h and eosin OD e (rgb2hed units), via hed2rgb."""
    return np.round(hed2rgb(np.array([[[h, e, 0.0]]])) * 255).astype(np.uint8)[0, 0]


WHITE = od_rgb(0.0, 0.0)
PINK = od_rgb(0.0, 0.06)  # eosin-stained stroma
PALE = od_rgb(0.03, 0.01)  # tissue, neither nuclear nor eosin-dominated
PURPLE = od_rgb(0.15, 0.02)  # hematoxylin-stained nucleus


def draw(background, disks, size=S, colour=PURPLE):
    """One (1, size, size, 3) image: background with disks (row, col, radius); also each disk's pixel count."""
    im = np.empty((size, size, 3), np.uint8)
    im[:] = background
    areas = []
    for r, c, rad in disks:
        rr, cc = disk((r, c), rad, shape=(size, size))
        im[rr, cc] = colour
        areas.append(len(rr))
    return im[None], np.array(areas, np.float64)


DISKS = [(12, 12, 3), (12, 50, 5), (40, 30, 4), (70, 15, 6), (75, 75, 8), (40, 80, 2.5)]


def test_drawn_stains_deconvolve_cleanly():
    hed = rgb2hed(np.stack([WHITE, PINK, PALE, PURPLE])[None], channel_axis=-1)[0]
    p = DRAW_PARAMS
    assert hed[0].max() == 0.0 and hed[1, 0] < 0.005 and hed[1, 1] > 0.055 and hed[3, 0] > 0.14
    assert (hed[[0, 1, 2], 0] <= p.nucleus_h_threshold).all() and hed[3, 0] > p.nucleus_h_threshold
    assert hed[1, 1] >= p.eosin_threshold > hed[2, 1]
    od = am.total_optical_density(np.stack([WHITE, PINK, PALE, PURPLE]))
    assert od[0] < p.tissue_od_threshold < od[1:].min()
    np.testing.assert_allclose(od, [-np.log(np.maximum(c.astype(float), 1) / 255).sum() for c in (WHITE, PINK, PALE, PURPLE)])


@pytest.mark.parametrize("background", ["pink", "white"])
def test_drawn_disks_count_area_and_cv(background):
    bg = PINK if background == "pink" else WHITE
    im, areas = draw(bg, DISKS)
    assert 0 < areas.min() and len(set(areas)) > 3
    tissue = S * S if background == "pink" else areas.sum()  # white background is not tissue
    m = am.measure(im, am.measure_names(), DRAW_PARAMS)
    assert m["nuclei_per_tissue_area"][0] == pytest.approx(len(DISKS) / tissue * 1000, rel=1e-12)
    assert m["mean_nucleus_area"][0] == pytest.approx(areas.mean(), rel=1e-12)
    assert m["mean_nucleus_area"][0] == pytest.approx(np.mean([np.pi * r ** 2 for *_, r in DISKS]), rel=0.1)
    assert m["nucleus_area_cv"][0] == pytest.approx(areas.std() / areas.mean(), rel=1e-12)
    assert m["nucleus_area_cv"][0] > 0.3
    # nuclei are not eosin stroma: on pink, the stroma fraction is the non-disk tissue
    expected_eosin = (S * S - areas.sum()) / (S * S) if background == "pink" else 0.0
    assert m["eosin_fraction"][0] == pytest.approx(expected_eosin, abs=1e-12)


def test_equal_radii_give_zero_cv_and_small_objects_are_removed():
    equal = [(15, 15, 5), (15, 60, 5), (60, 40, 5), (80, 80, 5)]
    im, areas = draw(PINK, equal)
    im[0, 40, 5:8] = im[0, 41, 5] = PURPLE  # 4 px L: exactly the minimum area, kept
    im[0, 45, 5:7] = im[0, 46, 5] = PURPLE  # 3 px: below the minimum, removed
    im[0, 88:90, 4:6] = im[0, 90:92, 6:8] = PURPLE  # two 2x2 squares touching at a corner: one 8-connected nucleus
    m = am.measure(im, ["nucleus_area_cv", "mean_nucleus_area", "nuclei_per_tissue_area"], DRAW_PARAMS)
    assert m["nuclei_per_tissue_area"][0] == pytest.approx(6 / (S * S) * 1000)  # 4 disks + L + the diagonal pair
    assert m["mean_nucleus_area"][0] == pytest.approx((areas.sum() + 4 + 8) / 6)
    one, one_area = draw(PINK, [(40, 40, 6)])
    m = am.measure(np.concatenate([draw(PINK, equal)[0], one]), ["nucleus_area_cv", "mean_nucleus_area"], DRAW_PARAMS)
    assert m["nucleus_area_cv"].tolist() == [0.0, 0.0]  # equal radii; a single nucleus (< 2 nuclei) is 0
    assert m["mean_nucleus_area"].tolist() == [areas[0], one_area[0]]


def test_background_only_has_no_nuclei():
    ims = np.concatenate([draw(WHITE, [])[0], draw(PINK, [])[0], draw(PINK, [(30, 30, 1)])[0]])  # last: a 1 px speck
    m = am.measure(ims, am.measure_names(), DRAW_PARAMS)
    for name in ("nuclei_per_tissue_area", "mean_nucleus_area", "nucleus_area_cv"):
        assert m[name].tolist() == [0.0, 0.0, 0.0], name
    assert m["eosin_fraction"][0] == 0.0  # no tissue at all
    assert m["eosin_fraction"][1] == 1.0
    assert m["hematoxylin_density"][0] == 0.0


def test_eosin_fraction_matches_drawn_stain_fractions():
    im = np.empty((1, S, S, 3), np.uint8)
    im[0, :24] = WHITE  # background: not tissue
    im[0, 24:, :30] = PINK  # stroma 72 x 30
    im[0, 24:, 30:60] = PALE  # tissue that is neither: 72 x 30
    im[0, 24:, 60:] = PURPLE  # nuclear: 72 x 36 (one big nucleus)
    m = am.measure(im, am.measure_names(), DRAW_PARAMS)
    tissue = 72 * S
    assert m["eosin_fraction"][0] == pytest.approx(72 * 30 / tissue, abs=1e-12)
    assert m["nuclei_per_tissue_area"][0] == pytest.approx(1 / tissue * 1000)
    assert m["mean_nucleus_area"][0] == 72 * 36
    half = np.empty((1, S, S, 3), np.uint8)
    half[0, :, : S // 2], half[0, :, S // 2:] = PINK, WHITE  # left half stroma, right half white
    assert am.measure(half, ["eosin_fraction"], DRAW_PARAMS)["eosin_fraction"][0] == 1.0


def test_hematoxylin_density_is_nuclear_density(real_patches):
    x = real_patches[:40]
    params = am.MeasureParams(size=S, nucleus_h_threshold=0.05, eosin_threshold=0.03)
    ref = nuclear_density(x)
    np.testing.assert_array_equal(am.measure(x, "hematoxylin_density", params, batch=7)["hematoxylin_density"], ref)
    np.testing.assert_array_equal(am.measure(x, am.measure_names(), params, batch=16)["hematoxylin_density"], ref)
    np.testing.assert_array_equal(am.REGISTRY["hematoxylin_density"](x, params), ref)


def test_params_fitted_on_train_only_and_fixed(real_patches):
    train, valid = real_patches[:128], real_patches[128:]
    p = am.fit_params(train, S, seed=0)
    before = p.to_dict()
    assert 0 < p.nucleus_h_threshold < 0.2 and 0 < p.eosin_threshold < 0.2
    assert p.tissue_od_threshold == am.TISSUE_OD_THRESHOLD and p.min_nucleus_area == 4 and p.size == S
    assert p.n_fit_images == 128 and 190_000 < p.n_fit_pixels <= 200_000  # sample without saturated pixels
    am.measure(valid, am.measure_names(), p)
    assert p.to_dict() == before  # measuring other images never changes them
    assert am.fit_params(train, S, seed=0) == p  # deterministic for a seed
    other = am.fit_params(valid, S, seed=0)
    assert other.nucleus_h_threshold != p.nucleus_h_threshold and other.eosin_threshold != p.eosin_threshold
    # measured values depend on the parameters, not on which other images are in the batch
    m_alone = am.measure(valid[:10], am.measure_names(), p)
    m_all = am.measure(valid, am.measure_names(), p, batch=64)
    for name in m_alone:
        np.testing.assert_array_equal(m_alone[name], m_all[name][:10])


def test_fitted_thresholds_separate_drawn_stains():
    rng = np.random.default_rng(1)
    ims = np.concatenate([draw(PINK if i % 2 else WHITE, [(rng.integers(10, 86), rng.integers(10, 86), 6)])[0]
                          for i in range(8)])
    p = am.fit_params(ims, S, seed=3)
    assert 0.0 <= p.nucleus_h_threshold < 0.15  # between background H (0) and the nuclei (0.15)
    m = am.measure(ims, ["nuclei_per_tissue_area", "mean_nucleus_area"], p)
    assert (m["mean_nucleus_area"] == draw(WHITE, [(40, 40, 6)])[1][0]).all()


def test_images_are_resized_to_the_measurement_size():
    big, _ = draw(PINK, [(r * 2, c * 2, rad * 2) for r, c, rad in DISKS], size=2 * S)
    m_big = am.measure(big, am.measure_names(), DRAW_PARAMS)
    m_small = am.measure(resize_images(big, S), am.measure_names(), DRAW_PARAMS)
    for name in m_big:
        np.testing.assert_array_equal(m_big[name], m_small[name])
    assert m_big["nuclei_per_tissue_area"][0] == pytest.approx(len(DISKS) / (S * S) * 1000)
    _, areas = draw(PINK, DISKS)
    assert m_big["mean_nucleus_area"][0] == pytest.approx(areas.mean(), rel=0.1)  # areas in pixels at 96 px
    p192 = am.fit_params(big, 2 * S)
    assert p192.size == 2 * S and p192.min_nucleus_area == 16
    assert [am.default_min_nucleus_area(s) for s in (24, 48, 96, 192)] == [1, 1, 4, 16]


def test_params_json_round_trip():
    p = am.MeasureParams(size=64, nucleus_h_threshold=0.0512345678901234, eosin_threshold=0.031, min_nucleus_area=2,
                         seed=7, n_fit_images=10, n_fit_pixels=999)
    d = json.loads(json.dumps(p.to_dict()))
    q = am.MeasureParams.from_dict(d)
    assert q == p and isinstance(q.size, int) and isinstance(q.eosin_threshold, float)
    with pytest.raises(PipelineError, match="missing keys.*eosin_threshold"):
        am.MeasureParams.from_dict({k: v for k, v in d.items() if k != "eosin_threshold"})
    with pytest.raises(PipelineError, match="unknown keys.*'bogus'"):
        am.MeasureParams.from_dict({**d, "bogus": 1})


def test_registry_names_and_errors():
    assert [n for n, _ in am.MEASURES] == list(am.REGISTRY) == am.measure_names()
    assert len(am.MEASURES) == 5 and all(desc for _, desc in am.MEASURES)
    im, _ = draw(PINK, DISKS)
    for name, fn in am.REGISTRY.items():
        out = fn(im, DRAW_PARAMS)
        assert out.dtype == np.float64 and out.shape == (1,)
    with pytest.raises(PipelineError, match="nuclei_count.*known measurements are hematoxylin_density.*eosin_fraction"):
        am.measure(im, ["hematoxylin_density", "nuclei_count"], DRAW_PARAMS)
    with pytest.raises(ValueError, match="uint8"):
        am.measure(im.astype(np.float32), "eosin_fraction", DRAW_PARAMS)
    with pytest.raises(ValueError, match=r"\(N,H,W,3\)"):
        am.measure(im[0], "eosin_fraction", DRAW_PARAMS)
    with pytest.raises(PipelineError, match="blank"):
        am.fit_params(draw(WHITE, [])[0], S)
    assert am.measure(im[:0], am.measure_names(), DRAW_PARAMS)["eosin_fraction"].shape == (0,)


def test_real_patches_give_finite_spread_values(real_patches):
    p = am.fit_params(real_patches[:128], S)
    m = am.measure(real_patches, am.measure_names(), p, batch=100)
    for name, v in m.items():
        assert v.shape == (len(real_patches),) and np.isfinite(v).all(), name
        assert v.min() >= 0 and v.std() > 0 and len(np.unique(v)) > 50, name
    assert m["hematoxylin_density"].max() < 1
    assert m["eosin_fraction"].max() <= 1
    assert 1 < np.median(m["nuclei_per_tissue_area"]) < 50  # ~ a few nuclei per 1,000 tissue pixels
    assert 4 <= np.median(m["mean_nucleus_area"]) < 2000
    assert np.median(m["nucleus_area_cv"]) > 0.1
    # more hematoxylin means more nuclear pixels, hence larger segmented nuclei (Spearman ~0.95 here)
    assert spearmanr(m["hematoxylin_density"], m["mean_nucleus_area"])[0] > 0.6
