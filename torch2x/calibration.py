"""INT8 calibration computed in-house: TensorRT 11 removed the INT8 calibrators.

Quantization is symmetric: ``scale = amax / 127``, ``q = clamp(round_half_even(x / scale), -128, 127)``,
as TensorRT's IQuantizeLayer computes it. ``amax`` comes from one of three algorithms over a
per-tensor histogram of ``|x|`` (``HistogramCollector``): the KL-divergence search of TensorRT's
legacy entropy calibrator (``entropy_threshold``), a percentile (``percentile_threshold``), or the
running absolute max (``max_threshold``); or, without a histogram, the candidate ``amax`` with the
least relative quantization error per row (``RowErrorCollector``, "relative"). Weights use
per-output-channel max (``weight_scales``). Linear layers reading a layer norm's output may be
smoothed first (``smoothing_factors``, [SQ]). ``CalibrationCache`` stores the results as JSON.

Sources of the conventions:

* [GTC17] S. Migacz, "8-bit Inference with TensorRT", GTC 2017 (s7310): the entropy pseudocode,
  2048 bins, 128 quantized levels, empty bins kept empty when Q is expanded, and
  ``threshold = (m + 0.5) * bin width``.
* [TRT-DG] TensorRT developer guide, "INT8 calibration": when a batch exceeds the histogram max,
  "the histogram range is increased by a power of two to accommodate the new maximum value".
* [PQ] NVIDIA TensorRT repo, tools/pytorch-quantization, calib/histogram.py
  (``_compute_amax_entropy``, ``_compute_amax_percentile``): merge map, tie-breaking, candidates.
* [TVM] apache/tvm python/tvm/relay/quantize/kl_divergence.py (``_find_scale_by_kl``, ported from
  MXNet's ``_get_optimal_threshold``, citing [GTC17]): Q's empty bins follow P, zero smoothing.
* [SQ] G. Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
  Language Models", ICML 2023: ``s_j = max|X_j|^a / max|W_j|^(1-a)``, ``X W^T = (X / s)(W s)^T``,
  applied to the linear layers after a layer norm (where ``1/s`` folds into the norm's affine).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union
from collections.abc import Mapping, Sequence

import numpy as np
import torch

QMIN, QMAX = -128, 127
NUM_BINS = 2048
Amax = Union[float, list[float]]


def bin_abs(values: np.ndarray, range_max: float, num_bins: int = NUM_BINS) -> np.ndarray:
    """Integer counts of ``|values|`` in ``num_bins`` bins of width ``w = range_max / num_bins``.

    Bin ``k`` holds ``(k*w, (k+1)*w]`` and bin 0 also holds 0. Right-closed bins make range
    doubling exact: ``ceil(v/2w) - 1 == (ceil(v/w) - 1) // 2`` for every ``v``, and ``v == range_max``
    lands in the last bin without clamping, so a doubled histogram is bit-identical to binning the
    same data at the doubled range. (numpy's bins are left-closed; they differ only for values
    lying exactly on an edge.)

    >>> bin_abs(np.array([0.0, 0.5, 1.0, -2.0]), 2.0, 4).tolist()
    [2, 1, 0, 1]
    """
    a = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    if range_max == 0.0:
        return np.bincount(np.zeros(a.size, dtype=np.int64), minlength=num_bins)
    idx = np.ceil(a / (range_max / num_bins)).astype(np.int64) - 1
    return np.bincount(np.clip(idx, 0, num_bins - 1), minlength=num_bins)


class HistogramCollector:
    """Per-tensor histograms of ``|x|`` (float32 values, int64 counts) over ``[0, range]``.

    The range starts at the first batch's max|x|. A batch with a larger max doubles the range
    until it fits, merging bin pairs each time ([TRT-DG]). Counts are never split, so the result
    is exactly ``bin_abs(all data seen, range)``. The range lies in ``[max, 2*max)`` and depends
    on the first batch's max (TensorRT's guide warns of the same: shuffle calibration batches);
    up to half the bins may be empty. The running max is kept for "max"; percentiles read the
    histogram's CDF.

    >>> c = HistogramCollector()
    >>> c.collect("fc/linear", torch.tensor([0.5, -1.0]))
    >>> c.collect("fc/linear", torch.tensor([3.0]))
    >>> c.range("fc/linear"), c.running_max("fc/linear"), int(c.histogram("fc/linear")[0].sum())
    (4.0, 3.0, 3)
    """

    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = num_bins
        self._hist: dict[str, np.ndarray] = {}
        self._range: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self._zeros: dict[str, int] = {}  # exact zeros seen (they are also counted in bin 0)
        # Smoothing factors of the keys whose collected values were ``x / s`` (set by ``calibrate``).
        self.smooth: dict[str, list[float]] = {}

    def collect(self, key: str, x: torch.Tensor) -> None:
        """Add the values of ``x`` to the histogram of ``key`` (a layer name)."""
        a = x.detach().float().abs().reshape(-1).cpu().numpy().astype(np.float64)
        if a.size == 0:
            return
        m = float(a.max())
        if not math.isfinite(m):
            raise ValueError(f"calibration of {key!r}: the tensor (shape {tuple(x.shape)}) holds inf or NaN; "
                             "calibrate with data the float model handles")
        if key not in self._hist:
            self._hist[key] = np.zeros(self.num_bins, dtype=np.int64)
            self._range[key] = self._max[key] = m
            self._zeros[key] = 0
        self._grow(key, m)
        self._hist[key] += bin_abs(a, self._range[key], self.num_bins)
        self._max[key] = max(self._max[key], m)
        self._zeros[key] += int(np.count_nonzero(a == 0.0))

    def _grow(self, key: str, m: float) -> None:
        r = self._range[key]
        if m <= r:
            return
        if r == 0.0:
            # Only zeros were seen; they stay in bin 0 at any range, and doubling 0 never fits.
            self._range[key] = m
            return
        shift = 0
        while r < m:
            r *= 2.0
            shift += 1
        merged = np.zeros(self.num_bins, dtype=np.int64)
        np.add.at(merged, np.arange(self.num_bins) >> shift, self._hist[key])
        self._hist[key], self._range[key] = merged, r

    def keys(self) -> list[str]:
        return list(self._hist)

    def discard(self, key: str) -> None:
        """Forget ``key``'s data (to collect it anew, e.g. smoothed)."""
        for table in (self._hist, self._range, self._max, self._zeros):
            table.pop(key, None)

    def _known(self, key: str) -> str:
        if key not in self._hist:
            raise KeyError(f"no calibration data collected for {key!r}; collected: {sorted(self._hist)}")
        return key

    def range(self, key: str) -> float:
        return self._range[key]

    def running_max(self, key: str) -> float:
        return self._max[key]

    def histogram(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, edges)``: ``num_bins`` int64 counts and ``num_bins + 1`` float64 edges."""
        width = self._range[self._known(key)] / self.num_bins
        return self._hist[key].copy(), np.arange(self.num_bins + 1, dtype=np.float64) * width

    def amax(self, key: str, method: str = "entropy", **kwargs: float) -> float:
        """``amax`` of ``key`` by ``method`` ("entropy", "percentile" or "max"); kwargs go to it."""
        if method == "max":
            return max_threshold(self._max[self._known(key)])
        if method == "entropy":
            counts, edges = self.histogram(key)
            # Exact zeros (half of a post-ReLU tensor) quantize exactly at any scale, so they do not
            # weigh in the clipping trade-off; left in bin 0 they weigh Q's first group against every
            # wide candidate and pull thresholds of ReLU outputs to a third of their max.
            counts[0] -= self._zeros[key]
            if counts.sum() == 0:
                return 0.0
            return entropy_threshold(counts, edges, **kwargs)  # type: ignore[arg-type]
        if method == "percentile":
            return percentile_threshold(*self.histogram(key), **kwargs)
        raise ValueError(f"unknown calibration method {method!r}; use 'entropy', 'percentile' or 'max'")

    def compute(self, method: str = "entropy", **kwargs: float) -> CalibrationCache:
        """A cache with the ``amax`` of every collected key (and the smoothing factors, if any)."""
        return CalibrationCache({k: self.amax(k, method, **kwargs) for k in self._hist}, self.smooth)


def relative_candidates(amax: float, steps: int = 48, per_octave: int = 8) -> np.ndarray:
    """The ``amax`` values ``RowErrorCollector`` tries: ``amax * 2**(-k/per_octave)``, k = 0..steps
    (from the max down to 1/64 of it by default)."""
    return amax * np.exp2(-np.arange(steps + 1) / per_octave)


class RowErrorCollector:
    """Per key, the summed relative quantization error of each row, ``|fq(x_r) - x_r|^2 / |x_r|^2``,
    for each candidate ``amax``; ``amax(key)`` is the candidate with the least error.

    A row is the vector the operation contracts (a token's features for a linear layer, a pixel's
    channels for a convolution). Weighing each row by its own norm keeps a few huge rows (a
    transformer's outlier tokens) from setting the range of all the others: a mean squared error
    over all values would spend the int8 levels on them, and every other row would lose its
    precision; the max and percentile do the same. Rows with a rare large value still count as one
    row each, so the clipping they suffer is weighed too.

    >>> c = RowErrorCollector({"fc/linear": [4.0, 2.0, 1.0]})
    >>> c.collect("fc/linear", torch.tensor([[0.1, -0.2], [0.3, 0.05], [4.0, 0.0]]), -1)
    >>> c.amax("fc/linear")
    4.0
    """

    def __init__(self, candidates: Mapping[str, Sequence[float]]):
        self.candidates = {k: np.asarray(v, dtype=np.float64) for k, v in candidates.items()}
        self._error = {k: np.zeros(len(v)) for k, v in self.candidates.items()}

    def collect(self, key: str, x: torch.Tensor, dim: int = -1) -> None:
        rows = x.detach().float().movedim(dim, -1).reshape(-1, x.shape[dim]) if x.dim() else x.reshape(1, 1)
        norms = rows.pow(2).sum(1)
        rows, norms = rows[norms > 0], norms[norms > 0]
        if rows.numel() == 0:
            return
        scales = torch.tensor([scale_from_amax(float(a)) for a in self.candidates[key]], dtype=torch.float32)
        step = max(1, (1 << 24) // rows.numel())  # candidates at a time: at most 16M values in flight
        for i in range(0, scales.numel(), step):
            s = scales[i:i + step].reshape(-1, 1, 1)
            # fake_quantize for several scales at once (round half to even, clamp to [-128, 127])
            err = (torch.round(rows / s).clamp(QMIN, QMAX) * s - rows).pow(2).sum(2)
            self._error[key][i:i + step] += (err / norms).sum(1).double().numpy()

    def errors(self, key: str) -> np.ndarray:
        return self._error[key].copy()

    def amax(self, key: str) -> float:
        """The candidate with the least summed error; on ties the largest (less clipping)."""
        return float(self.candidates[key][int(np.argmin(self._error[key]))])


def smoothing_factors(channel_amax: np.ndarray, weight_amax: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """[SQ]'s per-input-channel factors ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``: the linear layer
    then reads ``X / s`` (per-tensor int8 with the outlier channels scaled down) and ``W * s``
    (per-output-channel int8 with their columns scaled up). A channel whose activations or weights
    are all zero keeps ``s = 1``.

    >>> smoothing_factors(np.array([16.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0])).tolist()
    [4.0, 0.5, 1.0]
    """
    x = np.asarray(channel_amax, dtype=np.float64)
    w = np.asarray(weight_amax, dtype=np.float64)
    ok = (x > 0) & (w > 0)
    return np.where(ok, np.power(np.where(ok, x, 1.0), alpha) / np.power(np.where(ok, w, 1.0), 1.0 - alpha), 1.0)


def kl_divergences(hist: np.ndarray, num_quantized_bins: int = 128, start_bin: int = 128,
                   eps: float = 1e-4) -> np.ndarray:
    """``KL(P||Q)`` (natural log) for each candidate ``i`` in ``start_bin .. len(hist)`` inclusive.

    P is ``hist[:i]`` with the outliers ``hist[i:]`` added to its last bin ([GTC17]). Q merges
    ``hist[:i]`` into ``num_quantized_bins`` groups and spreads each group's count evenly over
    the bins where P is non-zero, keeping P's empty bins empty ([GTC17], [TVM]). Source bin ``j``
    joins group ``j*nq // i``, [PQ]'s linspace/digitize map in exact integers: groups differ by
    at most one bin, where [TVM] gives the whole remainder to the last group (128 bins at i=255).

    Zeros: [TVM] smooths both count vectors before scoring, ``eps`` counts added to each zero bin
    and taken evenly off the non-zero ones, so a candidate whose last group holds only outliers
    costs about ``p_last * log(p_last / eps)`` instead of ``inf``; without it any isolated outlier
    pins the threshold at the max. ``eps=0`` gives [PQ]'s rule (``P > 0`` where ``Q == 0`` scores
    ``inf``). A smoothing that would make a count <= 0 (only tiny fractional Q counts can) scores
    ``inf`` where [TVM] fails an assertion. [GTC17] loops ``range(128, 2048)``; ``i = len(hist)``
    (no clipping) is included as in [PQ], so the max stays a candidate.

    >>> kl_divergences(np.array([1, 0, 2, 3, 5, 3, 1, 7]), 2, 8, eps=0).round(4).tolist()
    [0.1503]
    """
    h = np.asarray(hist, dtype=np.float64)
    nq = num_quantized_bins
    if not 0 < nq <= start_bin <= h.size:
        raise ValueError(f"need 0 < num_quantized_bins ({nq}) <= start_bin ({start_bin}) <= bins ({h.size})")
    tail = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # tail[i] = sum(h[i:])
    index = np.arange(h.size)
    out = np.empty(h.size - start_bin + 1)
    for i in range(start_bin, h.size + 1):
        p = h[:i].copy()
        p[-1] += tail[i]
        group = index[:i] * nq // i
        nonzero = p != 0
        total = np.bincount(group, weights=h[:i], minlength=nq)
        used = np.bincount(group, weights=nonzero.astype(np.float64), minlength=nq)
        q = np.where(nonzero, total[group] / np.maximum(used[group], 1.0), 0.0)
        out[i - start_bin] = _kl(_smooth(p, eps), _smooth(q, eps))
    return out


def _smooth(counts: np.ndarray, eps: float) -> Optional[np.ndarray]:
    zero = counts == 0
    if zero.all():
        return None
    if eps == 0.0 or not zero.any():
        return counts
    smoothed = np.where(zero, eps, counts - eps * zero.sum() / (~zero).sum())
    return smoothed if (smoothed > 0).all() else None


def _kl(p: Optional[np.ndarray], q: Optional[np.ndarray]) -> float:
    if p is None or q is None:
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    seen = p > 0
    if np.any(q[seen] == 0.0):
        return math.inf
    return float(np.sum(p[seen] * np.log(p[seen] / q[seen])))


def entropy_threshold(hist: np.ndarray, bin_edges: np.ndarray, num_quantized_bins: int = 128,
                      start_bin: int = 128, eps: float = 1e-4) -> float:
    """The ``amax`` minimizing ``KL(P||Q)`` (see ``kl_divergences``): ``(i + 0.5) * bin_width``.

    The half bin is [GTC17]'s convention, the only public statement of TensorRT's own rule (the
    TPU-MLIR calibration docs copy it); [PQ] and [TVM] return ``i * bin_width``, the upper edge
    of the last kept bin, half a bin (1/4096 of a 2048-bin range) lower.
    On ties the largest ``i`` wins (less clipping), as in [PQ].

    >>> entropy_threshold(np.array([1, 0, 2, 3, 5, 3, 1, 7]), np.arange(9.0), 2, 2, eps=0)
    7.5
    """
    h = np.asarray(hist, dtype=np.float64)
    if h.sum() <= 0:
        raise ValueError("entropy calibration of an empty histogram: collect data first")
    kl = kl_divergences(h, num_quantized_bins, start_bin, eps)
    best = start_bin + (kl.size - 1 - int(np.argmin(kl[::-1])))
    return float(bin_edges[0] + (best + 0.5) * (bin_edges[1] - bin_edges[0]))


def percentile_threshold(hist: np.ndarray, bin_edges: np.ndarray, percentile: float = 99.99) -> float:
    """The upper edge of the first bin where the CDF reaches ``percentile``.

    With right-closed bins (``bin_abs``) at least ``percentile`` % of the values are ``<= amax``;
    [PQ] returns the bin's lower edge, which does not guarantee that.

    >>> percentile_threshold(np.array([50, 40, 10, 0]), np.arange(5.0), 90.0)
    2.0
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    c = np.cumsum(np.asarray(hist, dtype=np.float64))
    if c[-1] <= 0:
        raise ValueError("percentile calibration of an empty histogram: collect data first")
    idx = min(int(np.searchsorted(c, percentile / 100.0 * c[-1], side="left")), c.size - 1)
    return float(bin_edges[idx + 1])


def max_threshold(amax: float) -> float:
    """The running absolute max itself: no clipping. ``max_threshold(3.0) == 3.0``."""
    if not (math.isfinite(amax) and amax >= 0.0):
        raise ValueError(f"amax must be finite and >= 0, got {amax}")
    return float(amax)


def scale_from_amax(amax: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """``amax / 127``; an amax of 0 gives ``1/127``.

    TensorRT rejects scales <= 0, and an all-zero tensor quantizes to 0 under any positive scale.

    >>> scale_from_amax(254.0), scale_from_amax(0.0) == 1 / 127
    (2.0, True)
    """
    if isinstance(amax, torch.Tensor):
        return torch.where(amax > 0, amax, torch.ones_like(amax)) / QMAX
    return (amax if amax > 0 else 1.0) / QMAX


def weight_scales(weight: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Per-output-channel symmetric scales: ``max|w|`` over all dims but ``axis``, divided by 127.

    >>> weight_scales(torch.tensor([[1.0, -127.0], [0.5, 0.25]])).tolist()
    [1.0, 0.003937007859349251]
    """
    w = weight.detach().float().abs().movedim(axis, 0)
    return scale_from_amax(w.reshape(w.shape[0], -1).amax(dim=1))  # type: ignore[return-value]


def _broadcast(scale: Union[float, torch.Tensor], ndim: int, axis: Optional[int]) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32)
    return s if axis is None else s.reshape([-1 if d == axis % ndim else 1 for d in range(ndim)])


def quantize(x: torch.Tensor, scale: Union[float, torch.Tensor], axis: Optional[int] = None) -> torch.Tensor:
    """int8 ``clamp(round(x / scale), -128, 127)``, rounding half to even like TensorRT.

    ``scale`` is a scalar, or per-channel along ``axis``.

    >>> quantize(torch.tensor([0.5, 1.5, 2.5, -0.5, 200.0, -200.0]), 1.0).tolist()
    [0, 2, 2, 0, 127, -128]
    """
    q = torch.round(x.float() / _broadcast(scale, x.dim(), axis))  # torch.round is half-to-even
    return q.clamp(QMIN, QMAX).to(torch.int8)


def dequantize(q: torch.Tensor, scale: Union[float, torch.Tensor], axis: Optional[int] = None) -> torch.Tensor:
    """float32 ``q * scale``. ``dequantize(torch.tensor([-128], dtype=torch.int8), 0.5) == -64``."""
    return q.float() * _broadcast(scale, q.dim(), axis)


def fake_quantize(x: torch.Tensor, scale: Union[float, torch.Tensor], axis: Optional[int] = None) -> torch.Tensor:
    """``dequantize(quantize(x))``: what an INT8 Q/DQ pair computes, in float32.

    >>> fake_quantize(torch.tensor([0.26, 1000.0]), 0.5).tolist()
    [0.5, 63.5]
    """
    return dequantize(quantize(x, scale, axis), scale, axis)


class CalibrationCache:
    """``amax`` per layer name (a float, or a list per channel), and the smoothing factors of the
    linear layers whose input is divided by them first (``smooth``), saved as JSON.

    File: ``{"format": "torch2x-int8-calibration", "version": 2, "tensors": {name: {"amax": a,
    "scale": a / 127[, "smooth": [s_0, s_1, ...]]}}}``; ``amax`` is then the range of ``x / s``.
    Version 1 had no smoothing; its files are refused rather than read, since a reader of either
    version would apply a version-2 range to the wrong tensor. Floats are written by ``repr``
    (shortest round-trip digits) and read by ``float``, so a load returns bit-identical values;
    ``scale`` is informative and is recomputed from ``amax`` on load.

    >>> CalibrationCache.from_json(CalibrationCache({"x": 0.1}).to_json()).amax
    {'x': 0.1}
    """

    FORMAT = "torch2x-int8-calibration"
    VERSION = 2

    def __init__(self, amax: Optional[Mapping[str, Union[float, Sequence[float]]]] = None,
                 smooth: Optional[Mapping[str, Sequence[float]]] = None):
        self.amax: dict[str, Amax] = {
            name: [max_threshold(float(v)) for v in value] if isinstance(value, (list, tuple))
            else max_threshold(float(value)) for name, value in (amax or {}).items()}
        self.smooth: dict[str, list[float]] = {name: [float(v) for v in values]
                                               for name, values in (smooth or {}).items() if name in self.amax}
        for name, values in self.smooth.items():
            if not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"smoothing factors of {name!r} must be finite and > 0")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalibrationCache) and (self.amax, self.smooth) == (other.amax, other.smooth)

    def scale(self, name: str) -> Amax:
        a = self.amax[name]
        return [scale_from_amax(v) for v in a] if isinstance(a, list) else scale_from_amax(a)  # type: ignore

    def to_json(self) -> str:
        tensors = {n: {"amax": a, "scale": self.scale(n), **({"smooth": self.smooth[n]} if n in self.smooth else {})}
                   for n, a in sorted(self.amax.items())}
        return json.dumps({"format": self.FORMAT, "version": self.VERSION, "tensors": tensors},
                          indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> CalibrationCache:
        data = json.loads(text)
        if data.get("format") != cls.FORMAT or data.get("version") != cls.VERSION:
            raise ValueError(f"not a version-{cls.VERSION} {cls.FORMAT} cache (format {data.get('format')!r}, "
                             f"version {data.get('version')!r}); recalibrate to regenerate it")
        tensors = data["tensors"]
        return cls({name: entry["amax"] for name, entry in tensors.items()},
                   {name: entry["smooth"] for name, entry in tensors.items() if "smooth" in entry})

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Union[str, Path]) -> CalibrationCache:
        return cls.from_json(Path(path).read_text())
