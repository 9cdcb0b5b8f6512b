"""Batch, layer, group, instance, RMS and local response normalization, and F.normalize."""
from __future__ import annotations

import math

import numpy as np
import torch

from torch2x import layout
from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.layout import Channels
from torch2x.registry import converter

Op = trt.ElementWiseOperation
Red = trt.ReduceOperation


def _per_channel(ctx, value, dtype, channels: int, rank: int, fill: float):
    """``value`` ([C] weight/bias, or None -> ``fill``) as a [1, C, 1, ...] network tensor in ``dtype``."""
    shape = (1, channels) + (1,) * (rank - 2)
    if value is None:
        return ctx.constant(np.full(shape, fill, np.float32), dtype)
    return ctx.cast(ctx.trt_shaped(value, shape), dtype)


def _affine(ctx, y, weight, bias, rank: int):
    """``y * weight + bias`` with per-channel (axis 1) parameters, either of them optional."""
    channels = y.shape[1]
    if weight is not None:
        y = ctx.elementwise(y, _per_channel(ctx, weight, y.dtype, channels, rank, 1.0), Op.PROD)
    if bias is not None:
        y = ctx.elementwise(y, _per_channel(ctx, bias, y.dtype, channels, rank, 0.0), Op.SUM)
    return y


def _normalization(ctx, x, axes: int, scale, bias, eps: float, groups: int = 1):
    shape = tuple(x.shape)
    count = math.prod(n for a, n in enumerate(shape) if axes >> a & 1) * (shape[1] // groups if groups > 1 else 1)
    if count == 1:
        # A single element is its own mean: the result is 0 * scale + bias (TensorRT fails to
        # build a normalization over one element).
        zero = ctx.elementwise(x, x, Op.SUB)
        return ctx.elementwise(ctx.elementwise(zero, scale, Op.PROD), bias, Op.SUM)
    layer = ctx.network.add_normalization(x, scale, bias, axes)
    layer.epsilon = float(eps)
    if groups != 1:
        layer.num_groups = groups
    return layer.get_output(0)


def _fold_into_producer(ctx, tensor, x, scale, shift):
    """Fold the affine batch norm into the convolution producing ``x`` when nothing else has read the
    convolution's output (TensorRT would fuse them anyway; folding here saves layers and a rounding
    in reduced precision). The convolution's own output is retired: a later read is reported."""
    producer = ctx.foldable.pop(x.name, None)
    if producer is None or ctx.uses.get(id(tensor)) != 1:
        return None
    producer.fold(ctx, scale, shift)
    ctx.retire(tensor, "reads a convolution output after its batch norm was folded into it")
    return x


def _running_stats(ctx, x, mean, var, weight, bias, eps: float, call_input=None):
    """Normalization by stored statistics, folded into one multiply-add per channel."""
    if any(ctx.is_traced(t) for t in (mean, var, weight, bias)):
        raise ConversionError("running statistics or affine parameters computed in the forward pass")
    rank = len(x.shape)
    # Folded in float64 so the constants are as exact as the network's type allows.
    scale = torch.rsqrt(var.detach().double() + eps)
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -mean.detach().double() * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    folded = _fold_into_producer(ctx, call_input, x, scale, shift)
    if folded is not None:
        return folded
    shape = (1, -1) + (1,) * (rank - 2)
    y = ctx.elementwise(x, ctx.constant(scale.reshape(shape), x.dtype), Op.PROD)
    return ctx.elementwise(y, ctx.constant(shift.reshape(shape), x.dtype), Op.SUM)


def _batch_statistics(ctx, x, axes: int, weight, bias, eps: float):
    """Normalization by the input's own statistics over ``axes``, with per-channel scale and bias.

    The statistics are computed in float32 whatever the network's precision (batch norm is not an
    fp32 converter: with stored statistics it is one multiply-add that half precision does well).
    """
    x32 = ctx.cast(x, trt.DataType.FLOAT)
    rank = len(x.shape)
    channels = x.shape[1]
    scale = _per_channel(ctx, weight, trt.DataType.FLOAT, channels, rank, 1.0)
    shift = _per_channel(ctx, bias, trt.DataType.FLOAT, channels, rank, 0.0)
    return _normalization(ctx, x32, axes, scale, shift, eps)


@converter("torch.batch_norm",
           signature="input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled")
@converter("torch.nn.functional.batch_norm")
def batch_norm(ctx, call):
    x = ctx.trt(call.arg("input"))
    mean, var = call.arg("running_mean"), call.arg("running_var")
    weight, bias, eps = call.arg("weight"), call.arg("bias"), float(call.arg("eps"))
    if call.arg("training") or mean is None:
        # Batch statistics (train mode, or track_running_stats=False): over every axis but the channels.
        rank = len(x.shape)
        return _batch_statistics(ctx, x, ctx.axes_mask([0] + list(range(2, rank)), rank), weight, bias, eps)
    return _running_stats(ctx, x, mean, var, weight, bias, eps, call.arg("input"))


@converter("torch.native_batch_norm",
           signature="input, weight, bias, running_mean, running_var, training, momentum, eps")
def native_batch_norm(ctx, call):
    """The aten op behind batch norm: (output, saved mean, saved 1/std). With batch statistics the saved
    ones are the batch's mean and 1/sqrt(biased var + eps) per channel; with running statistics PyTorch
    saves nothing (empty tensors), which an empty slice reproduces."""
    out = batch_norm(ctx, call)
    x = ctx.trt(call.arg("input"), trt.DataType.FLOAT)
    if call.output[1].numel() == 0:
        empty = ctx.slice(ctx.reshape(x, (-1,)), (0,), (0,))
        return out, empty, empty
    rank = len(x.shape)
    axes = ctx.axes_mask([0] + list(range(2, rank)), rank)
    mean = ctx.network.add_reduce(x, Red.AVG, axes, True).get_output(0)
    centered = ctx.elementwise(x, mean, Op.SUB)
    var = ctx.network.add_reduce(ctx.elementwise(centered, centered, Op.PROD), Red.AVG, axes, False).get_output(0)
    invstd = ctx.unary(ctx.unary(ctx.elementwise(var, float(call.arg("eps")), Op.SUM), trt.UnaryOperation.SQRT),
                       trt.UnaryOperation.RECIP)
    return out, ctx.reshape(mean, (x.shape[1],)), invstd


@converter("torch.instance_norm", fp32=True,
           signature="input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled")
@converter("torch.nn.functional.instance_norm", fp32=True)
def instance_norm(ctx, call):
    x = ctx.trt(call.arg("input"))
    weight, bias, eps = call.arg("weight"), call.arg("bias"), float(call.arg("eps"))
    if not call.arg("use_input_stats"):
        return _running_stats(ctx, x, call.arg("running_mean"), call.arg("running_var"), weight, bias, eps)
    rank = len(x.shape)
    return _batch_statistics(ctx, x, ctx.axes_mask(range(2, rank), rank), weight, bias, eps)


@converter("torch.layer_norm", fp32=True, signature="input, normalized_shape, weight=None, bias=None, eps=1e-05, "
           "cudnn_enable=True")
@converter("torch.nn.functional.layer_norm", fp32=True)
def layer_norm(ctx, call):
    kept = _layer_norm_in_channels(ctx, call)
    if kept is not None:
        return kept
    x = ctx.trt(call.arg("input"))
    rank = len(x.shape)
    normalized = tuple(x.shape[rank - len(tuple(call.arg("normalized_shape"))):])
    shape = (1,) * (rank - len(normalized)) + normalized  # TensorRT wants scale/bias at the input's rank

    def param(value, fill):
        if value is None:
            return ctx.constant(np.full(shape, fill, np.float32), x.dtype)
        return ctx.cast(ctx.trt_shaped(value, shape), x.dtype)  # a weight: a constant already in shape

    axes = ctx.axes_mask(range(rank - len(normalized), rank), rank)
    return _normalization(ctx, x, axes, param(call.arg("weight"), 1.0), param(call.arg("bias"), 0.0),
                          call.arg("eps"))


def _layer_norm_in_channels(ctx, call):
    """A layer norm over the last dim in channel layout (see torch2x.layout; a plain input enters it): one
    normalization layer over axis 1, its weight and bias left pending for the next linear layer to fold in."""
    x, weight, bias = call.arg("input"), call.arg("weight"), call.arg("bias")
    if (len(tuple(call.arg("normalized_shape"))) != 1 or x.shape[-1] == 1
            or ctx.is_traced(weight) or ctx.is_traced(bias)):
        return None
    ch = ctx.channels(x, enter=layout.may_enter(ctx, x))
    if ch is None:
        return None
    ch = layout.apply_affine(ctx, ch)
    ones, zeros = layout.unit_affine(ctx, x.shape[-1], len(ch.itensor.shape), ch.itensor.dtype)
    y = _normalization(ctx, ch.itensor, 1 << 1, ones, zeros, call.arg("eps"))
    pending = [None if t is None else t.detach().double().cpu() for t in (weight, bias)]
    return layout.note(ctx, Channels(y, ch.order, *pending), None, like=ch)


@converter("torch.group_norm", fp32=True,
           signature="input, num_groups, weight=None, bias=None, eps=1e-05, cudnn_enabled=True")
@converter("torch.nn.functional.group_norm", fp32=True)
def group_norm(ctx, call):
    x = ctx.trt(call.arg("input"))
    groups = int(call.arg("num_groups"))
    if len(x.shape) == 2:
        x = ctx.reshape(x, tuple(x.shape) + (1,))
    rank = len(x.shape)
    # TensorRT's group normalization takes per-group scale/bias ([1, G, 1, ...]); torch's affine
    # parameters are per channel, so they are applied after it. One group is a normalization
    # over the channels too (TensorRT's num_groups=1 means no grouping of the axes given).
    ones = ctx.constant(np.ones((1, groups) + (1,) * (rank - 2), np.float32), x.dtype)
    zeros = ctx.constant(np.zeros((1, groups) + (1,) * (rank - 2), np.float32), x.dtype)
    first = 1 if groups == 1 else 2
    y = _normalization(ctx, x, ctx.axes_mask(range(first, rank), rank), ones, zeros, call.arg("eps"), groups)
    y = _affine(ctx, y, call.arg("weight"), call.arg("bias"), rank)
    return ctx.reshape(y, call.output.shape)


@converter("torch.rms_norm", "torch.nn.functional.rms_norm", fp32=True,
           signature="input, normalized_shape, weight=None, eps=None")
def rms_norm(ctx, call):
    x = ctx.trt(call.arg("input"))
    rank = len(x.shape)
    k = len(tuple(call.arg("normalized_shape")))
    eps = call.arg("eps")
    eps = torch.finfo(call.arg("input").dtype).eps if eps is None else float(eps)
    square = ctx.elementwise(x, x, Op.PROD)
    mean = ctx.network.add_reduce(square, Red.AVG, ctx.axes_mask(range(rank - k, rank), rank), True).get_output(0)
    root = ctx.unary(ctx.elementwise(mean, eps, Op.SUM), trt.UnaryOperation.SQRT)
    y = ctx.elementwise(x, root, Op.DIV)
    if call.has("weight"):
        y = ctx.elementwise(y, ctx.trt(call.arg("weight"), y.dtype), Op.PROD)
    return y


@converter("torch.nn.functional.normalize", fp32=True)
def normalize(ctx, call):
    x = ctx.trt(call.arg("input"))
    rank = len(x.shape)
    p = float(call.arg("p"))
    axes = ctx.axes_mask(call.arg("dim"), rank)
    magnitude = ctx.unary(x, trt.UnaryOperation.ABS)
    if math.isinf(p):
        norm = ctx.network.add_reduce(magnitude, Red.MAX if p > 0 else Red.MIN, axes, True).get_output(0)
    elif p == 0:
        raise ConversionError("p=0 (a count of non-zeros) is not a norm F.normalize can divide by here")
    else:
        powered = magnitude if p == 1 else ctx.elementwise(magnitude, p, Op.POW)
        norm = ctx.network.add_reduce(powered, Red.SUM, axes, True).get_output(0)
        if p == 2:
            norm = ctx.unary(norm, trt.UnaryOperation.SQRT)
        elif p != 1:
            norm = ctx.elementwise(norm, 1.0 / p, Op.POW)
    norm = ctx.elementwise(norm, float(call.arg("eps")), Op.MAX)
    return ctx.elementwise(x, norm, Op.DIV)


@converter("torch.nn.functional.local_response_norm", fp32=True)
def local_response_norm(ctx, call):
    x = ctx.trt(call.arg("input"))
    size, alpha = int(call.arg("size")), float(call.arg("alpha"))
    beta, k = float(call.arg("beta")), float(call.arg("k"))
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise ConversionError(f"local_response_norm needs at least 3 dims, got {shape}")
    # TensorRT sums over the third-from-last axis: channels of [N, C, rest, 1].
    x4 = ctx.reshape(x, shape[:2] + (math.prod(shape[2:]), 1))
    if size % 2 == 1 and size <= 15 and 0.01 <= beta <= 1e5 and 1e-5 <= k <= 1e10:
        # TensorRT divides alpha by the window like torch (and ONNX: NVIDIA's ONNX parser passes
        # ONNX's alpha through unchanged), although its operator page writes the sum without it.
        y = ctx.network.add_lrn(x4, size, alpha, beta, k).get_output(0)
    else:
        # torch's own composition: a zero-padded average of squares over a channel window that is
        # size // 2 before and (size - 1) // 2 after each channel (even sizes are asymmetric).
        n, c, s = x4.shape[0], x4.shape[1], x4.shape[2]
        square = ctx.reshape(ctx.elementwise(x4, x4, Op.PROD), (n, 1, c, s))
        pool = ctx.network.add_pooling_nd(square, trt.PoolingType.AVERAGE, (size, 1))
        pool.pre_padding = (size // 2, 0)
        pool.post_padding = ((size - 1) // 2, 0)
        pool.average_count_excludes_padding = False
        div = ctx.reshape(pool.get_output(0), (n, c, s, 1))
        div = ctx.elementwise(ctx.elementwise(div, alpha, Op.PROD), k, Op.SUM)
        y = ctx.elementwise(x4, ctx.elementwise(div, beta, Op.POW), Op.DIV)
    return ctx.reshape(y, shape)
