"""Max, average, adaptive and power-average pooling (1-d to 3-d) as TensorRT pooling and reduce layers."""
from __future__ import annotations

import math

from .conv import ntuple
from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import is_traced

PT = trt.PoolingType
PM = trt.PaddingMode
Op = trt.ElementWiseOperation


def _pooling(ctx, x, kind, n: int, kernel: tuple, stride: tuple, padding: tuple, out_sizes: tuple,
             count_include_pad: bool = True):
    """A pooling layer over the last ``n`` dims of ``x`` whose output has torch's ``out_sizes``.

    torch's ceil_mode drops a last window that would start in the right padding; TensorRT's
    EXPLICIT_ROUND_UP does not, so the mode is chosen from the output size torch computed (it is
    always the round-down or the round-up count). Returns the output in ``x``'s layout.
    """
    in_sizes = tuple(int(d) for d in ctx.dims(x)[-n:])  # the example's sizes (also of dynamic dims)
    floor = tuple((size + 2 * p - k) // s + 1 for size, k, s, p in zip(in_sizes, kernel, stride, padding))
    round_up = tuple(out_sizes) != floor
    if n == 1:  # TensorRT pools 2-d or 3-d windows only
        kernel, stride, padding = kernel + (1,), stride + (1,), padding + (0,)
    layer = ctx.network.add_pooling_nd(ctx.spatial_layout(x, n), kind, kernel)
    layer.stride_nd = stride
    layer.padding_nd = padding
    if round_up:
        layer.padding_mode = PM.EXPLICIT_ROUND_UP
    if kind == PT.AVERAGE:
        layer.average_count_excludes_padding = not count_include_pad
    shape = tuple(x.shape[:-n]) + tuple(out_sizes)
    return ctx.reshape(layer.get_output(0), shape)


def _window_args(call, n: int) -> tuple:
    kernel = ntuple(call.arg("kernel_size"), n)
    stride = call.arg("stride")
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else ntuple(stride, n)
    return kernel, stride, ntuple(call.arg("padding", 0), n)


def _max_pool(n: int):
    def convert(ctx, call):
        if call.arg("return_indices", False):
            raise ConversionError("return_indices=True: TensorRT pooling gives no indices")
        if any(d != 1 for d in ntuple(call.arg("dilation"), n)):
            raise ConversionError("dilation != 1: TensorRT pooling has no dilation")
        kernel, stride, padding = _window_args(call, n)
        x = ctx.trt(call.arg("input"))
        return _pooling(ctx, x, PT.MAX, n, kernel, stride, padding, tuple(call.output.shape[-n:]))

    return convert


def _avg_pool(n: int):
    def convert(ctx, call):
        kernel, stride, padding = _window_args(call, n)
        x = ctx.trt(call.arg("input"))
        out_sizes = tuple(call.output.shape[-n:])
        include = bool(call.arg("count_include_pad"))
        y = _pooling(ctx, x, PT.AVERAGE, n, kernel, stride, padding, out_sizes, include)
        divisor = call.arg("divisor_override", None)
        if divisor is None:
            return y
        # sum / divisor = average * (window count / divisor), exact only where every window counts
        # the full kernel volume: no padding left out of the count, no ceil-mode window past the end.
        in_sizes = tuple(int(d) for d in ctx.dims(x)[-n:])  # the example's sizes (also of dynamic dims)
        full = all((o - 1) * s + k <= size + 2 * p
                   for o, s, k, size, p in zip(out_sizes, stride, kernel, in_sizes, padding))
        if not full or (not include and any(padding)):
            raise ConversionError("divisor_override with windows of varying counts (padding excluded or ceil_mode)")
        return ctx.elementwise(y, math.prod(kernel) / float(divisor), Op.PROD)

    return convert


def _indices_error(ctx, call):
    raise ConversionError("pooling indices: TensorRT pooling gives no indices")


_MAX = "input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False"
_AVG = "input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None"
for _n in (1, 2, 3):
    converter(f"torch.nn.functional.max_pool{_n}d", f"torch.max_pool{_n}d", signature=_MAX)(_max_pool(_n))
    converter(f"torch.nn.functional.avg_pool{_n}d", f"torch.avg_pool{_n}d", signature=_AVG)(_avg_pool(_n))
    converter(f"torch.nn.functional.max_pool{_n}d_with_indices", f"torch.max_pool{_n}d_with_indices",
              f"torch.adaptive_max_pool{_n}d", signature="input, *args, **kwargs")(_indices_error)


# --------------------------------------------------------------------------- adaptive pooling


def _bins(size: int, out: int) -> list:
    """torch's adaptive pooling cells along one axis: [floor(i*L/o), ceil((i+1)*L/o))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


_POINTWISE = (trt.LayerType.ACTIVATION, trt.LayerType.ELEMENTWISE, trt.LayerType.UNARY, trt.LayerType.SCALE,
              trt.LayerType.CAST)


def _from_convolution(ctx, x) -> bool:
    """Whether ``x`` is a convolution's output, or computed from one by pointwise layers only.

    Global pooling of such a value is a pooling layer, of any other a reduce layer. TensorRT fuses the
    pointwise layers after a convolution into the convolution's kernel, and a pooling layer after them
    reads that kernel's output (squeeze-and-excitation blocks: as a reduce layer, the pointwise layers
    would move into the reduction's kernel and the convolution write its raw output for them). Anything
    else (a concatenation, a normalization) fuses with a reduce layer into one generated kernel, where a
    pooling layer is a kernel of its own.
    """
    pending, seen = [x], set()
    while pending:
        t = pending.pop()
        layer = ctx.producer(t)
        if layer is None or t.name in seen:
            continue
        seen.add(t.name)
        if layer.type == trt.LayerType.CONVOLUTION:
            return True
        if layer.type in _POINTWISE:
            pending += [layer.get_input(k) for k in range(layer.num_inputs) if layer.get_input(k) is not None]
    return False


def _adaptive(ctx, x, kind, n: int, out_sizes: tuple):
    """Adaptive pooling of the last ``n`` dims of ``x`` to ``out_sizes``.

    Axes whose size divides evenly share one pooling layer (window = stride = size / out).
    On the other axes the cells have different sizes and starts: each cell is a slice reduced
    over that axis, and the cells are concatenated (pooling is separable, so one axis at a time
    is exact for both max and average).
    """
    rank = len(x.shape)
    reduce_op = trt.ReduceOperation.MAX if kind == PT.MAX else trt.ReduceOperation.AVG
    if all(out == 1 for out in out_sizes) and not _from_convolution(ctx, x):
        # global pooling (see _from_convolution): one reduction over the pooled axes
        return ctx.network.add_reduce(x, reduce_op, ((1 << n) - 1) << (rank - n), True).get_output(0)
    # a dynamic axis pooled to size 1 is a reduction over the whole axis, whose output stays 1 at every input
    # size (a pooling window of the example's size would make the output dim dynamic too)
    dims = ctx.dims(x)[-n:]
    whole = [i for i, (d, out) in enumerate(zip(dims, out_sizes, strict=True)) if out == 1 and is_traced(d)]
    if whole and len(whole) == sum(is_traced(d) for d in dims):  # (other dynamic axes keep the path below)
        x = ctx.network.add_reduce(x, reduce_op, sum(1 << (rank - n + i) for i in whole), True).get_output(0)
    in_sizes = tuple(1 if i in whole else int(d) for i, d in enumerate(dims))  # the example's (also dynamic dims)
    even = tuple(size // out if size % out == 0 else 1 for size, out in zip(in_sizes, out_sizes))
    if any(k > 1 for k in even):
        after = tuple(size // k for size, k in zip(in_sizes, even))
        x = _pooling(ctx, x, kind, n, even, even, (0,) * n, after)
    for i, (size, out) in enumerate(zip(in_sizes, out_sizes)):
        if size % out == 0:
            continue
        axis = rank - n + i
        cells = []
        for start, end in _bins(size, out):
            begin = [0] * rank
            begin[axis] = start
            shape = list(x.shape)
            shape[axis] = end - start
            part = ctx.network.add_slice(x, begin, shape, [1] * rank).get_output(0)
            cells.append(ctx.network.add_reduce(part, reduce_op, 1 << axis, True).get_output(0))
        concat = ctx.network.add_concatenation(cells)
        concat.axis = axis
        x = concat.get_output(0)
    return x


def _adaptive_pool(n: int, kind):
    def convert(ctx, call):
        if call.arg("return_indices", False):
            raise ConversionError("return_indices=True: TensorRT pooling gives no indices")
        x = ctx.trt(call.arg("input"))
        return _adaptive(ctx, x, kind, n, tuple(call.output.shape[-n:]))

    return convert


for _n in (1, 2, 3):
    converter(f"torch.nn.functional.adaptive_avg_pool{_n}d", f"torch.adaptive_avg_pool{_n}d",
              signature="input, output_size")(_adaptive_pool(_n, PT.AVERAGE))
    converter(f"torch.nn.functional.adaptive_max_pool{_n}d",
              signature="input, output_size, return_indices=False")(_adaptive_pool(_n, PT.MAX))


# --------------------------------------------------------------------------- power-average pooling


def _lp_pool(n: int):
    def convert(ctx, call):
        # torch: (avg_pool(x ** p) * kernel volume) ** (1 / p), with the ceil-mode average's own counts.
        p = float(call.arg("norm_type"))
        kernel = ntuple(call.arg("kernel_size"), n)
        stride = kernel if call.arg("stride") is None else ntuple(call.arg("stride"), n)
        x = ctx.trt(call.arg("input"))
        powered = ctx.elementwise(x, p, Op.POW)
        y = _pooling(ctx, powered, PT.AVERAGE, n, kernel, stride, (0,) * n, tuple(call.output.shape[-n:]))
        y = ctx.elementwise(y, float(math.prod(kernel)), Op.PROD)
        return ctx.elementwise(y, 1.0 / p, Op.POW)

    return convert


for _n in (1, 2, 3):
    converter(f"torch.nn.functional.lp_pool{_n}d", fp32=True,
              signature="input, norm_type, kernel_size, stride=None, ceil_mode=False")(_lp_pool(_n))
