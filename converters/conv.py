"""Convolutions and transposed convolutions (1-d to 3-d) as TensorRT (de)convolution layers."""
from __future__ import annotations

import math

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter

_CONV = "input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1"
_CONV_T = "input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1"


def ntuple(value, n: int) -> tuple:
    """A torch int-or-sequence argument as ``n`` ints (one value repeats)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (int(value[0]),) * n
        if len(value) != n:
            raise ConversionError(f"expected {n} values, got {list(value)}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _padding(call, n: int, kernel: tuple, dilation: tuple) -> tuple:
    padding = call.arg("padding")
    if padding == "valid":
        return (0,) * n, (0,) * n
    if padding == "same":
        # torch puts the odd element of the total padding at the end.
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    pad = ntuple(padding, n)
    return pad, pad


def _bias(ctx, call, dtype, maps: int, rank: int):
    return ctx.reshape(ctx.trt(call.arg("bias"), dtype), (1, maps) + (1,) * (rank - 2))


def _dilate_kernel(ctx, kernel, dilation: tuple):
    """``kernel`` ([K, C, *k]) with ``dilation - 1`` zeros between taps on each spatial axis."""
    for i, d in enumerate(dilation):
        if d == 1:
            continue
        shape = tuple(kernel.shape)
        outer, k, inner = math.prod(shape[:2 + i]), shape[2 + i], math.prod(shape[3 + i:])
        x = ctx.reshape(kernel, (outer, k, 1, inner))
        spread = ctx.network.add_slice(x, (0, 0, 0, 0), (outer, k, d, inner), (1, 1, 1, 1))
        spread.mode = trt.SampleMode.FILL  # reads past the end are 0
        x = ctx.reshape(spread.get_output(0), (outer, k * d, inner))
        x = ctx.network.add_slice(x, (0, 0, 0), (outer, d * (k - 1) + 1, inner), (1, 1, 1)).get_output(0)
        kernel = ctx.reshape(x, shape[:2 + i] + (d * (k - 1) + 1,) + shape[3 + i:])
    return kernel


def _convolution(n: int, transposed: bool):
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"))
        if transposed and x.dtype == trt.DataType.BF16:
            # TensorRT-RTX 1.7 builds no bfloat16 deconvolution (Myelin cannot infer its output type).
            x = ctx.cast(x, trt.DataType.FLOAT)
        weight = call.arg("weight")
        kernel = tuple(weight.shape[2:])
        groups = int(call.arg("groups"))
        stride = ntuple(call.arg("stride"), n)
        dilation = ntuple(call.arg("dilation"), n)
        pre, post = _padding(call, n, kernel, dilation)
        output_padding = ntuple(call.arg("output_padding"), n) if transposed else (0,) * n
        # TensorRT's deconvolution has no output padding: it crops less at the end, and where the
        # output padding exceeds the padding the extra rows are zeros (plus bias) appended after.
        post = tuple(p - o for p, o in zip(post, output_padding))
        extend = tuple(max(-p, 0) for p in post)
        post = tuple(max(p, 0) for p in post)
        if _host_weights(ctx, call, x, n, transposed, extend):
            xs = ctx.quantize_input(call, "input", ctx.spatial_layout(x, n))
            return _convolution_with_weights(ctx, call, xs, kernel, stride, dilation, pre, post, groups)
        # Otherwise the kernel is the layer's second input: it also serves kernels computed in the
        # forward pass (weight standardization, tied weights) and types numpy cannot hold (bfloat16).
        # Transposed kernels hold the output channels on axis 1 (their int8 scales go there).
        kernel_t = ctx.quantized_weights(weight, x.dtype, 1 if transposed else 0)
        if n == 1:  # TensorRT convolves 2-d or 3-d windows only
            kernel_t = ctx.reshape(kernel_t, tuple(weight.shape) + (1,))
            kernel, stride, dilation = kernel + (1,), stride + (1,), dilation + (1,)
            pre, post, extend = pre + (0,), post + (0,), extend + (0,)
        if transposed and any(s > 1 for s in stride) and any(d > 1 for d in dilation):
            # TensorRT-RTX builds no deconvolution that is both strided and dilated: dilate the kernel.
            kernel_t = _dilate_kernel(ctx, kernel_t, dilation)
            kernel = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
            dilation = (1,) * len(dilation)
        xs = ctx.quantize_input(call, "input", ctx.spatial_layout(x, n))
        if transposed:
            maps = weight.shape[1] * groups
            layer = ctx.network.add_deconvolution_nd(xs, maps, kernel, trt.Weights(), trt.Weights())
        else:
            maps = weight.shape[0]
            layer = ctx.network.add_convolution_nd(xs, maps, kernel, trt.Weights(), trt.Weights())
        layer.set_input(1, kernel_t)
        layer.stride_nd = stride
        layer.dilation_nd = dilation
        layer.pre_padding = pre
        layer.post_padding = post
        layer.num_groups = groups
        late_bias = call.has("bias") and any(extend)
        if call.has("bias") and not late_bias:
            layer.set_input(2, ctx.trt(call.arg("bias"), x.dtype))
        y = layer.get_output(0)
        if any(extend):
            shape = tuple(y.shape)
            grown = shape[:2] + tuple(s + e for s, e in zip(shape[2:], extend))
            pad = ctx.network.add_slice(y, (0,) * len(shape), grown, (1,) * len(shape))
            pad.mode = trt.SampleMode.FILL  # reads past the end are 0
            y = pad.get_output(0)
            if late_bias:
                y = ctx.elementwise(y, _bias(ctx, call, x.dtype, maps, len(shape)), trt.ElementWiseOperation.SUM)
        return ctx.reshape(y, call.output.shape)

    return convert


def _host_weights(ctx, call, x, n: int, transposed: bool, extend: tuple) -> bool:
    """Whether the kernel and bias can live in the layer itself: parameters (not computed in the
    forward pass) of a 2-d/3-d convolution in a type numpy holds. Such a layer is one layer instead
    of three and a following batch norm folds into it."""
    return (not transposed and n > 1 and not any(extend) and x.dtype in (trt.DataType.FLOAT, trt.DataType.HALF)
            and not ctx.is_traced(call.arg("weight")) and not ctx.is_traced(call.arg("bias")))


def _convolution_with_weights(ctx, call, xs, kernel, stride, dilation, pre, post, groups):
    weight, bias = call.arg("weight").detach(), call.arg("bias")
    bias = bias.detach() if bias is not None else weight.new_zeros(weight.shape[0])
    # int8: the kernel is a Q/DQ'd input whose values and scales are written when the network is
    # finished (Quantizer.finalize), after a following batch norm has folded into the kernel.
    quantized = ctx.quantizer is not None
    layer = ctx.network.add_convolution_nd(xs, weight.shape[0], kernel,
                                           trt.Weights() if quantized else ctx.weights(weight, xs.dtype),
                                           ctx.weights(bias, xs.dtype))
    layer.stride_nd, layer.dilation_nd, layer.num_groups = stride, dilation, groups
    layer.pre_padding, layer.post_padding = pre, post
    y = layer.get_output(0)
    foldable = ctx.foldable[y.name] = FoldableConvolution(layer, weight, bias, kernel_input=quantized)
    if quantized:
        ctx.quantizer.defer_kernel(ctx, foldable)
    return ctx.reshape(y, call.output.shape)


class FoldableConvolution:
    """A convolution whose weights a following per-channel affine op (batch norm) may fold in."""

    def __init__(self, layer, weight, bias, kernel_input: bool = False):
        self.layer, self.weight, self.bias = layer, weight, bias
        self.kernel_input = kernel_input  # the kernel is set later as input 1 from self.weight

    def fold(self, ctx, scale, shift) -> None:
        """Make the layer compute ``conv(x) * scale + shift`` per output channel."""
        dtype = self.layer.get_output(0).dtype
        # in float64, so the folded weights are as exact as the network's type allows
        self.weight = self.weight.double() * scale.reshape((-1,) + (1,) * (self.weight.dim() - 1))
        self.bias = self.bias.double() * scale + shift
        if not self.kernel_input:
            self.layer.kernel = ctx.weights(self.weight, dtype)
        self.layer.bias = ctx.weights(self.bias, dtype)


for _n in (1, 2, 3):
    converter(f"torch.conv{_n}d", f"torch.nn.functional.conv{_n}d", signature=_CONV)(_convolution(_n, False))
    converter(f"torch.conv_transpose{_n}d", f"torch.nn.functional.conv_transpose{_n}d",
              signature=_CONV_T)(_convolution(_n, True))
