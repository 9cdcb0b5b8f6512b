"""Shape ops: views, permutations, broadcasting copies, splits and joins, flips and rolls, pixel/channel shuffles.

Shapes are fixed, so most converters read the output shape off the real torch result
and need one shuffle or one slice layer.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from torch2x import layout
from torch2x.context import ConversionError, sizes
from torch2x.layout import Channels
from torch2x.shapes import is_traced
from torch2x.flavour import trt
from torch2x.registry import converter, lookup


def _dims_arg(call, name: str) -> list:
    """A sizes/dims argument given as ``*ints``, one tuple/list/torch.Size, or by keyword."""
    return [int(v) for v in _size_args(call, name)]


def _size_args(call, name: str) -> list:
    """Like ``_dims_arg`` but keeps traced sizes (torch2x.shapes.TracedInt) as they are."""
    if name in call.kwargs:
        value = call.kwargs[name]
    else:
        value = call.args[1:]
        if len(value) == 1 and isinstance(value[0], (tuple, list, torch.Size)):
            value = value[0]
    return list([value] if isinstance(value, int) else value)


def _requested_shape(ctx, call, source, out) -> Sequence:
    """The target shape of a view/reshape/expand as the call asked for it when that matters (traced
    sizes, -1 on a tensor with dynamic dims, another tensor's shape); otherwise the example's sizes."""
    dynamic = any(is_traced(d) for d in ctx.dims(source))
    other = call.args[1] if len(call.args) > 1 else None
    if call.name.endswith("_as") and isinstance(other, torch.Tensor):
        return ctx.dims(other)
    if call.name.rsplit(".", 1)[-1] in ("view", "reshape", "expand", "broadcast_to"):
        requested = _size_args(call, "size" if "size" in call.kwargs else "shape")
        if any(is_traced(s) for s in requested) or (dynamic and -1 in requested):
            return requested
    return sizes(out)


# ----------------------------------------------------------------------------- reshapes

@converter("torch.Tensor.view", "torch.Tensor.reshape", "torch.reshape", "torch.Tensor.view_as",
           "torch.Tensor.reshape_as", "torch.flatten", "torch.Tensor.flatten", "torch.unflatten",
           "torch.Tensor.unflatten", "torch.squeeze", "torch.Tensor.squeeze", "torch.Tensor.squeeze_",
           "torch.unsqueeze", "torch.Tensor.unsqueeze", "torch.Tensor.unsqueeze_", "torch.ravel",
           "torch.Tensor.ravel", "torch.atleast_1d", "torch.atleast_2d", "torch.atleast_3d",
           "torch.view_copy", "torch.squeeze_copy", "torch.unsqueeze_copy",
           signature="input, *args, **kwargs")
def reshape(ctx, call):
    out, source = call.output, call.arg("input")
    if not (isinstance(out, torch.Tensor) and isinstance(source, torch.Tensor)):
        raise ConversionError(f"{call.name} of several tensors is not supported; call it on each tensor")
    if out.dtype != source.dtype:
        raise ConversionError(f"{call.name} reinterprets {source.dtype} bits as {out.dtype}; TensorRT has no bitcast")
    target = _requested_shape(ctx, call, source, out)
    kept = layout.reshaped(ctx, source, target, tuple(out.shape))
    return kept if kept is not None else ctx.reshape(ctx.trt(source), target)


# ----------------------------------------------------------------------------- permutations

@converter("torch.permute", "torch.Tensor.permute", "torch.permute_copy", signature="input, *args, **kwargs")
def permute(ctx, call):
    x = call.arg("input")
    return permuted(ctx, x, [ctx.axis(d, x.dim()) for d in _dims_arg(call, "dims")])


def permuted(ctx, value, order):
    """``value.permute(order)``. A value in channel layout whose channels stay last keeps its stored tensor
    (another order, no layer); ``(N, C, ...) -> (N, ..., C)`` of a plain tensor enters the channel layout
    as the tensor itself (see torch2x.layout)."""
    order = tuple(int(o) for o in order)
    ch = ctx.held(value)
    if ch is not None:
        moved = layout.permuted(ch, order)
        return moved if moved is not None else layout.unpermuted(ctx, ch, order)
    if ctx.layouts and order == layout.inverse(layout.standard_order(len(order))) and len(order) >= 3:
        x = ctx.trt(value)
        if layout.can_hold(value, x) and x.shape[1] > 0:  # the channels (dim 1 here) must be static
            stored = ctx.reshape(x, ctx.dims(value) + (1,) * (4 - len(order)))
            return Channels(stored, layout.standard_order(len(order)))
    return ctx.permute(ctx.trt(value), order)


def _swap(ctx, value, d0: int, d1: int):
    rank = value.dim()
    order = list(range(rank))
    a, b = ctx.axis(d0, rank), ctx.axis(d1, rank)
    order[a], order[b] = order[b], order[a]
    return permuted(ctx, value, order)


@converter("torch.transpose", "torch.Tensor.transpose", "torch.Tensor.transpose_", "torch.swapaxes",
           "torch.Tensor.swapaxes", "torch.Tensor.swapaxes_", "torch.swapdims", "torch.Tensor.swapdims",
           "torch.Tensor.swapdims_", "torch.transpose_copy", signature="input, dim0, dim1")
def transpose(ctx, call):
    return _swap(ctx, call.arg("input"), call.arg("dim0"), call.arg("dim1"))


@converter("torch.t", "torch.Tensor.t", "torch.Tensor.t_", "torch.t_copy", signature="input")
def t(ctx, call):
    x = call.arg("input")
    return ctx.trt(x) if x.dim() < 2 else _swap(ctx, x, 0, 1)


@converter("torch.Tensor.T", "torch.Tensor.H", signature="input")
def full_transpose(ctx, call):
    x = call.arg("input")
    return permuted(ctx, x, range(x.dim() - 1, -1, -1))


@converter("torch.Tensor.mT", "torch.Tensor.mH", "torch.adjoint", "torch.Tensor.adjoint", signature="input")
def matrix_transpose(ctx, call):
    if call.arg("input").is_complex():
        raise ConversionError("complex tensors have no TensorRT type")
    return _swap(ctx, call.arg("input"), -2, -1)


@converter("torch.movedim", "torch.Tensor.movedim", "torch.moveaxis", "torch.Tensor.moveaxis",
           signature="input, source, destination")
def movedim(ctx, call):
    x = call.arg("input")
    rank = x.dim()
    src, dst = call.arg("source"), call.arg("destination")
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    src = [ctx.axis(s, rank) for s in src]
    dst = [ctx.axis(d, rank) for d in dst]
    order = [None] * rank
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(a for a in range(rank) if a not in src)
    return permuted(ctx, x, [o if o is not None else next(rest) for o in order])


# ----------------------------------------------------------------------------- identity

if lookup("torch.Tensor.contiguous") is None:  # elementwise.py may own it (the registry is a dict)
    @converter("torch.Tensor.contiguous", signature="input, memory_format=None")
    def contiguous(ctx, call):
        return ctx.trt(call.arg("input"))


# ----------------------------------------------------------------------------- broadcasting copies

@converter("torch.Tensor.expand", "torch.Tensor.expand_as", "torch.broadcast_to", "torch.Tensor.broadcast_to",
           "torch.expand_copy", signature="input, *args, **kwargs")
def expand(ctx, call):
    source = call.arg("input")
    shape = list(_requested_shape(ctx, call, source, call.output))
    given = ctx.dims(source)
    for i, d in enumerate(given):  # -1 keeps the input's size (aligned at the end)
        j = len(shape) - len(given) + i
        if shape[j] == -1 and not is_traced(shape[j]):
            shape[j] = d
    return ctx.expand(ctx.trt(source), shape)


@converter("torch.broadcast_tensors", signature="*tensors")
def broadcast_tensors(ctx, call):
    return [ctx.expand(ctx.trt(t), sizes(o)) for t, o in zip(call.arg("tensors"), call.output)]


@converter("torch.Tensor.repeat", "torch.tile", "torch.Tensor.tile", signature="input, *args, **kwargs")
def tile(ctx, call):
    # A WRAP slice reads input[i mod size] on every axis: a tiling in one layer.
    x = ctx.trt(call.arg("input"))
    shape = sizes(call.output)
    x = ctx.broadcast_rank(x, len(shape))
    if tuple(x.shape) == shape:
        return x
    if any(d < 0 for d in x.shape):  # each dim times its repeat count (tile pads the counts on the left)
        repeats = _size_args(call, "dims" if "dims" in call.kwargs else "repeats")
        repeats = [1] * (len(shape) - len(repeats)) + list(repeats)
        shape = tuple(d * r for d, r in zip(ctx.dims(x), repeats))
    return ctx.slice(x, (0,) * len(shape), shape, mode=trt.SampleMode.WRAP)


@converter("torch.repeat_interleave", "torch.Tensor.repeat_interleave",
           signature="input, repeats=None, dim=None, *, output_size=None")
def repeat_interleave(ctx, call):
    source, repeats, dim = call.arg("input"), call.arg("repeats"), call.arg("dim")
    if repeats is None:
        raise ConversionError("repeat_interleave(repeats) makes a data-dependent shape")
    if ctx.is_traced(repeats):
        raise ConversionError("repeat_interleave with repeats computed in the network has a data-dependent shape")
    x = ctx.trt(source)
    if dim is None:
        x, dim = ctx.reshape(x, (source.numel(),)), 0
    axis = ctx.axis(dim, len(x.shape))
    index = torch.repeat_interleave(torch.arange(x.shape[axis]), torch.as_tensor(repeats))
    layer = ctx.network.add_gather(x, ctx.constant(index, trt.DataType.INT64), axis)
    return layer.get_output(0)


# ----------------------------------------------------------------------------- splits

def _piece(ctx, x, axis: int, start: int, size: int):
    starts = [0] * len(x.shape)
    shape = list(ctx.dims(x))
    starts[axis], shape[axis] = start, size
    return ctx.slice(x, starts, shape)


def _split_consecutive(ctx, call, dim_name: str = "dim"):
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg(dim_name), len(x.shape))
    pieces, start = [], 0
    for size in _piece_sizes(ctx, call, x, axis):
        pieces.append(_piece(ctx, x, axis, start, size))
        start += size
    return pieces


def _piece_sizes(ctx, call, x, axis: int) -> list:
    """The sizes of consecutive pieces along ``axis``: the example's, or along a dynamic axis (or with
    traced sizes) as torch computes them from the dim, for the example's number of pieces."""
    example = [int(out.shape[axis]) for out in call.output]
    given = [call.args[1]] if len(call.args) > 1 else [v for k, v in call.kwargs.items() if k != "dim"][:1]
    given = given[0] if given else None
    if x.shape[axis] >= 0 and not (isinstance(given, (list, tuple)) and any(is_traced(v) for v in given)):
        return example
    if isinstance(given, (list, tuple)):  # split_with_sizes: as given
        return list(given)
    dim = ctx.dims(x)[axis]
    step = (dim + (given - 1)) // given if call.name.endswith("chunk") else given  # chunk's piece size
    return [step] * (len(example) - 1) + [dim - step * (len(example) - 1)]


@converter("torch.split", signature="input, split_size_or_sections, dim=0")
@converter("torch.Tensor.split", "torch.Tensor.unsafe_split", "torch.unsafe_split",
           signature="input, split_size, dim=0")
@converter("torch.split_with_sizes", "torch.Tensor.split_with_sizes", "torch.Tensor.unsafe_split_with_sizes",
           "torch.split_with_sizes_copy",
           signature="input, split_sizes, dim=0")
@converter("torch.chunk", "torch.Tensor.chunk", "torch.unsafe_chunk", "torch.Tensor.unsafe_chunk",
           signature="input, chunks, dim=0")
def split(ctx, call):
    return _split_consecutive(ctx, call)


@converter("torch.tensor_split", "torch.Tensor.tensor_split",
           signature="input, indices_or_sections=None, dim=0, *, sections=None, indices=None, "
                     "tensor_indices_or_sections=None")
def tensor_split(ctx, call):
    given = [call.arg(n) for n in ("indices_or_sections", "indices", "tensor_indices_or_sections", "sections")]
    spec = next(v for v in given if v is not None)
    if ctx.is_traced(spec):
        raise ConversionError("tensor_split at indices computed in the network has a data-dependent shape")
    if isinstance(spec, torch.Tensor):
        spec = spec.tolist()
    if isinstance(spec, int):
        return _split_consecutive(ctx, call)
    # Explicit indices may overlap or run backwards (x[3:1] is empty): Python slice semantics.
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    n = int(x.shape[axis])
    bounds = [0] + [int(i) for i in spec] + [n]
    pieces = []
    for lo, hi, out in zip(bounds, bounds[1:], call.output):
        start, stop, _ = slice(lo, hi).indices(n)
        size = int(out.shape[axis])
        pieces.append(_piece(ctx, x, axis, start if size else 0, size))
    return pieces


@converter("torch.hsplit", "torch.Tensor.hsplit", "torch.vsplit", "torch.Tensor.vsplit", "torch.dsplit",
           "torch.Tensor.dsplit", signature="input, indices_or_sections")
def hvdsplit(ctx, call):
    source, spec = call.arg("input"), call.arg("indices_or_sections")
    dim = {"hsplit": 1 if source.dim() > 1 else 0, "vsplit": 0, "dsplit": 2}[call.name.rsplit(".", 1)[-1]]
    if isinstance(spec, int):
        x = ctx.trt(source)
        return [_piece(ctx, x, dim, k * (x.shape[dim] // spec), x.shape[dim] // spec) for k in range(spec)]
    x = ctx.trt(source)
    n = int(x.shape[dim])
    bounds = [0] + [int(i) for i in spec] + [n]
    return [_piece(ctx, x, dim, slice(lo, hi).indices(n)[0] if int(o.shape[dim]) else 0, int(o.shape[dim]))
            for lo, hi, o in zip(bounds, bounds[1:], call.output)]


@converter("torch.unbind", "torch.Tensor.unbind", "torch.unbind_copy", signature="input, dim=0")
def unbind(ctx, call):
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    if x.shape[axis] < 0 and ctx.exact_sizes:  # Python would loop over the example's count
        raise ConversionError("unbind (or iteration) along a dim whose size is only known at run time gives the "
                              "example's number of pieces")
    # A gather with a scalar index drops the axis in one layer (the index constants are shared).
    return [ctx.network.add_gather(x, ctx.scalar(k, trt.DataType.INT64), axis).get_output(0)
            for k in range(len(call.output))]


@converter("torch.narrow", "torch.Tensor.narrow", "torch.narrow_copy", "torch.Tensor.narrow_copy",
           signature="input, dim, start, length")
def narrow(ctx, call):
    x = ctx.trt(call.arg("input"))
    axis = ctx.axis(call.arg("dim"), len(x.shape))
    if ctx.is_traced(call.arg("start")):
        raise ConversionError("narrow at a start computed in the network; write int(start) to freeze it")
    start, length = call.arg("start"), call.arg("length")  # ints, or traced sizes
    return _piece(ctx, x, axis, ctx.dims(x)[axis] + start if start < 0 else start, length)


# ----------------------------------------------------------------------------- joins

def _concat(ctx, tensors: list, axis: int):
    if len(tensors) == 1:
        return tensors[0]
    layer = ctx.network.add_concatenation(tensors)
    layer.axis = axis
    return layer.get_output(0)


@converter("torch.concatenate", signature="tensors, axis=0, *, out=None")
@converter("torch.cat", "torch.concat", signature="tensors, dim=0, *, out=None")
def cat(ctx, call):
    out = call.output
    dtype = ctx.dtype_for(out.dtype)
    # torch.cat skips legacy empty 1-D tensors whatever the others' rank (one empty only in this example, a
    # dynamic dim at 0, is kept: at other sizes it is not empty)
    values = [t for t in call.arg("tensors") if not (t.dim() == 1 and t.numel() == 0 and not is_traced(ctx.dims(t)[0]))]
    if not values:
        raise ConversionError("cat of empty tensors only")
    dim = call.arg("dim", None)
    axis = ctx.axis(call.arg("axis") if dim is None else dim, out.dim())
    kept = layout.operands_like(ctx, values, dtype) if axis != out.dim() - 1 else None
    if kept is not None:  # along a dim other than the channels: in channel layout
        stored, ch = kept
        return layout.note(ctx, ch.with_tensor(_concat(ctx, stored, ch.order.index(axis))), out.shape)
    return _concat(ctx, [ctx.trt(t, dtype) for t in values], axis)


@converter("torch.stack", signature="tensors, dim=0, *, out=None")
def stack(ctx, call):
    out = call.output
    dtype = ctx.dtype_for(out.dtype)
    tensors = [ctx.trt(t, dtype) for t in call.arg("tensors")]
    axis = ctx.axis(call.arg("dim"), out.dim())
    rank = out.dim() - 1
    if axis < rank:
        # Concatenating along the existing axis then splitting it gives the stacked order: 2 layers for any n.
        return ctx.reshape(_concat(ctx, tensors, axis), sizes(out))
    return _concat(ctx, [ctx.reshape(t, tuple(t.shape) + (1,)) for t in tensors], axis)


@converter("torch.hstack", "torch.vstack", "torch.row_stack", "torch.dstack", "torch.column_stack",
           signature="tensors, *, out=None")
def hvdstack(ctx, call):
    out = call.output
    dtype = ctx.dtype_for(out.dtype)
    kind = call.name.rsplit(".", 1)[-1]
    axis = {"hstack": 1 if out.dim() > 1 else 0, "vstack": 0, "row_stack": 0, "dstack": 2, "column_stack": 1}[kind]
    at_least = {"hstack": torch.atleast_1d, "dstack": torch.atleast_3d}.get(kind, torch.atleast_2d)
    tensors = []
    for t in call.arg("tensors"):
        if kind == "column_stack" and t.dim() <= 1:
            shape = (t.numel(), 1)
        else:
            shape = tuple(at_least(torch.empty(t.shape, device="meta")).shape)
        tensors.append(ctx.reshape(ctx.trt(t, dtype), shape))
    return _concat(ctx, tensors, axis)


# ----------------------------------------------------------------------------- flips and rolls

@converter("torch.flip", "torch.Tensor.flip", signature="input, *args, **kwargs")
def flip(ctx, call):
    x = ctx.trt(call.arg("input"))
    return _reversed(ctx, x, {ctx.axis(d, len(x.shape)) for d in _dims_arg(call, "dims")})


@converter("torch.fliplr", "torch.Tensor.fliplr", "torch.flipud", "torch.Tensor.flipud", signature="input")
def fliplr(ctx, call):
    return _reversed(ctx, ctx.trt(call.arg("input")), {1 if call.name.endswith("lr") else 0})


def _reversed(ctx, x, axes: set):
    """``x`` read backwards along ``axes``: one slice from the last element with stride -1 (traced sizes
    follow dynamic dims)."""
    shape = ctx.dims(x)
    start = [shape[a] - 1 if a in axes else 0 for a in range(len(shape))]
    stride = [-1 if a in axes else 1 for a in range(len(shape))]
    return ctx.slice(x, start, shape, stride)


@converter("torch.roll", "torch.Tensor.roll", signature="input, shifts, dims=None")
def roll(ctx, call):
    # out[i] = in[(i - shift) mod n]. Along an axis of static size that is in[n - shift:] then in[:n - shift]:
    # two slices and a concatenation, which TensorRT fuses into the kernel computing the input, where a
    # WRAP slice is a kernel of its own (swin_t's shifted windows: 5 kernels and 5 MB moved more).
    # Axes of dynamic size: one WRAP slice starting at -shift, for all of them at once.
    source = call.arg("input")
    shifts, dims = call.arg("shifts"), call.arg("dims")
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    x = ctx.trt(source)
    shape = ctx.dims(x)
    if dims is None or dims == []:
        x, dims = ctx.reshape(x, (-1,)), [0]
    dims = [dims] if isinstance(dims, int) else list(dims)
    rank = len(x.shape)
    start = [0] * rank
    for s, d in zip(shifts, dims):
        a = ctx.axis(d, rank)
        n = int(x.shape[a])
        if n < 0:
            start[a] -= int(s)  # WRAP reads any start modulo the size
            continue
        k = -int(s) % max(n, 1)
        if k:
            x = _concat(ctx, [_piece(ctx, x, a, k, n - k), _piece(ctx, x, a, 0, k)], a)
    y = ctx.slice(x, start, ctx.dims(x), mode=trt.SampleMode.WRAP) if any(start) else x
    return ctx.reshape(y, shape)


# ----------------------------------------------------------------------------- pixel and channel shuffles

@converter("torch.nn.functional.pixel_shuffle", "torch.pixel_shuffle", signature="input, upscale_factor")
def pixel_shuffle(ctx, call):
    source, r = call.arg("input"), int(call.arg("upscale_factor"))
    *lead, c, h, w = sizes(source)
    y = ctx.shuffle(ctx.trt(source), (math.prod(lead), c // (r * r), r, r, h, w), second=(0, 1, 4, 2, 5, 3))
    return ctx.reshape(y, sizes(call.output))


@converter("torch.nn.functional.pixel_unshuffle", "torch.pixel_unshuffle", signature="input, downscale_factor")
def pixel_unshuffle(ctx, call):
    source, r = call.arg("input"), int(call.arg("downscale_factor"))
    *lead, c, h, w = sizes(source)
    y = ctx.shuffle(ctx.trt(source), (math.prod(lead), c, h // r, r, w // r, r), second=(0, 1, 3, 5, 2, 4))
    return ctx.reshape(y, sizes(call.output))


@converter("torch.nn.functional.channel_shuffle", "torch.channel_shuffle", "torch.native_channel_shuffle",
           signature="input, groups")
def channel_shuffle(ctx, call):
    source, g = call.arg("input"), int(call.arg("groups"))
    n, c, *rest = sizes(source)
    inner = 1
    for d in rest:
        inner *= d
    y = ctx.shuffle(ctx.trt(source), (n, g, c // g, inner), second=(0, 2, 1, 3))
    return ctx.reshape(y, sizes(call.output))


@converter("torch.Tensor.unfold", "torch.unfold_copy", signature="input, dimension, size, step")
def unfold(ctx, call):
    source = call.arg("input")
    x = ctx.trt(source)
    shape = sizes(source)
    rank = len(shape)
    axis = ctx.axis(call.arg("dimension"), rank) if rank else 0
    size, step = int(call.arg("size")), int(call.arg("step"))
    if rank == 0:
        return ctx.reshape(x, sizes(call.output))
    n = (shape[axis] - size) // step + 1
    pre, post = shape[:axis], shape[axis + 1:]
    order = list(range(len(pre) + 1)) + [len(pre) + 2 + k for k in range(len(post))] + [len(pre) + 1]
    if step == size:
        # Non-overlapping windows are a reshape and a transpose: one shuffle.
        x = ctx.slice(x, [0] * rank, pre + (n * size,) + post)
        return ctx.shuffle(x, pre + (n, size) + post, second=order)
    windows = torch.arange(n).reshape(n, 1) * step + torch.arange(size)
    y = ctx.network.add_gather(x, ctx.constant(windows, trt.DataType.INT64), axis).get_output(0)
    return ctx.permute(y, order)
