"""Tests of torch2x/calibration.py: the KL search against hand-computed values, the statistical
behaviour of the thresholds, exact histogram growth, INT8 rounding and the cache round trip."""
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from torch2x.calibration import (CalibrationCache, HistogramCollector, bin_abs, dequantize, entropy_threshold,
                                 fake_quantize, kl_divergences, max_threshold, percentile_threshold, quantize,
                                 scale_from_amax, weight_scales)

ln = math.log

# The example of the GTC 2017 slides "8-bit Inference with TensorRT": 8 bins quantized into 2.
SLIDES_HIST = np.array([1, 0, 2, 3, 5, 3, 1, 7])  # 22 values

# KL(P||Q) for candidates i = 2..8, derived by hand (no smoothing). N = 22 throughout.
# Group of source bin j is j*2 // i; Q spreads a group's count over its bins where P != 0.
HAND_KL = [
    # i=2: P=[1, 0+21]/22; groups [0,1]; group counts [1, 0] -> Q=[1, 0]: P>0 where Q=0.
    math.inf,
    # i=3: P=[1,0,2+19]/22; groups [0,0,1]; counts [1,2], non-zero P bins [1,1] -> Q=[1,0,2]/3.
    1/22*ln((1/22)/(1/3)) + 21/22*ln((21/22)/(2/3)),
    # i=4: P=[1,0,2,3+16]/22; groups [0,0,1,1]; counts [1,5], non-zero [1,2] -> Q=[1,0,2.5,2.5]/6.
    1/22*ln((1/22)/(1/6)) + 2/22*ln((2/22)/(2.5/6)) + 19/22*ln((19/22)/(2.5/6)),
    # i=5: P=[1,0,2,3,5+11]/22; groups [0,0,0,1,1]; counts [3,8], non-zero [2,2] -> Q=[1.5,0,1.5,4,4]/11.
    1/22*ln((1/22)/(1.5/11)) + 2/22*ln((2/22)/(1.5/11)) + 3/22*ln((3/22)/(4/11)) + 16/22*ln((16/22)/(4/11)),
    # i=6: P=[1,0,2,3,5,3+8]/22; groups [0,0,0,1,1,1]; counts [3,11], non-zero [2,3]
    #      -> Q=[1.5,0,1.5,11/3,11/3,11/3]/14.
    1/22*ln((1/22)/(1.5/14)) + 2/22*ln((2/22)/(1.5/14)) + 3/22*ln((3/22)/(11/3/14))
    + 5/22*ln((5/22)/(11/3/14)) + 11/22*ln((11/22)/(11/3/14)),
    # i=7: P=[1,0,2,3,5,3,1+7]/22; groups [0,0,0,0,1,1,1]; counts [6,9], non-zero [3,3] -> Q=[2,0,2,2,3,3,3]/15.
    1/22*ln((1/22)/(2/15)) + 2/22*ln((2/22)/(2/15)) + 3/22*ln((3/22)/(2/15))
    + 5/22*ln((5/22)/(3/15)) + 3/22*ln((3/22)/(3/15)) + 8/22*ln((8/22)/(3/15)),
    # i=8: no outliers; the slides' Q = [6/3,0,6/3,6/3,16/4,16/4,16/4,16/4] = [2,0,2,2,4,4,4,4], /22.
    1/22*ln(1/2) + 2/22*ln(2/2) + 3/22*ln(3/2) + 5/22*ln(5/4) + 3/22*ln(3/4) + 1/22*ln(1/4) + 7/22*ln(7/4),
]
# Numerically: inf, 0.2521, 0.4320, 0.2836, 0.1482, 0.1136, 0.1503 -> the minimum is i = 7.


def test_kl_values_match_hand_computation():
    kl = kl_divergences(SLIDES_HIST, num_quantized_bins=2, start_bin=2, eps=0)
    assert kl[0] == math.inf
    # Tolerance 1e-12 relative: float64 rounding only (the values differ from 1e-4 on).
    np.testing.assert_allclose(kl[1:], HAND_KL[1:], rtol=1e-12)


def test_entropy_threshold_picks_hand_computed_minimum():
    # Bin width 0.25; the minimum is at i = 7, so amax = (7 + 0.5) * 0.25.
    edges = np.arange(9) * 0.25
    assert entropy_threshold(SLIDES_HIST, edges, num_quantized_bins=2, start_bin=2, eps=0) == 1.875
    # start_bin excludes candidates below it: from i = 8 only the last candidate remains.
    assert entropy_threshold(SLIDES_HIST, edges, num_quantized_bins=2, start_bin=8, eps=0) == 2.125


def test_smoothing_matches_hand_computation():
    # eps = 0.5 counts added to each zero bin, taken evenly off the non-zero bins of the same vector.
    kl = kl_divergences(SLIDES_HIST, num_quantized_bins=2, start_bin=2, eps=0.5)
    # i=2: P=[1,21] has no zero; Q=[1,0] -> [1-0.5, 0+0.5]; sums 22 and 1.
    kl2 = 1/22*ln((1/22)/(0.5/1)) + 21/22*ln((21/22)/(0.5/1))
    # i=3: P=[1,0,21] -> [1-0.25, 0.5, 21-0.25] (sum 22); Q=[1,0,2] -> [0.75, 0.5, 1.75] (sum 3).
    kl3 = 0.75/22*ln((0.75/22)/(0.75/3)) + 0.5/22*ln((0.5/22)/(0.5/3)) + 20.75/22*ln((20.75/22)/(1.75/3))
    np.testing.assert_allclose(kl[:2], [kl2, kl3], rtol=1e-12)


def test_ties_choose_the_largest_candidate():
    # hist [2,2,0,0]: every candidate's Q equals P (KL 0), so the least clipping wins: (4 + 0.5) * 1.
    assert entropy_threshold(np.array([2, 2, 0, 0]), np.arange(5.0), 2, 2, eps=0) == 4.5
    assert entropy_threshold(np.array([2, 2, 0, 0]), np.arange(5.0), 2, 2) == 4.5


# Percentiles of |X| for X ~ N(0, 1): P(|X| <= t) = p  <=>  t = Phi^-1((1 + p) / 2).
ABS_NORMAL_P99 = NormalDist().inv_cdf(0.5 + 0.99 / 2)        # 2.5758
ABS_NORMAL_P99999 = NormalDist().inv_cdf(0.5 + 0.99999 / 2)  # 4.4172


@pytest.mark.parametrize("seed", range(10))
def test_gaussian_entropy_threshold_between_99_and_99_999_percentile(seed):
    # A finite-sample property: at 5e4 samples the sparse far tail is cheaper to clip than to
    # resolve (thresholds seen: 3.79..4.30 over 20 seeds). With 1e6 samples it reaches ~4.4..4.7
    # and can pass the 99.999th percentile; see the noise-free case below.
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(seed))
    c = HistogramCollector()
    c.collect("act", x)
    assert ABS_NORMAL_P99 < c.amax("act", "entropy") < ABS_NORMAL_P99999


def test_noise_free_gaussian_histogram_keeps_the_far_tail():
    # Characterization: the expected counts of |N(0,1)| over [0, 8] (no sampling noise) quantize
    # almost losslessly at 16 bins per level, so KL clips only beyond the 99.999th percentile (~4.8).
    edges = np.linspace(0.0, 8.0, 2049)
    cdf = np.array([2 * NormalDist().cdf(e) - 1 for e in edges])
    amax = entropy_threshold(np.diff(cdf) * 1e7, edges)
    assert ABS_NORMAL_P99999 < amax < 5.0


def test_outliers_give_a_threshold_far_below_the_max():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g), torch.tensor([100.0, -100.0] * 10)])
    c = HistogramCollector()
    c.collect("act", x)
    amax = c.amax("act", "entropy")
    assert c.running_max("act") == 100.0
    assert ABS_NORMAL_P99 < amax < 10.0  # 6.27: the smallest candidate, (128 + 0.5) * 100/2048
    # Without smoothing every clipping candidate has outliers in an empty last bin (KL = inf),
    # so the search can only keep the max: why eps defaults to 1e-4.
    counts, edges = c.histogram("act")
    assert entropy_threshold(counts, edges, eps=0) == pytest.approx(2048.5 * 100 / 2048)


def test_percentile_threshold_is_the_upper_edge_of_the_percentile_bin():
    x = torch.arange(1, 10_001, dtype=torch.float32) * torch.tensor([1.0, -1.0]).repeat(5_000)
    c = HistogramCollector()
    c.collect("act", x)
    counts, edges = c.histogram("act")
    width = edges[1]
    a = x.abs().numpy()
    for p in (50.0, 99.0, 99.99, 100.0):
        amax = c.amax("act", "percentile", percentile=p)
        assert (a <= amax).mean() >= p / 100           # at least p % are not clipped ...
        assert (a <= amax - width).mean() < p / 100    # ... and one bin lower is not enough
        # inverted_cdf: the smallest value with at least p % at or below it (no interpolation).
        assert amax - width < np.percentile(a, p, method="inverted_cdf") <= amax
    assert percentile_threshold(counts, edges, 100.0) == 10_000.0
    with pytest.raises(ValueError):
        percentile_threshold(counts, edges, 0.0)


def test_max_is_the_running_absolute_max_across_batches():
    c = HistogramCollector()
    for batch in ([1.0, -2.5], [-7.25, 3.0], [0.5]):
        c.collect("act", torch.tensor(batch))
    assert c.amax("act", "max") == 7.25
    assert max_threshold(7.25) == 7.25
    with pytest.raises(ValueError):
        max_threshold(math.nan)


def _right_closed_reference(a: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Independent of bin_abs's division: bin k is (edges[k], edges[k+1]] found by comparisons.
    idx = np.clip(np.searchsorted(edges, np.abs(a), side="left") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1)


def test_growing_histogram_equals_histogram_of_concatenated_data():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(20_000, generator=g) * s for s in (1.0, 3.0, 0.5, 40.0, 41.0)]
    c = HistogramCollector()
    for b in batches:
        c.collect("act", b)
    a = torch.cat(batches).numpy()
    counts, edges = c.histogram("act")
    first_max = float(batches[0].abs().max())
    # The range doubled from the first batch's max until the running max fitted (TensorRT's rule).
    assert c.range("act") / first_max == 2.0 ** round(math.log2(c.range("act") / first_max))
    assert c.running_max("act") <= c.range("act") < 2 * c.running_max("act")
    # Tolerance: none. Merging bin pairs never splits a count.
    np.testing.assert_array_equal(counts, bin_abs(a, c.range("act")))
    np.testing.assert_array_equal(counts, _right_closed_reference(a, edges))
    # numpy's left-closed bins put a value lying exactly on an edge one bin higher; the first
    # batch's max is such a value (the range is that max times a power of two).
    on_edge = int(np.isin(np.abs(a), edges[1:-1]).sum())
    assert on_edge >= 1
    numpy_counts = np.histogram(np.abs(a), bins=2048, range=(0, c.range("act")))[0]
    assert np.abs(numpy_counts - counts).sum() <= 2 * on_edge


def test_growth_is_exact_for_values_on_bin_edges_and_after_zero_batches():
    on_edges = torch.arange(0, 2049, dtype=torch.float64).float() / 2048  # every edge of [0, 1]
    batches = [torch.zeros(5), on_edges, torch.tensor([-3.0]), on_edges * 3, torch.tensor([1000.0])]
    c = HistogramCollector()
    for b in batches:
        c.collect("act", b)
    a = torch.cat(batches).numpy()
    assert c.range("act") == 1024.0  # zeros give range 0; then 1.0, doubled to 4.0, then to 1024
    counts, edges = c.histogram("act")
    np.testing.assert_array_equal(counts, bin_abs(a, 1024.0))
    np.testing.assert_array_equal(counts, _right_closed_reference(a, edges))
    assert counts.sum() == a.size


def test_collect_rejects_non_finite_values_with_the_layer_name():
    c = HistogramCollector()
    with pytest.raises(ValueError, match="layer1.0.conv1/conv2d"):
        c.collect("layer1.0.conv1/conv2d", torch.tensor([1.0, math.inf]))


def test_quantize_rounds_half_to_even_and_clamps():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 1e4, -1e4])
    q = quantize(x, 1.0)
    assert q.dtype == torch.int8
    assert q.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, -128, -128, 127, -128]
    # Half-way points at another scale: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2.
    assert quantize(torch.tensor([0.25, 0.75, -0.75]), 0.5).tolist() == [0, 2, -2]
    assert fake_quantize(torch.tensor([0.25, 0.75, 100.0]), 0.5).tolist() == [0.0, 1.0, 63.5]
    assert dequantize(torch.tensor([-128, 127], dtype=torch.int8), 0.5).tolist() == [-64.0, 63.5]


def test_quantize_per_channel_axis():
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    scale = torch.tensor([1.0, 2.0])
    assert quantize(x, scale, axis=0).tolist() == [[1, 2, 3], [0, 1, 2]]  # 0.5 -> 0, 1.5 -> 2
    assert quantize(x.t(), scale, axis=1).tolist() == [[1, 0], [2, 1], [3, 2]]
    assert fake_quantize(x, scale, axis=0).tolist() == [[1.0, 2.0, 3.0], [0.0, 2.0, 4.0]]


def test_weight_scales_are_per_output_channel_max_over_127():
    w = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    w[2] = 0.0
    s = weight_scales(w)
    expected = w.abs().reshape(4, -1).amax(dim=1) / 127
    expected[2] = 1 / 127  # an all-zero channel gets a positive scale: TensorRT rejects 0
    torch.testing.assert_close(s, expected, rtol=0, atol=0)
    # ConvTranspose weights hold the output channels on axis 1.
    torch.testing.assert_close(weight_scales(w, axis=1), w.abs().transpose(0, 1).reshape(3, -1).amax(1) / 127,
                               rtol=0, atol=0)
    # Symmetric: each channel's max maps to exactly +-127.
    assert quantize(w, s, axis=0).abs().reshape(4, -1).amax(1).tolist() == [127, 127, 0, 127]


def test_scale_is_amax_over_127():
    assert scale_from_amax(127.0) == 1.0
    assert scale_from_amax(0.0) == 1 / 127


AWKWARD = [0.1, 1 / 3, 2.0 ** -1074, 1.7976931348623157e308, 6.2744140625, 4.118377685546875e-07]


def test_cache_round_trip_is_bit_identical(tmp_path):
    cache = CalibrationCache({f"layer{i}/relu": v for i, v in enumerate(AWKWARD)})
    cache.amax["fc/linear.weight"] = [0.1, 0.7, 2.0 ** -30]
    path = tmp_path / "calibration.json"
    cache.save(path)
    loaded = CalibrationCache.load(path)
    assert loaded == cache
    for name, value in cache.amax.items():
        values = value if isinstance(value, list) else [value]
        loaded_values = loaded.amax[name] if isinstance(value, list) else [loaded.amax[name]]
        assert [v.hex() for v in loaded_values] == [v.hex() for v in values]
    data = json.loads(path.read_text())
    assert data["version"] == 2
    assert data["tensors"]["layer0/relu"]["scale"] == 0.1 / 127


def test_cache_round_trips_smoothing_factors(tmp_path):
    cache = CalibrationCache({"fc/linear": 2.5, "conv/conv2d": 1.0}, {"fc/linear": [0.5, 3.0, 1 / 3]})
    path = tmp_path / "smooth.json"
    cache.save(path)
    loaded = CalibrationCache.load(path)
    assert loaded == cache and loaded.smooth == {"fc/linear": [0.5, 3.0, 1 / 3]}
    assert "smooth" not in json.loads(path.read_text())["tensors"]["conv/conv2d"]
    with pytest.raises(ValueError, match="smoothing factors"):
        CalibrationCache({"fc/linear": 1.0}, {"fc/linear": [0.0]})


def test_cache_refuses_other_versions_and_non_finite_values():
    text = CalibrationCache({"x": 1.0}).to_json()
    with pytest.raises(ValueError, match="version"):
        CalibrationCache.from_json(text.replace('"version": 2', '"version": 1'))  # no smoothing factors
    with pytest.raises(ValueError):
        CalibrationCache({"x": math.inf})


def test_collector_compute_fills_a_cache():
    c = HistogramCollector()
    c.collect("a/relu", torch.tensor([0.0, 1.0, 2.0]))
    c.collect("b/relu", torch.tensor([-4.0]))
    cache = c.compute("max")
    assert cache.amax == {"a/relu": 2.0, "b/relu": 4.0}
    assert cache.scale("b/relu") == 4.0 / 127
    with pytest.raises(ValueError, match="unknown calibration method"):
        c.amax("a/relu", "mse")
