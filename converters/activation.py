"""Activations: one TensorRT activation (or a short composition) per torch op."""
from __future__ import annotations

from torch2x.flavour import trt
from torch2x.registry import converter

Act = trt.ActivationType
Op = trt.ElementWiseOperation


def _simple(kind, alpha=None, beta=None):
    def convert(ctx, call):
        return ctx.activation(call.arg("input"), kind, alpha, beta)

    return convert


for _names, _kind in (
    (("torch.relu", "torch.relu_", "torch.Tensor.relu", "torch.Tensor.relu_"), Act.RELU),
    (("torch.sigmoid", "torch.Tensor.sigmoid", "torch.Tensor.sigmoid_", "torch.special.expit"), Act.SIGMOID),
    (("torch.tanh", "torch.Tensor.tanh", "torch.Tensor.tanh_"), Act.TANH),
):
    converter(*_names, signature="input")(_simple(_kind))

converter("torch.nn.functional.relu", "torch.nn.functional.relu_", signature="input, inplace=False")(_simple(Act.RELU))
converter("torch.nn.functional.sigmoid", signature="input")(_simple(Act.SIGMOID))
converter("torch.nn.functional.tanh", signature="input")(_simple(Act.TANH))
converter("torch.nn.functional.relu6", signature="input, inplace=False")(_simple(Act.CLIP, 0.0, 6.0))
converter("torch.nn.functional.softsign", signature="input")(_simple(Act.SOFTSIGN))
converter("torch.nn.functional.selu", "torch.selu", "torch.Tensor.selu", signature="input, inplace=False")(
    _simple(Act.SELU, 1.6732632423543772848170429916717, 1.0507009873554804934193349852946))


@converter("torch.nn.functional.leaky_relu", "torch.nn.functional.leaky_relu_",
           signature="input, negative_slope=0.01, inplace=False")
def leaky_relu(ctx, call):
    return ctx.activation(call.arg("input"), Act.LEAKY_RELU, alpha=call.arg("negative_slope"))


@converter("torch.nn.functional.hardtanh", "torch.nn.functional.hardtanh_",
           signature="input, min_val=-1.0, max_val=1.0, inplace=False")
def hardtanh(ctx, call):
    return ctx.activation(call.arg("input"), Act.CLIP, alpha=call.arg("min_val"), beta=call.arg("max_val"))


@converter("torch.nn.functional.elu", "torch.nn.functional.elu_", signature="input, alpha=1.0, inplace=False")
def elu(ctx, call):
    return ctx.activation(call.arg("input"), Act.ELU, alpha=call.arg("alpha"))


@converter("torch.nn.functional.softplus", signature="input, beta=1.0, threshold=20.0")
def softplus(ctx, call):
    # TensorRT: alpha*log(exp(beta*x)+1); torch: log(1+exp(beta*x))/beta, linear above threshold
    # (the linear branch equals the log form to float precision there).
    beta = float(call.arg("beta"))
    return ctx.activation(call.arg("input"), Act.SOFTPLUS, alpha=1.0 / beta, beta=beta)


@converter("torch.nn.functional.hardsigmoid", signature="input, inplace=False")
def hardsigmoid(ctx, call):
    return ctx.activation(call.arg("input"), Act.HARD_SIGMOID, alpha=1.0 / 6.0, beta=0.5)


@converter("torch.nn.functional.hardswish", signature="input, inplace=False")
def hardswish(ctx, call):
    x = call.arg("input")
    gate = ctx.activation(x, Act.HARD_SIGMOID, alpha=1.0 / 6.0, beta=0.5)
    return ctx.elementwise(x, gate, Op.PROD)


@converter("torch.nn.functional.silu", signature="input, inplace=False")
def silu(ctx, call):
    x = call.arg("input")
    return ctx.elementwise(x, ctx.activation(x, Act.SIGMOID), Op.PROD)


@converter("torch.nn.functional.mish", signature="input, inplace=False")
def mish(ctx, call):
    x = call.arg("input")
    soft = ctx.activation(x, Act.SOFTPLUS, alpha=1.0, beta=1.0)
    return ctx.elementwise(x, ctx.activation(soft, Act.TANH), Op.PROD)


@converter("torch.nn.functional.gelu", signature="input, approximate='none'")
def gelu(ctx, call):
    kind = Act.GELU_TANH if call.arg("approximate") == "tanh" else Act.GELU_ERF
    return ctx.activation(call.arg("input"), kind)
