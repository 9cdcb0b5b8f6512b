"""Sorted search, membership and binning: ``searchsorted``, ``bucketize``, ``isin``, ``histc``.

``searchsorted``/``bucketize`` run PyTorch's own binary search in the network: ``bit_length(n)``
rounds of gather, compare and select narrow every value's interval, with PyTorch's comparisons
(``!(s >= v)`` for the left side, ``!(s > v)`` for the right), so NaNs land where PyTorch puts them.
"""
from __future__ import annotations

import torch

from torch2x.context import ConversionError, sizes
from torch2x.flavour import trt
from torch2x.registry import converter

from .elementwise import aliases
from .indexing import _index_tensor
from .matrix import _static, empty

DT = trt.DataType
Op = trt.ElementWiseOperation
Un = trt.UnaryOperation


def _binary_search(ctx, seq, values, right: bool):
    """For each value (``values``: ``[..., m]`` with ``seq``'s leading dims, or any shape against a 1-D
    ``seq``), the insertion index into the sorted last dim of ``seq`` (INT64)."""
    n = ctx.dims(seq)[-1]
    _static("searchsorted", n)
    flat = len(seq.shape) == 1
    shape = ctx.dims(values)
    if n == 0:  # an empty sequence: every value goes at 0
        return ctx.expand(ctx.scalar(0, DT.INT64), shape)
    if flat:
        values = ctx.reshape(values, (-1,))
    start = ctx.expand(ctx.scalar(0, DT.INT64), ctx.dims(values))
    end = ctx.expand(ctx.scalar(n, DT.INT64), ctx.dims(values))
    for _ in range(n.bit_length()):
        active = ctx.elementwise(start, end, Op.LESS)
        mid = ctx.elementwise(start, ctx.elementwise(ctx.elementwise(end, start, Op.SUB), 2, Op.FLOOR_DIV), Op.SUM)
        index = ctx.elementwise(mid, n - 1, Op.MIN)  # finished intervals may point one past the end
        layer = ctx.network.add_gather(seq, index, len(seq.shape) - 1)
        if not flat:
            layer.mode = trt.GatherMode.ELEMENT
        mid_value = layer.get_output(0)
        # left: move right when !(s >= v), i.e. s < v or either is NaN; right: when !(s > v)
        stop = ctx.elementwise(mid_value, values, Op.GREATER)
        if not right:
            stop = ctx.elementwise(stop, ctx.elementwise(mid_value, values, Op.EQUAL), Op.OR)
        go = ctx.elementwise(active, ctx.unary(stop, Un.NOT), Op.AND)
        start = ctx.network.add_select(go, ctx.elementwise(mid, 1, Op.SUM), start).get_output(0)
        end = ctx.network.add_select(ctx.elementwise(active, stop, Op.AND), mid, end).get_output(0)
    return ctx.reshape(start, shape) if flat else start


def _search(ctx, call, seq, values, right: bool, sorter=None):
    dtype = ctx.dtype_for(seq.dtype)
    s = ctx.trt(seq, dtype)
    if call.output.numel() == 0:  # an empty constant (values, sorter) cannot be made: slice the result
        return empty(ctx, ctx.cast(s, ctx.dtype_for(call.output.dtype)), sizes(call.output))
    if sorter is not None and seq.numel():  # the sequence in sorted order
        layer = ctx.network.add_gather(s, _index_tensor(ctx, sorter), len(s.shape) - 1)
        layer.mode = trt.GatherMode.ELEMENT
        s = layer.get_output(0)
    out = _binary_search(ctx, s, ctx.trt(values, dtype), right)
    return ctx.cast(ctx.reshape(out, sizes(call.output)), ctx.dtype_for(call.output.dtype))


@converter("torch.searchsorted",
           signature="sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None, out=None")
def searchsorted(ctx, call):
    right = call.arg("right") or call.arg("side") == "right"
    return _search(ctx, call, call.arg("sorted_sequence"), call.arg("input"), right, call.arg("sorter"))


@converter("torch.bucketize", signature="input, boundaries, *, out_int32=False, right=False, out=None")
def bucketize(ctx, call):
    return _search(ctx, call, call.arg("boundaries"), call.arg("input"), bool(call.arg("right")))


@converter(*aliases("isin", inplace=False), signature="elements, test_elements, *, assume_unique=False, invert=False")
def isin(ctx, call):
    # every element compared with every test element (in the promoted type), any match
    elements, tests = call.arg("elements"), call.arg("test_elements")
    dtype = ctx.dtype_for(torch.result_type(elements, tests))
    e = ctx.reshape(ctx.trt(elements, dtype), (-1, 1))
    t = ctx.reshape(ctx.trt(tests, dtype), (1, -1))
    hits = ctx.cast(ctx.elementwise(e, t, Op.EQUAL), DT.INT32)
    found = ctx.elementwise(ctx.network.add_reduce(hits, trt.ReduceOperation.MAX, 2, False).get_output(0), 0,
                            Op.GREATER)
    if call.arg("invert"):
        found = ctx.unary(found, Un.NOT)
    return ctx.reshape(found, sizes(call.output))


@converter(*aliases("histc", inplace=False), signature="input, bins=100, min=0, max=0, *, out=None", fp32=True)
def histc(ctx, call):
    # PyTorch's formula, in its float32 steps: bin = floor((x - min) * bins / (max - min)), the max itself in
    # the last bin; elements outside [min, max] and NaNs are dropped. (Its bins are not the linspace edges:
    # 0.0 in histc(x, 100, -3, 3) lands in bin 50 though edge 50 is 6.7e-8.) A GPU division that rounds
    # otherwise than IEEE could move an element within an ulp of a bin boundary.
    source = call.arg("input")
    low, high, bins = call.arg("min"), call.arg("max"), int(call.arg("bins"))
    if low == high:
        raise ConversionError("histc over the data's own range (min == max) reads the range from the values; "
                              "pass min and max")
    dtype = ctx.dtype_for(call.output.dtype)
    x = ctx.reshape(ctx.trt(source, dtype), (-1, 1))
    low32, high32 = torch.tensor(low, dtype=source.dtype), torch.tensor(high, dtype=source.dtype)
    width = float(high32 - low32)  # rounded to the input's type, as PyTorch subtracts
    scaled = ctx.elementwise(ctx.elementwise(ctx.elementwise(x, float(low32), Op.SUB), float(bins), Op.PROD),
                             width, Op.DIV)
    position = ctx.elementwise(ctx.cast(ctx.unary(scaled, Un.FLOOR), DT.INT32), bins - 1, Op.MIN)
    inside = ctx.elementwise(ctx.unary(ctx.elementwise(x, float(low32), Op.LESS), Un.NOT),
                             ctx.unary(ctx.elementwise(x, float(high32), Op.GREATER), Un.NOT), Op.AND)
    inside = ctx.elementwise(inside, ctx.unary(ctx.unary(x, Un.ISNAN), Un.NOT), Op.AND)
    hit = ctx.elementwise(ctx.elementwise(position, ctx.constant(torch.arange(bins).reshape(1, -1), DT.INT32),
                                          Op.EQUAL), inside, Op.AND)
    counts = ctx.network.add_reduce(ctx.cast(hit, DT.FLOAT), trt.ReduceOperation.SUM, 1, False).get_output(0)
    return ctx.cast(counts, dtype)
