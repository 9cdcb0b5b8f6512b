"""Activations: one TensorRT activation (or a short composition) per torch op.

TensorRT's activation kinds take two parameters, ``alpha`` and ``beta``, whose meaning
depends on the kind; each converter states the mapping where it is not obvious.
The softmax family lives in ``reduce.py``.
"""
from __future__ import annotations

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter

from .elementwise import select

Act = trt.ActivationType
Op = trt.ElementWiseOperation
Un = trt.UnaryOperation

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _simple(kind, alpha=None, beta=None):
    def convert(ctx, call):
        return ctx.pointwise(call.arg("input"), lambda x: ctx.activation(x, kind, alpha, beta))

    return convert


for _names, _kind in (
    (("torch.relu", "torch.relu_", "torch.Tensor.relu", "torch.Tensor.relu_"), Act.RELU),
    (("torch.sigmoid", "torch.sigmoid_", "torch.Tensor.sigmoid", "torch.Tensor.sigmoid_", "torch.special.expit",
      "torch.nn.functional.sigmoid"), Act.SIGMOID),
    (("torch.tanh", "torch.tanh_", "torch.Tensor.tanh", "torch.Tensor.tanh_", "torch.nn.functional.tanh"), Act.TANH),
):
    converter(*_names, signature="input, *, out=None")(_simple(_kind))

converter("torch.nn.functional.relu", "torch.nn.functional.relu_", signature="input, inplace=False")(_simple(Act.RELU))
converter("torch.nn.functional.relu6", signature="input, inplace=False")(_simple(Act.CLIP, 0.0, 6.0))
converter("torch.nn.functional.softsign", signature="input")(_simple(Act.SOFTSIGN))
# TensorRT's SELU is beta * (x > 0 ? x : alpha * (exp(x) - 1)).
converter("torch.nn.functional.selu", "torch.nn.functional.selu_", "torch.selu", "torch.selu_",
          signature="input, inplace=False")(_simple(Act.SELU, _SELU_ALPHA, _SELU_SCALE))
# -log(1 + exp(-x)) is TensorRT's SOFTPLUS (alpha * log(exp(beta * x) + 1)) with alpha = beta = -1.
converter("torch.nn.functional.logsigmoid", signature="input")(_simple(Act.SOFTPLUS, -1.0, -1.0))


@converter("torch.nn.functional.leaky_relu", "torch.nn.functional.leaky_relu_",
           signature="input, negative_slope=0.01, inplace=False")
def leaky_relu(ctx, call):
    return ctx.activation(call.arg("input"), Act.LEAKY_RELU, alpha=call.arg("negative_slope"))


@converter("torch.nn.functional.rrelu", "torch.nn.functional.rrelu_",
           signature="input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False")
@converter("torch.rrelu", "torch.rrelu_",
           signature="input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None")
def rrelu(ctx, call):
    # In eval mode RReLU is a leaky ReLU with the mean of its random slope range.
    if call.arg("training"):
        raise ConversionError("rrelu with training=True draws random slopes: convert the model in eval() mode")
    slope = (float(call.arg("lower")) + float(call.arg("upper"))) / 2
    return ctx.activation(call.arg("input"), Act.LEAKY_RELU, alpha=slope)


@converter("torch.nn.functional.hardtanh", "torch.nn.functional.hardtanh_",
           signature="input, min_val=-1.0, max_val=1.0, inplace=False")
def hardtanh(ctx, call):
    return ctx.activation(call.arg("input"), Act.CLIP, alpha=call.arg("min_val"), beta=call.arg("max_val"))


@converter("torch.nn.functional.elu", "torch.nn.functional.elu_", signature="input, alpha=1.0, inplace=False")
def elu(ctx, call):
    return ctx.activation(call.arg("input"), Act.ELU, alpha=call.arg("alpha"))


@converter("torch.nn.functional.celu", "torch.nn.functional.celu_", signature="input, alpha=1.0, inplace=False")
@converter("torch.celu", "torch.celu_", signature="input, alpha=1.0")
def celu(ctx, call):
    # celu(x, a) = a * elu(x / a, 1): both are x for x > 0 and a * (exp(x / a) - 1) below.
    alpha = float(call.arg("alpha"))
    x = ctx.trt(call.arg("input"))
    if alpha == 1.0:
        return ctx.activation(x, Act.ELU, alpha=1.0)
    inner = ctx.activation(ctx.elementwise(x, 1.0 / alpha, Op.PROD), Act.ELU, alpha=1.0)
    return ctx.elementwise(inner, alpha, Op.PROD)


@converter("torch.nn.functional.softplus", signature="input, beta=1.0, threshold=20.0")
def softplus(ctx, call):
    # TensorRT: alpha * log(exp(beta * x) + 1); torch: log(1 + exp(beta * x)) / beta, and x itself
    # where beta * x > threshold. Above 15 the two branches agree to float precision.
    beta, threshold = float(call.arg("beta")), float(call.arg("threshold"))
    x = ctx.trt(call.arg("input"))
    soft = ctx.activation(x, Act.SOFTPLUS, alpha=1.0 / beta, beta=beta)
    if threshold >= 15.0:
        return soft
    linear = ctx.elementwise(ctx.elementwise(x, beta, Op.PROD), threshold, Op.GREATER)
    return select(ctx, linear, x, soft, x.dtype)


@converter("torch.nn.functional.hardsigmoid", signature="input, inplace=False")
def hardsigmoid(ctx, call):
    # relu6(x + 3) / 6 = clip(x / 6 + 1 / 2, 0, 1)
    return ctx.pointwise(call.arg("input"), lambda x: ctx.activation(x, Act.HARD_SIGMOID, alpha=1.0 / 6.0, beta=0.5))


@converter("torch.nn.functional.hardswish", signature="input, inplace=False")
def hardswish(ctx, call):
    return ctx.pointwise(call.arg("input"), lambda x: ctx.elementwise(
        x, ctx.activation(x, Act.HARD_SIGMOID, alpha=1.0 / 6.0, beta=0.5), Op.PROD))


@converter("torch.nn.functional.silu", signature="input, inplace=False")
def silu(ctx, call):
    return ctx.pointwise(call.arg("input"), lambda x: ctx.elementwise(x, ctx.activation(x, Act.SIGMOID), Op.PROD))


@converter("torch.nn.functional.mish", signature="input, inplace=False")
def mish(ctx, call):
    return ctx.pointwise(call.arg("input"), lambda x: ctx.elementwise(
        x, ctx.activation(ctx.activation(x, Act.SOFTPLUS, alpha=1.0, beta=1.0), Act.TANH), Op.PROD))


@converter("torch.nn.functional.gelu", signature="input, approximate='none'")
def gelu(ctx, call):
    kind = Act.GELU_TANH if call.arg("approximate") == "tanh" else Act.GELU_ERF
    return ctx.pointwise(call.arg("input"), lambda x: ctx.activation(x, kind))


@converter("torch.nn.functional.prelu", "torch.prelu", "torch.Tensor.prelu", signature="input, weight")
def prelu(ctx, call):
    x = ctx.trt(call.arg("input"))
    weight = call.arg("weight")
    rank = len(x.shape)
    shape = [1] * rank
    if weight.numel() != 1:
        shape[1] = weight.numel()  # one slope per channel (torch allows it from rank 2 on)
    slopes = ctx.reshape(ctx.trt(weight, x.dtype), shape)
    return ctx.network.add_parametric_relu(x, slopes).get_output(0)


@converter("torch.nn.functional.glu", signature="input, dim=-1")
def glu(ctx, call):
    x = ctx.trt(call.arg("input"))
    shape = list(x.shape)
    axis = ctx.axis(call.arg("dim"), len(shape))
    half = shape[axis] // 2
    shape[axis] = half
    start = [0] * len(shape)
    first = ctx.network.add_slice(x, start, shape, [1] * len(shape)).get_output(0)
    start[axis] = half
    second = ctx.network.add_slice(x, start, shape, [1] * len(shape)).get_output(0)
    return ctx.elementwise(first, ctx.activation(second, Act.SIGMOID), Op.PROD)


@converter("torch.nn.functional.softshrink", signature="input, lambd=0.5")
def softshrink(ctx, call):
    # x - clip(x, -l, l) is x - l above l, x + l below -l and exactly 0 between.
    lambd = float(call.arg("lambd"))
    x = ctx.trt(call.arg("input"))
    return ctx.elementwise(x, ctx.activation(x, Act.CLIP, alpha=-lambd, beta=lambd), Op.SUB)


@converter("torch.nn.functional.hardshrink", "torch.hardshrink", "torch.Tensor.hardshrink",
           signature="input, lambd=0.5")
def hardshrink(ctx, call):
    x = ctx.trt(call.arg("input"))
    keep = ctx.elementwise(ctx.unary(x, Un.ABS), float(call.arg("lambd")), Op.GREATER)
    return select(ctx, keep, x, 0.0, x.dtype)


@converter("torch.nn.functional.tanhshrink", signature="input")
def tanhshrink(ctx, call):
    x = ctx.trt(call.arg("input"))
    return ctx.elementwise(x, ctx.activation(x, Act.TANH), Op.SUB)


@converter("torch.nn.functional.threshold", "torch.nn.functional.threshold_",
           signature="input, threshold, value, inplace=False")
@converter("torch.threshold", "torch.threshold_", signature="input, threshold, value")
def threshold(ctx, call):
    x = ctx.trt(call.arg("input"), call.output.dtype)
    keep = ctx.elementwise(x, call.arg("threshold"), Op.GREATER)
    return select(ctx, keep, x, call.arg("value"), x.dtype)

