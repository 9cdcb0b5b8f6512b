"""Scatters: ``scatter`` (with ``reduce=``), ``scatter_add``/``scatter_reduce``, ``index_add``/``index_reduce``/
``index_copy``/``index_fill``, ``select_scatter``/``slice_scatter``/``diagonal_scatter`` and ``masked_scatter``.

TensorRT's scatter layer writes and never accumulates: with repeated indices one update wins. The
reducing scatters are therefore built as a one-hot contraction: the index compared with every output
position along ``dim`` gives a ``[..., n, K, ...]`` mask, the masked source is reduced over ``K``
(sum, product, max, min), and positions no index reaches keep the input. This costs ``n * K`` times
the index's other dims in memory, and takes indices computed in the network as well as constant ones.
"""
from __future__ import annotations

import math

import torch

from torch2x.context import ConversionError, sizes
from torch2x.dtypes import to_torch
from torch2x.flavour import trt
from torch2x.registry import converter

from .elementwise import FLOATS, aliases, binary, select
from .indexing import _index_tensor, _setitem
from .indexing import _wrap_index
from .matrix import _diagonal, _static, strided_positions
from .reduce import reduce

DT = trt.DataType
Op = trt.ElementWiseOperation
Red = trt.ReduceOperation

_REDUCTIONS = {"sum": Red.SUM, "mean": Red.SUM, "prod": Red.PROD, "amax": Red.MAX, "amin": Red.MIN}
_COMBINE = {"sum": Op.SUM, "mean": Op.SUM, "prod": Op.PROD, "amax": Op.MAX, "amin": Op.MIN}


def _identity(kind: str, dtype: trt.DataType):
    """The value that leaves ``kind``'s reduction unchanged, in ``dtype``."""
    if kind in ("sum", "mean"):
        return 0
    if kind == "prod":
        return 1
    if dtype in FLOATS:
        return -math.inf if kind == "amax" else math.inf
    info = torch.iinfo(to_torch(dtype))
    return info.min if kind == "amax" else info.max


def scatter_reduce(ctx, x, axis: int, index, src, kind: str, include_self: bool = True) -> trt.ITensor:
    """``x.scatter_reduce(axis, index, src, kind, include_self=...)`` for network tensors (``index``
    INT64 and no larger than ``x`` and ``src`` on every dim), as a one-hot contraction over ``index``'s
    size along ``axis``. Example: ``scatter_reduce(ctx, x, 0, idx, src, "sum")`` is ``x.scatter_add(0, idx, src)``."""
    out_type = x.dtype
    if out_type == DT.BOOL:  # TensorRT reduces numbers only: bool sums are ors, products ands (as 0/1)
        x, src = ctx.cast(x, DT.INT32), ctx.cast(src, DT.INT32)
    shape, ishape = ctx.dims(x), ctx.dims(index)
    _static("a reducing scatter", *shape, *ishape)
    rank = len(shape)
    src = ctx.slice(ctx.cast(src, x.dtype), [0] * rank, ishape)
    pre, k, post = ishape[:axis], ishape[axis], ishape[axis + 1:]
    n = shape[axis]
    positions = ctx.constant(torch.arange(n).reshape((1,) * axis + (n, 1) + (1,) * len(post)), DT.INT64)
    hit = ctx.elementwise(ctx.reshape(index, (*pre, 1, k, *post)), positions, Op.EQUAL)  # [pre, n, K, post]
    values = ctx.reshape(src, (*pre, 1, k, *post))
    picked = select(ctx, hit, values, _identity(kind, x.dtype), x.dtype)
    reduced = reduce(ctx, picked, _REDUCTIONS[kind], axis + 1, False)  # [pre, n, post]
    count = reduce(ctx, ctx.cast(hit, DT.INT32), Red.SUM, axis + 1, False)
    whole = (*pre, n, *post)
    if whole != tuple(shape):  # an index smaller than x on the other dims: the rest keeps x
        reduced = ctx.slice(reduced, [0] * rank, shape, mode=trt.SampleMode.FILL)
        count = ctx.slice(count, [0] * rank, shape, mode=trt.SampleMode.FILL)
    new = ctx.elementwise(x, reduced, _COMBINE[kind]) if include_self else reduced
    if kind == "mean":
        # positions no index reaches keep x below; a divisor of at least 1 keeps integer division defined there
        divisor = ctx.elementwise(count, 1, Op.SUM if include_self else Op.MAX)
        new = ctx.elementwise(new, ctx.cast(divisor, x.dtype), Op.DIV if x.dtype in FLOATS else Op.FLOOR_DIV)
    out = select(ctx, ctx.elementwise(count, 0, Op.GREATER), new, x, x.dtype)
    return ctx.cast(out, out_type)


def _along(ctx, index, axis: int, shape) -> trt.ITensor:
    """A 1-D index of ``index_add``/``index_copy``/``index_reduce`` as the element-wise index of a scatter
    along ``axis`` (expanded to ``shape``, the source's)."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return ctx.expand(ctx.reshape(_index_tensor(ctx, index), view), shape)


def _at_least_1d(ctx, value, dtype):
    """A network value in ``dtype``, 0-d made 1-d: index ops treat a 0-d tensor as one element along dim 0."""
    t = ctx.trt(value, dtype)
    return t if len(t.shape) else ctx.reshape(t, (1,))


@converter(*aliases("scatter_add"), signature="input, dim, index, src")
def scatter_add(ctx, call):
    return _scatter_reduce_call(ctx, call, "sum", True)


@converter(*aliases("scatter_reduce"), signature="input, dim, index, src, reduce, *, include_self=True")
def scatter_reduce_(ctx, call):
    return _scatter_reduce_call(ctx, call, call.arg("reduce"), call.arg("include_self"))


def _scatter_reduce_call(ctx, call, kind: str, include_self: bool):
    source = call.arg("input")
    dtype = ctx.dtype_for(call.output.dtype)
    x, index = _at_least_1d(ctx, source, dtype), call.arg("index")
    idx = _index_tensor(ctx, index)
    idx = idx if len(idx.shape) else ctx.reshape(idx, (1,))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    out = scatter_reduce(ctx, x, axis, idx, _at_least_1d(ctx, call.arg("src"), dtype), kind, include_self)
    return ctx.reshape(out, sizes(call.output))


@converter("torch.scatter", "torch.Tensor.scatter", "torch.Tensor.scatter_",
           signature="input, dim, index, src=None, value=None, *, reduce=None")
def scatter(ctx, call):
    source, index = call.arg("input"), call.arg("index")
    src = call.arg("src") if call.has("src") else call.arg("value")
    dtype = ctx.dtype_for(source.dtype)
    x = _at_least_1d(ctx, source, dtype)
    idx = _index_tensor(ctx, index)
    idx = idx if len(idx.shape) else ctx.reshape(idx, (1,))
    ishape = ctx.dims(idx)
    if isinstance(src, torch.Tensor) and src.dim() > 0:
        updates = ctx.slice(ctx.trt(src, dtype), [0] * len(ishape), ishape)
    else:
        updates = ctx.expand(ctx.trt(src, dtype), ishape)
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    if call.has("reduce"):
        kinds = {"add": "sum", "multiply": "prod"}
        if call.arg("reduce") not in kinds:
            raise ConversionError(f"scatter reduce={call.arg('reduce')!r} (PyTorch takes 'add' and 'multiply')")
        out = scatter_reduce(ctx, x, axis, idx, updates, kinds[call.arg("reduce")])
    else:
        layer = ctx.network.add_scatter(x, idx, updates, trt.ScatterMode.ELEMENT)
        layer.axis = axis
        out = layer.get_output(0)
    return ctx.reshape(out, sizes(call.output))


def _index_reduce_call(ctx, call, kind: str, include_self: bool, alpha=1):
    dtype = ctx.dtype_for(call.output.dtype)
    x = _at_least_1d(ctx, call.arg("input"), dtype)
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    src = _at_least_1d(ctx, call.arg("source"), dtype)
    if alpha is not True and alpha != 1:
        src = binary(ctx, src, alpha, Op.PROD, dtype)
    out = scatter_reduce(ctx, x, axis, _along(ctx, call.arg("index"), axis, ctx.dims(src)), src, kind, include_self)
    return ctx.reshape(out, sizes(call.output))


@converter(*aliases("index_add"), signature="input, dim, index, source, *, alpha=1, out=None")
def index_add(ctx, call):
    return _index_reduce_call(ctx, call, "sum", True, call.arg("alpha"))


@converter(*aliases("index_reduce"), signature="input, dim, index, source, reduce, *, include_self=True, out=None")
def index_reduce(ctx, call):
    return _index_reduce_call(ctx, call, call.arg("reduce"), call.arg("include_self"))


@converter(*aliases("index_copy"), signature="input, dim, index, source, *, out=None")
def index_copy(ctx, call):
    dtype = ctx.dtype_for(call.output.dtype)
    x = _at_least_1d(ctx, call.arg("input"), dtype)
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    src = _at_least_1d(ctx, call.arg("source"), dtype)
    layer = ctx.network.add_scatter(x, _along(ctx, call.arg("index"), axis, ctx.dims(src)), src,
                                    trt.ScatterMode.ELEMENT)
    layer.axis = axis
    return ctx.reshape(layer.get_output(0), sizes(call.output))


@converter(*aliases("index_fill"), signature="input, dim, index, value")
def index_fill(ctx, call):
    target = call.arg("input")
    if target.dim() == 0:  # the only index is 0: the value, in the input's type
        return ctx.reshape(ctx.trt(call.arg("value"), ctx.dtype_for(target.dtype)), ())
    index = [slice(None)] * target.dim()
    index[ctx.axis(call.arg("dim"), target.dim())] = call.arg("index")
    return _setitem(ctx, target, tuple(index), call.arg("value"))


@converter("torch.Tensor.index_put_", "torch.Tensor.index_put", "torch.index_put", "torch.index_put_",
           signature="input, indices, values, accumulate=False")
def index_put(ctx, call):
    target = call.arg("input")
    index = tuple(slice(None) if i is None else i for i in call.arg("indices"))
    if not call.arg("accumulate"):
        return _setitem(ctx, target, index, call.arg("values"))
    if any(ctx.is_traced(i) for i in index):
        raise ConversionError("index_put with accumulate=True and indices computed in the network; use index_add "
                              "along one dim, or constant indices")
    # Constant indices: the flat positions they address, summed into like scatter_add (repeats accumulate).
    positions = torch.arange(target.numel()).reshape(target.shape)[index]
    x = ctx.trt(target)
    if positions.numel() == 0:
        return x
    dtype = ctx.dtype_for(target.dtype)
    values = ctx.reshape(ctx.expand(ctx.trt(call.arg("values"), dtype), sizes(positions)), (positions.numel(),))
    flat = ctx.reshape(x, (target.numel(),))
    out = scatter_reduce(ctx, flat, 0, ctx.constant(positions.reshape(-1), DT.INT64), values, "sum")
    return ctx.reshape(out, sizes(target))


# ----------------------------------------------------------------------------- view scatters

def _mask_along(ctx, n, axis: int, rank: int, index: int):
    """A bool mask true at ``index`` along ``axis``, size 1 on the other axes."""
    view = [1] * rank
    view[axis] = n
    return ctx.reshape(ctx.elementwise(ctx.arange(n), index, Op.EQUAL), view)


@converter("torch.select_scatter", "torch.Tensor.select_scatter", signature="input, src, dim, index")
def select_scatter(ctx, call):
    source = call.arg("input")
    dtype = ctx.dtype_for(source.dtype)
    x = ctx.trt(source)
    rank = len(x.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    n = ctx.dims(x)[axis]
    index = int(call.arg("index"))
    index = index + n if index < 0 else index
    view = list(ctx.dims(x))
    view[axis] = 1
    src = ctx.reshape(ctx.trt(call.arg("src"), dtype), view)
    return select(ctx, _mask_along(ctx, n, axis, rank, index), src, x, dtype)


@converter("torch.slice_scatter", "torch.Tensor.slice_scatter",
           signature="input, src, dim=0, start=None, end=None, step=1")
def slice_scatter(ctx, call):
    # One element scatter along dim: the slice's positions, expanded to the source's shape.
    source, src = call.arg("input"), call.arg("src")
    dtype = ctx.dtype_for(source.dtype)
    x = ctx.trt(source)
    rank = len(x.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    n = ctx.dims(x)[axis]
    _static("slice_scatter", n)
    positions = range(*slice(call.arg("start"), call.arg("end"), call.arg("step")).indices(n))
    if len(positions) == 0:
        return x
    updates = ctx.trt(src, dtype)
    shape = ctx.dims(updates)
    view = [1] * rank
    view[axis] = len(positions)
    index = ctx.expand(ctx.constant(torch.tensor(list(positions)).reshape(view), DT.INT64), shape)
    layer = ctx.network.add_scatter(x, index, updates, trt.ScatterMode.ELEMENT)
    layer.axis = axis
    return layer.get_output(0)


@converter("torch.diagonal_scatter", "torch.Tensor.diagonal_scatter", signature="input, src, offset=0, dim1=0, dim2=1")
def diagonal_scatter(ctx, call):
    # The diagonal's positions in the flattened input are those diagonal() reads: scatter src there.
    source = call.arg("input")
    x = ctx.trt(source)
    _static("diagonal_scatter", *ctx.dims(x))
    count = source.numel()
    positions = _diagonal(ctx, ctx.constant(torch.arange(count).reshape(sizes(source)), DT.INT64),
                          int(call.arg("offset")), call.arg("dim1"), call.arg("dim2"))
    k = math.prod(positions.shape)
    flat = ctx.reshape(x, (count,))
    updates = ctx.reshape(ctx.trt(call.arg("src"), ctx.dtype_for(source.dtype)), (k,))
    layer = ctx.network.add_scatter(flat, ctx.reshape(positions, (k,)), updates, trt.ScatterMode.ELEMENT)
    layer.axis = 0
    return ctx.reshape(layer.get_output(0), sizes(source))


@converter(*aliases("masked_scatter"), signature="input, mask, source")
def masked_scatter(ctx, call):
    # The k-th true position of the mask (row-major) takes source's k-th element: k is the exclusive
    # running count of the mask, so a mask computed in the network keeps fixed shapes too.
    out = call.output
    shape = sizes(out)
    dtype = ctx.dtype_for(out.dtype)
    count = math.prod(shape)
    x = ctx.reshape(ctx.expand(ctx.trt(call.arg("input"), dtype), shape), (count,))
    mask = ctx.reshape(ctx.expand(ctx.trt(call.arg("mask"), DT.BOOL), shape), (count,))
    source = call.arg("source")
    values = ctx.reshape(ctx.trt(source, dtype), (source.numel(),))
    layer = ctx.network.add_cumulative(ctx.cast(mask, DT.INT32), ctx.scalar(0, DT.INT32),
                                       trt.CumulativeOperation.SUM, True, False)
    # positions past the mask's last true element may count beyond the source: they are not selected
    k = ctx.elementwise(layer.get_output(0), source.numel() - 1, Op.MIN)
    picked = ctx.network.add_gather(values, k, 0).get_output(0)
    return ctx.reshape(select(ctx, mask, picked, x, dtype), shape)


def _scatter_flat(ctx, target: torch.Tensor, positions, updates, accumulate: bool = False):
    """``target`` flattened with ``updates`` written (or added, ``accumulate``) at the flat ``positions``
    (a network tensor or constant of non-negative indices, one per update), reshaped back."""
    count = target.numel()
    flat = ctx.reshape(ctx.trt(target), (count,))
    k = math.prod(updates.shape)
    positions = ctx.reshape(_index_tensor(ctx, positions), (k,))
    updates = ctx.reshape(updates, (k,))
    if accumulate:
        out = scatter_reduce(ctx, flat, 0, positions, updates, "sum")
    else:
        layer = ctx.network.add_scatter(flat, positions, updates, trt.ScatterMode.ELEMENT)
        layer.axis = 0
        out = layer.get_output(0)
    return ctx.reshape(out, sizes(target))


@converter("torch.put", "torch.Tensor.put", "torch.Tensor.put_", signature="input, index, source, accumulate=False")
def put(ctx, call):
    target, index = call.arg("input"), call.arg("index")
    updates = ctx.trt(call.arg("source"), ctx.dtype_for(target.dtype))
    return _scatter_flat(ctx, target, _wrap_index(ctx, index, target.numel()), updates, call.arg("accumulate"))


@converter("torch.as_strided_scatter", "torch.Tensor.as_strided_scatter",
           signature="input, src, size, stride, storage_offset=None")
def as_strided_scatter(ctx, call):
    target = call.arg("input")
    positions = strided_positions(ctx, target, call.arg("size"), call.arg("stride"), call.arg("storage_offset"))
    if positions.numel() == 0:
        return ctx.trt(target)
    updates = ctx.trt(call.arg("src"), ctx.dtype_for(target.dtype))
    return _scatter_flat(ctx, target, positions, updates)
