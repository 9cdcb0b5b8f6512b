"""Reductions (sum, mean, max with indices, var/std, norms, logic), the softmax family and cumulative ops.

``dim=None`` (and an empty dim list) reduces every axis, as in PyTorch. Sums, means,
statistics, norms, softmax and cumulative ops keep float32 under reduced precision:
they add up many values, or exponentiate. Max/min with ``dim`` and arg-max/min are a
reduce and a first-match search, whose indices come out int32 (cast to torch's int64).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from torch2x.context import ConversionContext, ConversionError
from torch2x.dtypes import to_torch
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import TracedInt

from .elementwise import FLOATS, aliases, binary, out_type, select

DT = trt.DataType
Op = trt.ElementWiseOperation
Un = trt.UnaryOperation
Red = trt.ReduceOperation


def _axes(dim, rank: int) -> list:
    """Torch ``dim`` (int, sequence, None or empty: every axis) as sorted TensorRT axes."""
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return list(range(rank))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted({ConversionContext.axis(d, rank) for d in dims})


def reduce(ctx, x, op, dim, keepdim: bool) -> trt.ITensor:
    """``x`` reduced with ``op`` over torch ``dim`` (None: every axis).

    Example: ``reduce(ctx, x, Red.AVG, (2, 3), True)`` is ``x.mean((2, 3), keepdim=True)``.
    """
    x = ctx.trt(x)
    rank = len(x.shape)
    if rank == 0:
        return x
    mask = 0
    for axis in _axes(dim, rank):
        mask |= 1 << axis
    return ctx.network.add_reduce(x, op, mask, bool(keepdim)).get_output(0)


def _count(itensor, dim) -> int:
    shape = tuple(itensor.shape)
    return int(np.prod([shape[a] for a in _axes(dim, len(shape))], dtype=np.int64))


def _reducer(op):
    def convert(ctx, call):
        dtype = out_type(ctx, call)
        if dtype == DT.BOOL:
            dtype = DT.INT32  # TensorRT reduces numbers only; the tracer casts back
        x = ctx.trt(call.arg("input"), dtype)
        return reduce(ctx, x, op, call.arg("dim"), call.arg("keepdim"))

    return convert


_SUM_SIG = "input, dim=None, keepdim=False, *, dtype=None, out=None"
converter(*aliases("sum", inplace=False), signature=_SUM_SIG, fp32=True)(_reducer(Red.SUM))
converter(*aliases("mean", inplace=False), signature=_SUM_SIG, fp32=True)(_reducer(Red.AVG))
converter(*aliases("prod", inplace=False), signature=_SUM_SIG, fp32=True)(_reducer(Red.PROD))
converter(*aliases("amax", inplace=False), signature="input, dim=(), keepdim=False, *, out=None")(_reducer(Red.MAX))
converter(*aliases("amin", inplace=False), signature="input, dim=(), keepdim=False, *, out=None")(_reducer(Red.MIN))


@converter("torch.Tensor.sum_to_size", signature="input, *size")
def sum_to_size(ctx, call):
    # The sum that undoes a broadcast to the input's shape: over the extra leading dims and the size-1 ones.
    size = call.arg("size")
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), DT.INT32 if dtype == DT.BOOL else dtype)
    shape = ctx.dims(x)
    lead = len(shape) - len(size)
    axes = list(range(lead)) + [lead + i for i, n in enumerate(size) if n == 1 and shape[lead + i] != 1]
    if not axes:
        return x
    return ctx.reshape(reduce(ctx, x, Red.SUM, axes, True), size)


def _nan_reducer(op):
    def convert(ctx, call):
        dtype = out_type(ctx, call)
        x = ctx.trt(call.arg("input"), dtype)
        if dtype not in FLOATS:
            return reduce(ctx, x, op, call.arg("dim"), call.arg("keepdim"))
        nan = ctx.unary(x, Un.ISNAN)
        total = reduce(ctx, select(ctx, nan, 0.0, x, dtype), Red.SUM, call.arg("dim"), call.arg("keepdim"))
        if op == Red.SUM:
            return total
        valid = reduce(ctx, ctx.cast(ctx.unary(nan, Un.NOT), dtype), Red.SUM, call.arg("dim"), call.arg("keepdim"))
        return ctx.elementwise(total, valid, Op.DIV)

    return convert


converter(*aliases("nansum", inplace=False), signature=_SUM_SIG, fp32=True)(_nan_reducer(Red.SUM))
converter(*aliases("nanmean", inplace=False), signature=_SUM_SIG, fp32=True)(_nan_reducer(Red.AVG))


@converter(*aliases("count_nonzero", inplace=False), signature="input, dim=None")
def count_nonzero(ctx, call):
    x = ctx.trt(call.arg("input"))
    nonzero = ctx.unary(ctx.elementwise(x, 0, Op.EQUAL), Un.NOT)
    return reduce(ctx, ctx.cast(nonzero, DT.INT64), Red.SUM, call.arg("dim"), False)


# --------------------------------------------------------------------------- max/min and their indices

def _extreme_index(ctx, x, axis: int, largest: bool):
    """(values, int32 indices) of the largest/smallest element along ``axis`` (kept, size 1).

    The index is the first position holding the extreme value, as in PyTorch; TensorRT's
    top-k leaves the order of ties unspecified, so this is a reduce, a compare and a min-reduce.
    """
    if x.dtype == DT.BOOL:
        x = ctx.cast(x, DT.INT32)  # reductions take numbers only
    shape = tuple(x.shape)
    values = reduce(ctx, x, Red.MAX if largest else Red.MIN, axis, True)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    positions = ctx.constant(np.arange(shape[axis], dtype=np.int32).reshape(view), DT.INT32)
    match = ctx.elementwise(x, values, Op.EQUAL)
    if x.dtype in FLOATS:  # PyTorch's max is NaN where a NaN is, at the first NaN's index
        match = ctx.elementwise(match, ctx.unary(x, Un.ISNAN), Op.OR)
    hits = select(ctx, match, positions, shape[axis], DT.INT32)
    return values, reduce(ctx, hits, Red.MIN, axis, True)


def _max_min(largest):
    binary_op, reduce_op = (Op.MAX, Red.MAX) if largest else (Op.MIN, Red.MIN)

    def convert(ctx, call):
        dim, other = call.arg("dim"), call.arg("other")
        if isinstance(dim, torch.Tensor):  # torch.max(a, b) is torch.maximum(a, b)
            dim, other = None, dim
        if other is not None:
            return binary(ctx, call.arg("input"), other, binary_op, out_type(ctx, call))
        x = ctx.trt(call.arg("input"))
        if dim is None:
            return reduce(ctx, ctx.cast(x, DT.INT32) if x.dtype == DT.BOOL else x, reduce_op, None, False)
        if len(x.shape) == 0:
            return x, ctx.constant(np.zeros((), np.int64), DT.INT64)
        values, indices = _extreme_index(ctx, x, ctx.axis(dim, len(x.shape)), largest)
        shape = call.output[0].shape
        return ctx.reshape(values, shape), ctx.reshape(indices, shape)

    return convert


_MAX_SIG = "input, dim=None, keepdim=False, *, other=None, out=None"
converter(*aliases("max", inplace=False), signature=_MAX_SIG)(_max_min(True))
converter(*aliases("min", inplace=False), signature=_MAX_SIG)(_max_min(False))


def _arg(largest):
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"))
        dim = call.arg("dim")
        if dim is None or len(x.shape) == 0:
            x, axis = ctx.reshape(x, (int(np.prod(x.shape, dtype=np.int64)),)), 0
        else:
            axis = ctx.axis(dim, len(x.shape))
        return ctx.reshape(_extreme_index(ctx, x, axis, largest)[1], call.output.shape)

    return convert


converter(*aliases("argmax", inplace=False), signature="input, dim=None, keepdim=False, *, out=None")(_arg(True))
converter(*aliases("argmin", inplace=False), signature="input, dim=None, keepdim=False, *, out=None")(_arg(False))


def _logic_reducer(op):
    def convert(ctx, call):
        x = ctx.cast(ctx.trt(call.arg("input"), DT.BOOL), DT.INT32)
        return reduce(ctx, x, op, call.arg("dim"), call.arg("keepdim"))

    return convert


converter(*aliases("all", inplace=False), signature="input, dim=None, keepdim=False, *, out=None")(
    _logic_reducer(Red.MIN))
converter(*aliases("any", inplace=False), signature="input, dim=None, keepdim=False, *, out=None")(
    _logic_reducer(Red.MAX))


# --------------------------------------------------------------------------- statistics and norms

def _moments(with_mean, root):
    def convert(ctx, call):
        dtype = out_type(ctx, call)
        x = ctx.trt(call.arg("input"), dtype)
        dim, unbiased, correction = call.arg("dim"), call.arg("unbiased"), call.arg("correction")
        if isinstance(dim, bool):  # torch.var(x, False): the overload whose 2nd argument is unbiased
            dim, unbiased = None, dim
        if correction is None:
            correction = 0 if unbiased is False else 1
        keepdim = bool(call.arg("keepdim"))
        mean = reduce(ctx, x, Red.AVG, dim, True)
        centered = ctx.elementwise(x, mean, Op.SUB)
        squares = reduce(ctx, ctx.elementwise(centered, centered, Op.PROD), Red.SUM, dim, keepdim)
        # A divisor <= 0 gives inf/nan, as in PyTorch.
        var = ctx.elementwise(squares, float(max(_count(x, dim) - correction, 0)), Op.DIV)
        out = ctx.unary(var, Un.SQRT) if root else var
        if not with_mean:
            return out
        return out, ctx.reshape(mean, tuple(var.shape))

    return convert


_VAR_SIG = "input, dim=None, unbiased=None, keepdim=False, *, correction=None, out=None"
converter(*aliases("var", inplace=False), signature=_VAR_SIG, fp32=True)(_moments(False, False))
converter(*aliases("std", inplace=False), signature=_VAR_SIG, fp32=True)(_moments(False, True))
converter(*aliases("var_mean", inplace=False), signature=_VAR_SIG, fp32=True)(_moments(True, False))
converter(*aliases("std_mean", inplace=False), signature=_VAR_SIG, fp32=True)(_moments(True, True))


def vector_norm(ctx, x, ord, dim, keepdim: bool) -> trt.ITensor:
    """``torch.linalg.vector_norm(x, ord, dim, keepdim)`` for a float network tensor ``x``.

    Example: ``vector_norm(ctx, x, 2, 1, False)`` is ``x.norm(dim=1)``.
    """
    ord = float(ord)
    if ord == 2:
        return ctx.unary(reduce(ctx, ctx.elementwise(x, x, Op.PROD), Red.SUM, dim, keepdim), Un.SQRT)
    if ord == 0:
        nonzero = ctx.unary(ctx.elementwise(x, 0.0, Op.EQUAL), Un.NOT)
        return reduce(ctx, ctx.cast(nonzero, x.dtype), Red.SUM, dim, keepdim)
    a = ctx.unary(x, Un.ABS)
    if math.isinf(ord):
        return reduce(ctx, a, Red.MAX if ord > 0 else Red.MIN, dim, keepdim)
    if ord == 1:
        return reduce(ctx, a, Red.SUM, dim, keepdim)
    total = reduce(ctx, ctx.elementwise(a, ord, Op.POW), Red.SUM, dim, keepdim)
    return ctx.elementwise(total, 1.0 / ord, Op.POW)


def _norm(ord_arg, default):
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"), out_type(ctx, call))
        ord, dim = call.arg(ord_arg), call.arg("dim")
        if ord is None:
            ord = default
        if ord == "fro":
            ord = 2
        if isinstance(ord, str):
            raise ConversionError(f"{call.op} with p={ord!r}: only vector norms and 'fro' are supported")
        return vector_norm(ctx, x, ord, dim, call.arg("keepdim"))

    return convert


converter("torch.norm", signature="input, p='fro', dim=None, keepdim=False, out=None, dtype=None", fp32=True)(
    _norm("p", 2))
converter("torch.Tensor.norm", signature="input, p='fro', dim=None, keepdim=False, dtype=None", fp32=True)(
    _norm("p", 2))
converter("torch.linalg.vector_norm", signature="input, ord=2, dim=None, keepdim=False, *, dtype=None, out=None",
          fp32=True)(_norm("ord", 2))


@converter(*aliases("logsumexp", inplace=False), "torch.special.logsumexp",
           signature="input, dim, keepdim=False, *, out=None", fp32=True)
def logsumexp(ctx, call):
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    dim, keepdim = call.arg("dim"), bool(call.arg("keepdim"))
    peak = reduce(ctx, x, Red.MAX, dim, True)
    # An all -inf (or +inf) slice would give inf - inf; PyTorch shifts by 0 there.
    peak = select(ctx, ctx.unary(peak, Un.ISINF), 0.0, peak, dtype)
    total = reduce(ctx, ctx.unary(ctx.elementwise(x, peak, Op.SUB), Un.EXP), Red.SUM, dim, keepdim)
    return ctx.elementwise(ctx.unary(total, Un.LOG), ctx.reshape(peak, tuple(total.shape)), Op.SUM)


# --------------------------------------------------------------------------- softmax family

def _softmax_axis(call, rank: int) -> int:
    dim = call.arg("dim")
    if dim is None:  # PyTorch's legacy implicit dim (torch.nn.functional._get_softmax_dim)
        dim = 0 if rank in (0, 1, 3) else 1
    return ConversionContext.axis(dim, rank)


def _softmax(kind):
    def convert(ctx, call):
        dtype = out_type(ctx, call)
        x = ctx.trt(call.arg("input"), dtype)
        shape = tuple(x.shape)
        axis = _softmax_axis(call, len(shape))
        if len(shape) < 2:  # TensorRT's softmax needs rank >= 2
            x, axis = ctx.reshape(x, (1,) * (2 - len(shape)) + shape), axis + 2 - len(shape)
        if kind == "softmin":
            x = ctx.unary(x, Un.NEG)
        if kind == "log_softmax":
            # x - max - log(sum(exp(x - max))): exact where log(softmax) would underflow to -inf.
            shifted = ctx.elementwise(x, reduce(ctx, x, Red.MAX, axis, True), Op.SUB)
            total = reduce(ctx, ctx.unary(shifted, Un.EXP), Red.SUM, axis, True)
            out = ctx.elementwise(shifted, ctx.unary(total, Un.LOG), Op.SUB)
        else:
            layer = ctx.network.add_softmax(x)
            layer.axes = 1 << axis
            out = layer.get_output(0)
        return ctx.reshape(out, shape)

    return convert


_F_SOFTMAX_SIG = "input, dim=None, _stacklevel=3, dtype=None"
converter("torch.nn.functional.softmax", signature=_F_SOFTMAX_SIG, fp32=True)(_softmax("softmax"))
converter("torch.nn.functional.log_softmax", signature=_F_SOFTMAX_SIG, fp32=True)(_softmax("log_softmax"))
converter("torch.nn.functional.softmin", signature=_F_SOFTMAX_SIG, fp32=True)(_softmax("softmin"))
converter("torch.softmax", "torch.Tensor.softmax", "torch.special.softmax", signature="input, dim, dtype=None",
          fp32=True)(_softmax("softmax"))
converter("torch.log_softmax", "torch.Tensor.log_softmax", "torch.special.log_softmax",
          signature="input, dim, dtype=None", fp32=True)(_softmax("log_softmax"))


# --------------------------------------------------------------------------- cumulative

def _cumsum(ctx, x, axis: int) -> trt.ITensor:
    axis_tensor = ctx.scalar(axis, DT.INT32)
    return ctx.network.add_cumulative(x, axis_tensor, trt.CumulativeOperation.SUM, False, False).get_output(0)


@converter(*aliases("cumsum"), signature="input, dim, *, dtype=None, out=None", fp32=True)
def cumsum(ctx, call):
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    if not x.shape:
        return x
    return _cumsum(ctx, x, ctx.axis(call.arg("dim"), len(x.shape)))


@converter(*aliases("cumprod"), signature="input, dim, *, dtype=None, out=None", fp32=True)
def cumprod(ctx, call):
    # TensorRT only sums cumulatively: |product| = exp(cumsum(log|x|)) (a zero gives log 0 = -inf,
    # so exp gives 0 from there on), and the sign flips with each negative factor seen so far.
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype if dtype in FLOATS else DT.FLOAT)
    if not x.shape:
        return x
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    magnitude = ctx.unary(_cumsum(ctx, ctx.unary(ctx.unary(x, Un.ABS), Un.LOG), axis), Un.EXP)
    negatives = _cumsum(ctx, ctx.cast(ctx.elementwise(x, 0.0, Op.LESS), x.dtype), axis)
    odd = ctx.elementwise(negatives, ctx.elementwise(ctx.elementwise(negatives, 2.0, Op.FLOOR_DIV), 2.0, Op.PROD),
                          Op.SUB)
    sign = ctx.elementwise(1.0, ctx.elementwise(odd, 2.0, Op.PROD), Op.SUB, x.dtype)
    out = ctx.elementwise(magnitude, sign, Op.PROD)
    return out if dtype in FLOATS else ctx.unary(out, Un.ROUND)


def _prefixes(ctx, call, x):
    """For ops over every prefix along ``dim`` at once: ``x`` with that dim moved last (``[..., n]``), the
    other sizes, ``n``, the ``[n, n]`` mask of ``i <= j`` (row j: the prefix ending at j) and the order
    that moves the dim back."""
    rank = len(x.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    order = [a for a in range(rank) if a != axis] + [axis]
    y = ctx.permute(x, order)
    *lead, n = ctx.dims(y)
    if isinstance(n, TracedInt):
        raise ConversionError(f"{call.op} along a dynamic dim; make that dim static")
    before = ctx.constant(torch.ones(n, n, dtype=torch.bool).tril(), DT.BOOL)
    return y, lead, n, before, [order.index(a) for a in range(rank)]


def _running_extreme(largest: bool):
    def convert(ctx, call):
        # Every prefix at once: x[..., i] against output position j under the mask i <= j ([..., n, n]),
        # reduced over i. Like PyTorch's loop, a tie moves the index to the later position, and from the
        # first NaN on the value is NaN and the index that of the latest NaN.
        out_dtype = out_type(ctx, call)
        dtype = DT.INT32 if out_dtype == DT.BOOL else out_dtype  # TensorRT reduces numbers only
        x = ctx.trt(call.arg("input"), dtype)
        if not x.shape:
            return ctx.cast(x, out_dtype), ctx.scalar(0, DT.INT64)
        y, lead, n, before, back = _prefixes(ctx, call, x)
        positions = ctx.constant(torch.arange(n).reshape(1, n), DT.INT64)
        xi = ctx.reshape(y, (*lead, 1, n))
        if dtype in FLOATS:
            worst = -math.inf if largest else math.inf
            nan = ctx.unary(xi, Un.ISNAN)
            xi = select(ctx, nan, worst, xi, dtype)  # NaNs are handled apart: the reduction never sees them
        else:
            info = torch.iinfo(to_torch(dtype))
            worst = info.min if largest else info.max
        value = reduce(ctx, select(ctx, before, xi, worst, dtype), Red.MAX if largest else Red.MIN, -1, True)
        hit = ctx.elementwise(before, ctx.elementwise(xi, value, Op.EQUAL), Op.AND)
        index = reduce(ctx, select(ctx, hit, positions, -1, DT.INT64), Red.MAX, -1, False)
        value = ctx.reshape(value, (*lead, n))
        if dtype in FLOATS:
            seen = ctx.elementwise(before, nan, Op.AND)
            last_nan = reduce(ctx, select(ctx, seen, positions, -1, DT.INT64), Red.MAX, -1, False)
            has_nan = ctx.unary(ctx.elementwise(last_nan, 0, Op.LESS), Un.NOT)
            value = select(ctx, has_nan, math.nan, value, dtype)
            index = select(ctx, has_nan, last_nan, index, DT.INT64)
        return ctx.cast(ctx.permute(value, back), out_dtype), ctx.permute(index, back)

    return convert


converter(*aliases("cummax", inplace=False), signature="input, dim, *, out=None")(_running_extreme(True))
converter(*aliases("cummin", inplace=False), signature="input, dim, *, out=None")(_running_extreme(False))


@converter(*aliases("logcumsumexp", inplace=False), signature="input, dim, *, out=None", fp32=True)
def logcumsumexp(ctx, call):
    # Each prefix's logsumexp shifted by that prefix's own max (every prefix at once, [..., n, n]), so
    # early small terms are not lost to a later large one as exp(cumsum) of a global shift would lose them.
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    if not x.shape:
        return x
    y, lead, n, before, back = _prefixes(ctx, call, x)
    terms = select(ctx, before, ctx.reshape(y, (*lead, 1, n)), -math.inf, x.dtype)
    peak = reduce(ctx, terms, Red.MAX, -1, True)
    finite = ctx.elementwise(ctx.unary(peak, Un.ISINF), ctx.unary(peak, Un.ISNAN), Op.OR)
    shift = select(ctx, finite, 0.0, peak, x.dtype)  # an infinite prefix max: no shift (inf/-inf come out as such)
    total = reduce(ctx, ctx.unary(ctx.elementwise(terms, shift, Op.SUB), Un.EXP), Red.SUM, -1, True)
    out = ctx.reshape(ctx.elementwise(ctx.unary(total, Un.LOG), shift, Op.SUM), (*lead, n))
    return ctx.permute(out, back)


# --------------------------------------------------------------------------- top-k and sorting

_MAX_TOPK = 3840  # TensorRT's top-k limit on k


def _top(ctx, x, k: int, axis: int, largest: bool):
    """(values, int32 indices) of the ``k`` largest/smallest along ``axis``, in order (ties: any order)."""
    if k > _MAX_TOPK:
        raise ConversionError(f"top-k/sort of {k} elements: TensorRT's top-k takes k <= {_MAX_TOPK}")
    if x.dtype == DT.BOOL:
        x = ctx.cast(x, DT.INT32)  # top-k takes numbers only
    shape = tuple(x.shape)
    if shape and shape[axis] < 0 and (ctx.exact_sizes or k < 0):
        # a count made at run time (hybrid execution) may hold fewer than k elements; TensorRT's k is fixed
        raise ConversionError(f"top-k/sort along a dynamic dim whose size is only known at run time (k={k})")
    if len(shape) < 2:  # top-k needs rank >= 2
        x, axis = ctx.reshape(x, (1,) * (2 - len(shape)) + shape), axis + 2 - len(shape)
    layer = ctx.network.add_topk(x, trt.TopKOperation.MAX if largest else trt.TopKOperation.MIN, int(k), 1 << axis)
    return layer.get_output(0), layer.get_output(1)


@converter(*aliases("topk", inplace=False), signature="input, k, dim=-1, largest=True, sorted=True, *, out=None")
def topk(ctx, call):
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    values, indices = _top(ctx, x, int(call.arg("k")), axis, bool(call.arg("largest")))
    shape = call.output[0].shape
    return ctx.reshape(values, shape), ctx.reshape(indices, shape)


def _sort(indices_only):
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"))
        dim = call.arg("dim")
        axis = ctx.axis(-1 if dim is None else dim, len(x.shape))
        n = tuple(x.shape)[axis] if x.shape else 1
        values, indices = _top(ctx, x, n, axis, bool(call.arg("descending")))
        shape = tuple(x.shape)
        if indices_only:
            return ctx.reshape(indices, shape)
        return ctx.reshape(values, shape), ctx.reshape(indices, shape)

    return convert


# stable=True asks for the original order among ties, which top-k does not promise.
converter(*aliases("sort", inplace=False), signature="input, dim=-1, descending=False, stable=False, *, out=None")(
    _sort(False))
converter(*aliases("argsort", inplace=False), signature="input, dim=-1, descending=False, stable=False")(_sort(True))


def _kth_smallest(ctx, x, k: int, axis: int):
    """(values, int32 indices) of the ``k``-th smallest element along ``axis``; callers reshape them."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        x, axis = ctx.reshape(x, (1,) * (2 - len(shape)) + shape), axis + 2 - len(shape)
    values, indices = _top(ctx, x, k, axis, False)
    start = [0] * len(values.shape)
    start[axis] = k - 1
    size = list(values.shape)
    size[axis] = 1
    return ctx.slice(values, start, size), ctx.slice(indices, start, size)


@converter(*aliases("kthvalue", inplace=False), signature="input, k, dim=-1, keepdim=False, *, out=None")
def kthvalue(ctx, call):
    x = ctx.trt(call.arg("input"))
    values, indices = _kth_smallest(ctx, x, int(call.arg("k")), ctx.axis(call.arg("dim"), len(x.shape)))
    shape = call.output[0].shape
    return ctx.reshape(values, shape), ctx.reshape(indices, shape)


@converter(*aliases("median", inplace=False), signature="input, dim=None, keepdim=False, *, out=None")
def median(ctx, call):
    # PyTorch's median is the lower of the two middle values: the ((n + 1) // 2)-th smallest.
    x = ctx.trt(call.arg("input"))
    dim = call.arg("dim")
    if dim is None:
        n = int(np.prod(x.shape, dtype=np.int64))
        return ctx.reshape(_kth_smallest(ctx, ctx.reshape(x, (n,)), (n + 1) // 2, 0)[0], ())
    axis = ctx.axis(dim, len(x.shape))
    values, indices = _kth_smallest(ctx, x, (tuple(x.shape)[axis] + 1) // 2, axis)
    shape = call.output[0].shape
    return ctx.reshape(values, shape), ctx.reshape(indices, shape)


@converter(*aliases("aminmax", inplace=False), signature="input, *, dim=None, keepdim=False, out=None")
def aminmax(ctx, call):
    x = ctx.trt(call.arg("input"))
    if x.dtype == DT.BOOL:
        x = ctx.cast(x, DT.INT32)
    dim, keepdim = call.arg("dim"), call.arg("keepdim")
    return reduce(ctx, x, Red.MIN, dim, keepdim), reduce(ctx, x, Red.MAX, dim, keepdim)
