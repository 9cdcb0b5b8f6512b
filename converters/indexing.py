"""Indexing: ``x[...]`` reads and writes, gathers and scatters, embedding, one_hot, padding.

Basic indexing (ints, slices, None, Ellipsis) is one slice and one shuffle. Advanced
indices (index tensors, constant boolean masks) are folded into one flat index on the
merged indexed axes, so any number of them costs one gather.
"""
from __future__ import annotations

import math

import torch

from torch2x import layout as channel_layout
from torch2x.context import ConversionError, sizes
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.tracer import leaves
from torch2x.shapes import is_traced, largest, smallest

Op = trt.ElementWiseOperation


def _wrap_index(ctx, index, size: int):
    """Index values with Python's negative wrap-around (TensorRT's gather takes them as they are)."""
    if not ctx.is_traced(index):
        return torch.remainder(torch.as_tensor(index).long(), size)
    it = ctx.trt(index)
    if it.dtype not in (trt.DataType.INT32, trt.DataType.INT64):
        it = ctx.cast(it, trt.DataType.INT64)
    negative = ctx.elementwise(it, 0, Op.LESS)
    size = ctx.shape_value(size) if is_traced(size) else size  # a dynamic dim: its run-time size
    return ctx.network.add_select(negative, ctx.elementwise(it, size, Op.SUM), it).get_output(0)


def _index_tensor(ctx, index, dtype=trt.DataType.INT64):
    """A network tensor of indices: untraced (already wrapped) indices become a constant."""
    if isinstance(index, torch.Tensor) and not ctx.is_traced(index):
        return ctx.constant(index, dtype)
    return ctx.trt(index)


def _items(ctx, index, rank: int) -> list:
    """``index`` as a list of ints, slices, None and tensors, with the Ellipsis expanded."""
    if isinstance(index, list) and any(isinstance(i, (torch.Tensor, list, tuple, slice)) or i is None
                                       or i is Ellipsis for i in index):
        index = tuple(index)  # PyTorch (like old NumPy) reads such a list as a tuple of indices
    items = list(index) if isinstance(index, tuple) else [index]
    for k, item in enumerate(items):
        bounds = ((item.start, item.stop, item.step) if isinstance(item, slice)
                  else item if isinstance(item, list) else ())
        if any(ctx.is_traced(b) for b in leaves(bounds)):
            raise ConversionError("a slice bound or index list holds a tensor computed in the network; write "
                                  "int(n) to freeze its value, or index with one index tensor")
        if isinstance(item, torch.Tensor) and item.dim() == 0 and item.dtype == torch.bool and not ctx.is_traced(item):
            item = bool(item)
        if isinstance(item, bool):
            if not item:
                raise ConversionError("x[False] is empty: TensorRT has no zero-size tensors")
            items[k] = None  # x[True] adds an axis, like None
        elif isinstance(item, list):
            items[k] = torch.tensor(item)
        elif isinstance(item, torch.Tensor) and item.dtype == torch.uint8:
            items[k] = item.bool()
        elif (isinstance(item, torch.Tensor) and item.dim() == 0 and not item.is_floating_point()
              and item.dtype != torch.bool and not ctx.is_traced(item)):
            items[k] = int(item)  # PyTorch takes a 0-dim index tensor as an integer
    used = sum(it.dim() if isinstance(it, torch.Tensor) and it.dtype == torch.bool else
               0 if it is None or it is Ellipsis else 1 for it in items)
    ellipsis = [k for k, it in enumerate(items) if it is Ellipsis]
    if ellipsis:
        items[ellipsis[0]:ellipsis[0] + 1] = [slice(None)] * (rank - used)
        return items
    return items + [slice(None)] * (rank - used)


def _plan(ctx, items: list, shape: tuple):
    """Slice parameters, the basic-indexing layout and the advanced indices of one ``x[items]``."""
    rank = len(shape)
    start, size, stride = [0] * rank, list(shape), [1] * rank
    layout = []  # ("dim", input axis) or ("new",), in the order of the basic-indexing result
    advanced = []  # (layout position, input axis, index values)
    dim = 0
    for item in items:
        if item is None:
            layout.append(("new",))
        elif isinstance(item, slice):
            start[dim], size[dim], stride[dim] = _slice_bounds(item, shape[dim], ctx.exact_sizes)
            layout.append(("dim", dim))
            dim += 1
        elif isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            if ctx.is_traced(item):
                raise ConversionError("a boolean mask computed in the network selects a data-dependent number of "
                                      "elements; use torch.where(mask, x, other) to keep the shape")
            for idx in torch.nonzero(item, as_tuple=True):
                advanced.append((len(layout), dim, idx))
                layout.append(("dim", dim))
                dim += 1
        elif isinstance(item, torch.Tensor):
            if item.is_floating_point():
                raise ConversionError("float tensors cannot index")
            advanced.append((len(layout), dim, item))
            layout.append(("dim", dim))
            dim += 1
        else:
            i = int(item)
            start[dim], size[dim] = i % shape[dim], 1
            dim += 1
    return (start, size, stride), layout, advanced


def _slice_bounds(item: slice, size, exact: bool = False) -> tuple:
    """(start, length, step) of ``item`` over a dim of ``size``; a traced size or bound (dynamic shapes)
    gives traced ones, assuming the bounds lie inside the dim as they do in the example (``exact``: fixed
    bounds are clamped to the dim at run time instead)."""
    if not any(is_traced(v) for v in (item.start, item.stop, item.step, size)):
        lo, hi, step = slice(*(None if v is None else int(v) for v in (item.start, item.stop, item.step))).indices(size)
        n = len(range(lo, hi, step))
        return (lo if n else 0), n, step
    step = 1 if item.step is None else int(item.step)
    if step <= 0:
        raise ConversionError("a negative slice step over a dynamic dim; flip the tensor instead")

    def bound(v, default):
        if v is None:
            return default
        if exact and not is_traced(v) and is_traced(size):
            return smallest(v, size) if v >= 0 else largest(size + v, 0)
        if not is_traced(v) and is_traced(size) and v >= int(size):
            return size  # past the example's end: to the end at any size
        return size + v if not is_traced(v) and v < 0 else v

    lo, hi = bound(item.start, 0), bound(item.stop, size)
    if exact and is_traced(size):  # a start past a short dim's end keeps nothing
        return lo, largest((hi - lo + (step - 1)) // step, 0), step
    return lo, (hi - lo + (step - 1)) // step, step


def _flat_index(ctx, advanced: list, size: list):
    """One index into the merged advanced axes, broadcast like PyTorch broadcasts the index tensors."""
    strides = [math.prod(size[a] for _, a, _ in advanced[k + 1:]) for k in range(len(advanced))]
    if not any(ctx.is_traced(idx) for _, _, idx in advanced):
        flat = sum(_wrap_index(ctx, idx, size[a]) * s for (_, a, idx), s in zip(advanced, strides))
        return ctx.constant(torch.as_tensor(flat), trt.DataType.INT64)
    flat = None
    for (_, a, idx), s in zip(advanced, strides):
        term = _wrap_index(ctx, idx, size[a])
        term = ctx.trt(term, trt.DataType.INT64)
        if s != 1:
            term = ctx.elementwise(term, s, Op.PROD)
        flat = term if flat is None else ctx.elementwise(flat, term, Op.SUM)
    return flat


def _select_traced_scalars(ctx, x, items: list):
    """PyTorch takes a 0-dim integer index tensor as an integer: gather it away before the rest."""
    axes, axis = [], 0
    for k, item in enumerate(items):
        if isinstance(item, torch.Tensor) and item.dim() == 0 and item.dtype != torch.bool:
            axes.append((k, axis))
        axis += 0 if item is None else item.dim() if isinstance(item, torch.Tensor) and item.dtype == torch.bool else 1
    for k, axis in reversed(axes):
        index = _wrap_index(ctx, items.pop(k), ctx.dims(x)[axis])
        x = ctx.network.add_gather(x, index, axis).get_output(0)
    return x


def _getitem(ctx, source, index, out_shape):
    x = ctx.trt(source)
    items = _items(ctx, index, len(x.shape))
    x = _select_traced_scalars(ctx, x, items)
    shape = ctx.dims(x)
    (start, size, stride), layout, advanced = _plan(ctx, items, shape)
    dropped = [a for a in range(len(shape)) if ("dim", a) not in layout]
    if (len(dropped) == 1 and not advanced and len(layout) == len(shape) - 1
            and size == [1 if a in dropped else n for a, n in enumerate(shape)] and set(stride) == {1}):
        # x[..., i, ...]: a gather with a shared scalar index is one layer; a slice needs a reshape after it.
        index = ctx.scalar(start[dropped[0]], trt.DataType.INT64)
        return ctx.network.add_gather(x, index, dropped[0]).get_output(0)
    y = ctx.slice(x, start, size, stride)
    if not advanced:
        kept = ctx.dims(y)
        return ctx.reshape(y, [kept[e[1]] if e[0] == "dim" else 1 for e in layout])
    positions = [p for p, _, _ in advanced]
    # PyTorch keeps the indexed axes in place when they are adjacent, else puts them first.
    q = positions[0] if positions == list(range(positions[0], positions[0] + len(positions))) else 0
    adv_axes = [a for _, a, _ in advanced]
    rest = [e for p, e in enumerate(layout) if p not in positions]
    merged = rest[:q] + [("adv",)] + rest[q:]
    order, dims = [], []
    for e in merged:
        if e[0] == "adv":
            order += adv_axes
            dims.append(math.prod(size[a] for a in adv_axes))
        elif e[0] == "dim":
            order.append(e[1])
            dims.append(size[e[1]])
        else:
            dims.append(1)
    order += [a for a in range(len(shape)) if a not in order]  # the integer-indexed axes, size 1 now
    y = ctx.shuffle(y, dims, first=order) if order != sorted(order) else ctx.reshape(y, dims)
    gathered = ctx.network.add_gather(y, _flat_index(ctx, advanced, size), q).get_output(0)
    laid_out = tuple(gathered.shape)
    if len(laid_out) != len(out_shape) or any(g >= 0 and g != o for g, o in zip(laid_out, out_shape)):
        raise ConversionError(f"converter bug: indexing laid out {tuple(gathered.shape)}, PyTorch gives {out_shape}")
    return gathered


def _getitem_in_channels(ctx, source, index, out):
    """``x[index]`` of a value in channel layout (see torch2x.layout) by ints and slices that leave the
    channels whole: a slice of the stored tensor, which stays in the layout (pending affine included)."""
    ch = ctx.held(source)
    if ch is None:
        return None
    items = _items(ctx, index, ch.rank)
    if not all(isinstance(i, (int, slice)) and not isinstance(i, bool) for i in items) or out.dim() < 2:
        return None
    (start, size, stride), _, _ = _plan(ctx, items, ctx.dims(source))
    if (start[-1], stride[-1]) != (0, 1) or size[-1] != source.shape[-1]:
        return None
    kept = [a for a, item in enumerate(items) if isinstance(item, slice)]
    order = tuple(kept.index(o) for o in ch.order if o in kept)
    if order[1] != len(order) - 1:  # the channels would leave axis 1 (the batch dim indexed away)
        return None
    pad = len(ch.itensor.shape) - ch.rank
    y = ctx.slice(ch.itensor, [start[o] for o in ch.order] + [0] * pad, ch.stored_sizes(size),
                  [stride[o] for o in ch.order] + [1] * pad)
    removed = [j for j, o in enumerate(ch.order) if o not in kept]
    result = channel_layout.Channels(y, order, ch.scale, ch.shift)
    if (removed and min(removed) < len(order)) or channel_layout.stored_rank(len(order)) != len(ch.itensor.shape):
        stored = ctx.reshape(y, result.stored_sizes([size[a] for a in kept]))
        result = channel_layout.Channels(stored, order, ch.scale, ch.shift)
    return channel_layout.note(ctx, result, tuple(out.shape))


@converter("torch.Tensor.__getitem__", signature="input, index")
def getitem(ctx, call):
    kept = _getitem_in_channels(ctx, call.arg("input"), call.arg("index"), call.output)
    if kept is not None:
        return kept
    return _getitem(ctx, call.arg("input"), call.arg("index"), sizes(call.output))


# ----------------------------------------------------------------------------- writes

def _setitem(ctx, target, index, value):
    x = ctx.trt(target)
    dtype = ctx.dtype_for(target.dtype)
    shape = sizes(target)
    scalar_like = not isinstance(value, torch.Tensor) or value.numel() == 1
    keys = index if isinstance(index, tuple) else (index,)
    traced = [k for k in keys if isinstance(k, torch.Tensor) and ctx.is_traced(k)]
    if traced and traced[0].dtype != torch.bool:
        return _scatter_along(ctx, x, shape, _items(ctx, index, len(shape)), value, dtype)
    if traced:
        mask = keys[0]
        if not (len(keys) == 1 and scalar_like):
            raise ConversionError("writing through a mask computed in the network is supported only as "
                                  "x[mask] = scalar")
        cond = ctx.reshape(ctx.trt(mask), sizes(mask) + (1,) * (len(shape) - mask.dim()))
        v = ctx.reshape(ctx.trt(value, dtype), ())
        cond, v, x = ctx.broadcast(cond, v, x)
        return ctx.network.add_select(cond, v, x).get_output(0)
    positions = torch.arange(math.prod(shape)).reshape(shape)[index]
    if scalar_like:
        # A constant mask and one select: no reshapes, whatever the index.
        hit = torch.zeros(math.prod(shape), dtype=torch.bool)
        hit[positions.reshape(-1)] = True
        cond = ctx.constant(hit.reshape(shape), trt.DataType.BOOL)
        v = ctx.reshape(ctx.trt(value, dtype), ())
        cond, v, x = ctx.broadcast(cond, v, x)
        return ctx.network.add_select(cond, v, x).get_output(0)
    updates = ctx.reshape(ctx.expand(ctx.trt(value, dtype), sizes(positions)), (positions.numel(),))
    flat = ctx.reshape(x, (math.prod(shape),))
    layer = ctx.network.add_scatter(flat, ctx.constant(positions.reshape(-1), trt.DataType.INT64), updates,
                                    trt.ScatterMode.ELEMENT)
    layer.axis = 0
    return ctx.reshape(layer.get_output(0), shape)


def _scatter_along(ctx, x, shape, items, value, dtype):
    """``x[:, idx] = value`` with one 0-D/1-D index tensor (constant or computed): an element scatter."""
    tensors = [(a, it) for a, it in enumerate(items) if isinstance(it, torch.Tensor)]
    full = all(it == slice(None) for it in items if not isinstance(it, torch.Tensor))
    if len(tensors) != 1 or tensors[0][1].dim() > 1 or not full or len(items) != len(shape):
        raise ConversionError("writing through indices computed in the network is supported as x[mask] = scalar "
                              "and x[:, idx] = value (one 1-D index tensor, full slices elsewhere)")
    axis, idx = tensors[0]
    updates_shape = list(shape)
    updates_shape[axis] = idx.numel()
    view = [1] * len(shape)
    view[axis] = idx.numel()
    index = _wrap_index(ctx, idx, shape[axis])
    index = ctx.constant(index, trt.DataType.INT64) if isinstance(index, torch.Tensor) else index
    index = ctx.expand(ctx.reshape(index, view), updates_shape)
    if idx.dim() == 0:  # x[:, i] = v drops the axis: v broadcasts against the other axes
        selected = updates_shape[:axis] + updates_shape[axis + 1:]
        updates = ctx.reshape(ctx.expand(ctx.trt(value, dtype), selected), updates_shape)
    else:
        updates = ctx.expand(ctx.trt(value, dtype), updates_shape)
    layer = ctx.network.add_scatter(x, index, updates, trt.ScatterMode.ELEMENT)
    layer.axis = axis
    return layer.get_output(0)


@converter("torch.Tensor.__setitem__", signature="input, index, value")
def setitem(ctx, call):
    target = call.arg("input")
    return _setitem(ctx, target, call.arg("index"), call.arg("value"))  # the tracer writes views through


# ----------------------------------------------------------------------------- gathers

@converter("torch.take", "torch.Tensor.take", signature="input, index")
def take(ctx, call):
    source, index = call.arg("input"), call.arg("index")
    x = ctx.reshape(ctx.trt(source), (source.numel(),))
    return ctx.network.add_gather(x, _index_tensor(ctx, _wrap_index(ctx, index, source.numel())), 0).get_output(0)


@converter("torch.index_select", "torch.Tensor.index_select", signature="input, dim, index, *, out=None")
def index_select(ctx, call):
    x = ctx.trt(call.arg("input"))
    if not x.shape:  # PyTorch takes a 0-d input as one element along dim 0
        x = ctx.reshape(x, (1,))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    index = call.arg("index")
    out = ctx.network.add_gather(x, _index_tensor(ctx, index), axis).get_output(0)
    return ctx.reshape(out, sizes(call.output))


@converter("torch.select", "torch.Tensor.select", "torch.select_copy", signature="input, dim, index")
def select(ctx, call):
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    index = ctx.scalar(int(call.arg("index")) % x.shape[axis], trt.DataType.INT64)
    return ctx.network.add_gather(x, index, axis).get_output(0)


def _gather_elements(ctx, x, index, axis: int):
    """torch.gather: the index may be smaller than ``x`` on the other axes, TensorRT's needs them equal."""
    ishape = sizes(index)
    size = [n if a != axis else x.shape[a] for a, n in enumerate(ishape)]
    x = ctx.slice(x, [0] * len(size), size)
    layer = ctx.network.add_gather(x, _index_tensor(ctx, index), axis)
    layer.mode = trt.GatherMode.ELEMENT
    return layer.get_output(0)


@converter("torch.gather", "torch.Tensor.gather", signature="input, dim, index, *, sparse_grad=False, out=None")
def gather(ctx, call):
    x = ctx.trt(call.arg("input"))
    return _gather_elements(ctx, x, call.arg("index"), ctx.axis(call.arg("dim"), len(x.shape)))


@converter("torch.take_along_dim", "torch.Tensor.take_along_dim", signature="input, indices, dim=None, *, out=None")
def take_along_dim(ctx, call):
    source, indices, dim = call.arg("input"), call.arg("indices"), call.arg("dim")
    x = ctx.trt(source)
    if dim is None:
        x = ctx.reshape(x, (source.numel(),))
        index = ctx.reshape(_index_tensor(ctx, indices), (indices.numel(),))
        layer = ctx.network.add_gather(x, index, 0)
        layer.mode = trt.GatherMode.ELEMENT
        return layer.get_output(0)
    out = sizes(call.output)
    axis = ctx.axis(dim, len(out))
    x_shape = list(out)
    x_shape[axis] = source.shape[axis]
    x = ctx.expand(x, x_shape)
    index = ctx.expand(_index_tensor(ctx, indices), out)
    layer = ctx.network.add_gather(x, index, axis)
    layer.mode = trt.GatherMode.ELEMENT
    return layer.get_output(0)


@converter("torch.masked_select", "torch.Tensor.masked_select", signature="input, mask, *, out=None")
def masked_select(ctx, call):
    source, mask = call.arg("input"), call.arg("mask")
    if ctx.is_traced(mask):
        raise ConversionError("masked_select with a mask computed in the network has a data-dependent shape; "
                              "use torch.where(mask, x, other) to keep the shape")
    shape = torch.broadcast_shapes(source.shape, mask.shape)
    positions = torch.arange(math.prod(shape)).reshape(shape)[mask.expand(shape)]
    x = ctx.reshape(ctx.expand(ctx.trt(source), shape), (math.prod(shape),))
    return ctx.network.add_gather(x, ctx.constant(positions, trt.DataType.INT64), 0).get_output(0)


@converter("torch.nn.functional.embedding")
def embedding(ctx, call):
    if call.has("max_norm"):
        raise ConversionError("embedding with max_norm renormalizes the weight in place at every call")
    return ctx.network.add_gather(ctx.trt(call.arg("weight")), _index_tensor(ctx, call.arg("input")), 0).get_output(0)


@converter("torch.embedding", signature="weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False")
def torch_embedding(ctx, call):
    return ctx.network.add_gather(ctx.trt(call.arg("weight")), _index_tensor(ctx, call.arg("indices")), 0).get_output(0)


@converter("torch.nn.functional.one_hot", signature="input, num_classes=-1")
def one_hot(ctx, call):
    source = call.arg("input")
    classes = int(call.output.shape[-1])
    index = ctx.reshape(_index_tensor(ctx, source), sizes(source) + (1,))
    return ctx.elementwise(index, torch.arange(classes).reshape((1,) * source.dim() + (classes,)), Op.EQUAL)


# ----------------------------------------------------------------------------- data-dependent shapes

@converter("torch.nonzero", "torch.Tensor.nonzero", "torch.argwhere", "torch.Tensor.argwhere",
           signature="input, *args, **kwargs")
def nonzero(ctx, call):
    raise ConversionError(f"{call.op} has a data-dependent output shape, which fixed-shape networks cannot hold")


# ----------------------------------------------------------------------------- padding

_PAD_MODES = {"constant": trt.SampleMode.FILL, "reflect": trt.SampleMode.REFLECT,
              "replicate": trt.SampleMode.CLAMP, "circular": trt.SampleMode.WRAP}


def _pad(ctx, source, pad, mode: str, value):
    """F.pad as one slice: the sample mode reads the padding (negative pads start inside and crop)."""
    if mode not in _PAD_MODES:
        raise ConversionError(f"pad mode {mode!r}")
    x = ctx.trt(source)
    rank = len(x.shape)
    pad = [int(p) for p in pad]
    size = list(ctx.dims(x))  # traced sizes for dynamic dims: the padded size follows them
    if mode == "circular" and min(pad) < 0:
        # torch crops first and wraps around the cropped tensor.
        crop = [min(p, 0) for p in pad]
        start = [0] * rank
        for k in range(len(pad) // 2):
            start[rank - 1 - k] = -crop[2 * k]
            size[rank - 1 - k] += crop[2 * k] + crop[2 * k + 1]
        x = ctx.slice(x, start, size)
        pad = [max(p, 0) for p in pad]
    start = [0] * rank
    for k in range(len(pad) // 2):
        start[rank - 1 - k] = -pad[2 * k]
        size[rank - 1 - k] += pad[2 * k] + pad[2 * k + 1]
    return ctx.slice(x, start, size, mode=_PAD_MODES[mode], fill=value)


@converter("torch.nn.functional.pad")
def pad(ctx, call):
    return _pad(ctx, call.arg("input"), call.arg("pad"), call.arg("mode"), call.arg("value"))


@converter("torch.constant_pad_nd", signature="input, pad, value=0")
def constant_pad_nd(ctx, call):
    return _pad(ctx, call.arg("input"), call.arg("pad"), "constant", call.arg("value"))
