"""Sorted search and membership: ``searchsorted``, ``bucketize``, ``isin``.

``searchsorted``/``bucketize`` run PyTorch's own binary search in the network: ``bit_length(n)``
rounds of gather, compare and select narrow every value's interval, with PyTorch's comparisons
(``!(s >= v)`` for the left side, ``!(s > v)`` for the right), so NaNs land where PyTorch puts them.
"""
from __future__ import annotations

import torch

from torch2x.context import sizes
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
