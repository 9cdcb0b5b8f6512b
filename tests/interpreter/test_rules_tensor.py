"""Rules of rules_tensor.py: small networks from the real builder, run by the interpreter, compared with

* an independent NumPy / PyTorch computation of TensorRT's documented semantics;
* TensorRT's own arithmetic: the values it constant-folds into shape tensors while inferring
  shapes (integer and float elementwise, unary, activations, slice modes, gather modes, one-hot,
  ...), which settles the cases where TensorRT's documents disagree or are silent;
* NVIDIA's op mapping: tiny PyTorch functions exported to ONNX and parsed by ``trt.OnnxParser``.

``fresh.build()`` is called on a representative subset (engine builds cost ~0.1-1 s each); a
comment says why where a network cannot build on TensorRT-RTX.
"""
import math

import numpy as np
import pytest
import torch

from torch2x.dtypes import to_trt
from torch2x.flavour import trt
from torch2x.interpreter import LayerExecutionError, UnsupportedLayerError, interpret
from torch2x.interpreter.rules_tensor import AssertionFailedError

EW, UN, ACT = trt.ElementWiseOperation, trt.UnaryOperation, trt.ActivationType
RED, SM = trt.ReduceOperation, trt.SampleMode
EXACT = dict(rtol=0, atol=0)
F32 = dict(rtol=1e-5, atol=1e-6)
F16 = dict(rtol=2e-3, atol=2e-3)
BF16 = dict(rtol=1.6e-2, atol=1.6e-2)  # one bfloat16 ulp: the interpreter rounds once from float32


def tol(dtype):
    if dtype == torch.bfloat16:
        return BF16
    return F16 if dtype == torch.float16 else (F32 if dtype.is_floating_point else EXACT)


class Net:
    """Inputs from torch tensors, constants from arrays, outputs marked in order; ``run`` interprets."""

    def __init__(self, fresh):
        self.fresh, self.net, self.feeds, self.outs = fresh, fresh.network, {}, []

    def input(self, value: torch.Tensor):
        name = f"in{len(self.feeds)}"
        self.feeds[name] = value
        return self.net.add_input(name, to_trt(value.dtype), tuple(value.shape))

    def const(self, array):
        array = np.array(array, copy=True, order="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray
        return self.net.add_constant(array.shape, array).get_output(0)

    def output(self, *tensors):
        for t in tensors:
            t.name = f"out{len(self.outs)}"
            self.net.mark_output(t)
            self.outs.append(t.name)

    def run(self):
        result = interpret(self.net, self.feeds)
        values = [result[n] for n in self.outs]
        return values[0] if len(values) == 1 else values

    def build(self):
        assert len(self.fresh.build()) > 0


def test_core_rejects_a_shape_that_contradicts_tensorrt(fresh, monkeypatch):
    # The harness relies on the core's output-shape check; prove it bites for a rule of this file.
    from torch2x.interpreter import core

    n = Net(fresh)
    n.output(n.net.add_shuffle(n.input(torch.zeros(2, 3))).get_output(0))
    monkeypatch.setitem(core.RULES, trt.LayerType.SHUFFLE, lambda layer, ins, env: ins[0].reshape(3, 2))
    with pytest.raises(LayerExecutionError, match=r"produced output 0 of shape \(3, 2\), TensorRT infers \(2, 3\)"):
        n.run()


# ----------------------------------------------------------------------------- elementwise

def _trunc_div(a, b):
    return torch.tensor([int(x / y) for x, y in zip(a.flatten().tolist(), b.expand_as(a).flatten().tolist())],
                        dtype=a.dtype).reshape(a.shape)


ARITH = {
    EW.SUM: lambda a, b: a + b,
    EW.PROD: lambda a, b: a * b,
    EW.MAX: np.maximum,
    EW.MIN: np.minimum,
    EW.SUB: lambda a, b: a - b,
    EW.DIV: lambda a, b: a / b,
    EW.POW: np.power,
    EW.FLOOR_DIV: lambda a, b: np.floor(a / b),
}


@pytest.mark.parametrize("op", list(ARITH), ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_elementwise_float(fresh, op, dtype):
    a = torch.rand(2, 3, 4) * 4 + 0.5
    b = (torch.rand(1, 3, 1) * 3 + 0.5) * torch.tensor([1.0, -1.0, 1.0]).reshape(1, 3, 1)
    if op == EW.POW:
        b = b.abs()
    a, b = a.to(dtype), b.to(dtype)
    n = Net(fresh)
    n.output(n.net.add_elementwise(n.input(a), n.input(b), op).get_output(0))
    expected = torch.from_numpy(np.asarray(ARITH[op](a.double().numpy(), b.double().numpy()))).to(dtype)
    torch.testing.assert_close(n.run(), expected, **tol(dtype))
    if op in (EW.SUM, EW.FLOOR_DIV) and dtype == torch.float32:
        n.build()


@pytest.mark.parametrize("op", [EW.SUM, EW.SUB, EW.PROD, EW.MAX, EW.MIN, EW.DIV, EW.FLOOR_DIV, EW.POW],
                         ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_elementwise_int(fresh, op, dtype):
    a = torch.tensor([[7, -7, 7, -7, 0, 9], [1, 2, 3, -4, 5, -6]], dtype=dtype)
    b = torch.tensor([[2, 2, -2, -2, 3, 3]], dtype=dtype)
    if op == EW.POW:
        a, b = a.abs() % 4, b.abs()
    n = Net(fresh)
    n.output(n.net.add_elementwise(n.input(a), n.input(b), op).get_output(0))
    ref = {
        EW.SUM: lambda: a + b, EW.SUB: lambda: a - b, EW.PROD: lambda: a * b,
        EW.MAX: lambda: torch.from_numpy(np.maximum(a.numpy(), b.numpy())),
        EW.MIN: lambda: torch.from_numpy(np.minimum(a.numpy(), b.numpy())),
        # integer kDIV truncates toward zero (C semantics), kFLOOR_DIV rounds down (Python's //)
        EW.DIV: lambda: _trunc_div(a, b),
        EW.FLOOR_DIV: lambda: torch.from_numpy(a.numpy() // b.numpy()),
        EW.POW: lambda: torch.from_numpy(a.numpy() ** b.numpy()),
    }[op]()
    out = n.run()
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.to(dtype), **EXACT)
    if op == EW.DIV and dtype == torch.int32:
        torch.testing.assert_close(out[0, :4], torch.tensor([3, -3, -3, 3], dtype=dtype), **EXACT)
        n.build()


@pytest.mark.parametrize("op,ref", [
    (EW.AND, np.logical_and), (EW.OR, np.logical_or), (EW.XOR, np.logical_xor),
], ids=["AND", "OR", "XOR"])
def test_elementwise_bool(fresh, op, ref):
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[True, False, True, False]])
    n = Net(fresh)
    n.output(n.net.add_elementwise(n.input(a), n.input(b), op).get_output(0))
    torch.testing.assert_close(n.run(), torch.from_numpy(ref(a.numpy(), b.numpy())), **EXACT)


@pytest.mark.parametrize("op,ref", [(EW.EQUAL, np.equal), (EW.GREATER, np.greater), (EW.LESS, np.less)],
                         ids=["EQUAL", "GREATER", "LESS"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_elementwise_compare(fresh, op, ref, dtype):
    a = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    b = torch.tensor([[2, 2, 2]], dtype=dtype)
    n = Net(fresh)
    n.output(n.net.add_elementwise(n.input(a), n.input(b), op).get_output(0))
    out = n.run()
    assert out.dtype == torch.bool
    torch.testing.assert_close(out, torch.from_numpy(ref(a.numpy(), b.numpy())), **EXACT)
    if op == EW.GREATER and dtype == torch.float32:
        n.build()


# ----------------------------------------------------------------------------- unary

POS = lambda: torch.rand(2, 5) * 3 + 0.1  # noqa: E731
UNIT = lambda: torch.rand(2, 5) * 1.8 - 0.9  # noqa: E731
ANY = lambda: torch.randn(2, 5) * 2  # noqa: E731
UNARY_CASES = [
    (UN.EXP, ANY, np.exp), (UN.LOG, POS, np.log), (UN.SQRT, POS, np.sqrt), (UN.RECIP, POS, lambda x: 1 / x),
    (UN.ABS, ANY, np.abs), (UN.NEG, ANY, np.negative), (UN.SIN, ANY, np.sin), (UN.COS, ANY, np.cos),
    (UN.TAN, UNIT, np.tan), (UN.SINH, ANY, np.sinh), (UN.COSH, ANY, np.cosh), (UN.ASIN, UNIT, np.arcsin),
    (UN.ACOS, UNIT, np.arccos), (UN.ATAN, ANY, np.arctan), (UN.ASINH, ANY, np.arcsinh),
    (UN.ACOSH, lambda: POS() + 1, np.arccosh), (UN.ATANH, UNIT, np.arctanh), (UN.CEIL, ANY, np.ceil),
    (UN.FLOOR, ANY, np.floor), (UN.ERF, ANY, lambda x: np.vectorize(math.erf)(x)), (UN.SIGN, ANY, np.sign),
    (UN.ROUND, lambda: torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5], [-2.5, 0.49, 3.51, -3.7, 4.0]]), np.round),
]


@pytest.mark.parametrize("op,make,ref", UNARY_CASES, ids=[c[0].name for c in UNARY_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unary_float(fresh, op, make, ref, dtype):
    x = make().to(dtype)
    n = Net(fresh)
    n.output(n.net.add_unary(n.input(x), op).get_output(0))
    expected = torch.from_numpy(np.asarray(ref(x.double().numpy()))).to(dtype)
    torch.testing.assert_close(n.run(), expected, **tol(dtype))
    if op in (UN.EXP, UN.ROUND) and dtype == torch.float32:
        n.build()


def test_unary_round_is_half_to_even(fresh):
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 3.5])
    n = Net(fresh)
    n.output(n.net.add_unary(n.input(x), UN.ROUND).get_output(0))
    torch.testing.assert_close(n.run(), torch.tensor([0.0, 2.0, 2.0, -0.0, -2.0, 4.0]), **EXACT)


@pytest.mark.parametrize("op,ref", [(UN.ABS, np.abs), (UN.NEG, np.negative), (UN.SIGN, np.sign)],
                         ids=["ABS", "NEG", "SIGN"])
def test_unary_int(fresh, op, ref):
    x = torch.tensor([[-3, 0, 5, -1]], dtype=torch.int32)
    n = Net(fresh)
    n.output(n.net.add_unary(n.input(x), op).get_output(0))
    out = n.run()
    assert out.dtype == torch.int32
    torch.testing.assert_close(out, torch.from_numpy(ref(x.numpy())), **EXACT)


def test_unary_not_isinf_isnan(fresh):
    b = torch.tensor([True, False, True])
    x = torch.tensor([1.0, float("inf"), -float("inf"), float("nan"), 0.0])
    n = Net(fresh)
    n.output(n.net.add_unary(n.input(b), UN.NOT).get_output(0))
    xi = n.input(x)
    n.output(n.net.add_unary(xi, UN.ISINF).get_output(0), n.net.add_unary(xi, UN.ISNAN).get_output(0))
    not_b, isinf, isnan = n.run()
    torch.testing.assert_close(not_b, torch.tensor([False, True, False]), **EXACT)
    torch.testing.assert_close(isinf, torch.tensor([False, True, True, False, False]), **EXACT)
    torch.testing.assert_close(isnan, torch.tensor([False, False, False, True, False]), **EXACT)
    n.build()


# ----------------------------------------------------------------------------- activation

def _np_act(kind, x, a, b):
    if kind == ACT.RELU:
        return np.maximum(x, 0)
    if kind == ACT.SIGMOID:
        return 1 / (1 + np.exp(-x))
    if kind == ACT.TANH:
        return np.tanh(x)
    if kind == ACT.LEAKY_RELU:
        return np.where(x >= 0, x, a * x)
    if kind == ACT.ELU:
        return np.where(x >= 0, x, a * (np.exp(x) - 1))
    if kind == ACT.SELU:
        return np.where(x > 0, b * x, b * (a * np.exp(x) - a))
    if kind == ACT.SOFTSIGN:
        return x / (1 + np.abs(x))
    if kind == ACT.SOFTPLUS:
        return a * np.log(np.exp(b * x) + 1)
    if kind == ACT.CLIP:
        return np.maximum(a, np.minimum(b, x))
    if kind == ACT.HARD_SIGMOID:
        return np.maximum(0, np.minimum(1, a * x + b))
    if kind == ACT.SCALED_TANH:
        return a * np.tanh(b * x)
    if kind == ACT.THRESHOLDED_RELU:
        return np.where(x > a, x, 0)
    if kind == ACT.GELU_ERF:
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if kind == ACT.GELU_TANH:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    raise AssertionError(kind)


ACT_CASES = [
    (ACT.RELU, 0, 0), (ACT.SIGMOID, 0, 0), (ACT.TANH, 0, 0), (ACT.LEAKY_RELU, 0.1, 0), (ACT.ELU, 0.7, 0),
    (ACT.SELU, 1.6732632, 1.0507010), (ACT.SOFTSIGN, 0, 0), (ACT.SOFTPLUS, 1.5, 2.0), (ACT.CLIP, -0.5, 1.25),
    (ACT.HARD_SIGMOID, 0.2, 0.5), (ACT.SCALED_TANH, 1.7, 0.66), (ACT.THRESHOLDED_RELU, 0.3, 0),
    (ACT.GELU_ERF, 0, 0), (ACT.GELU_TANH, 0, 0),
]


@pytest.mark.parametrize("kind,alpha,beta", ACT_CASES, ids=[c[0].name for c in ACT_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_activation(fresh, kind, alpha, beta, dtype):
    x = torch.linspace(-4, 4, 33).reshape(3, 11).to(dtype)
    n = Net(fresh)
    layer = n.net.add_activation(n.input(x), kind)
    layer.alpha, layer.beta = alpha, beta
    n.output(layer.get_output(0))
    xa = x.double().numpy()
    expected = torch.from_numpy(np.asarray(_np_act(kind, xa, np.float32(alpha), np.float32(beta)), dtype=np.float64))
    torch.testing.assert_close(n.run(), expected.to(dtype), **tol(dtype))
    if (dtype == torch.float32 and kind in (ACT.SELU, ACT.HARD_SIGMOID, ACT.GELU_TANH)) or \
            (dtype == torch.bfloat16 and kind == ACT.GELU_ERF):
        n.build()


def test_activation_clip_with_crossed_bounds_follows_max_of_min(fresh):
    # max(alpha, min(beta, x)) with alpha > beta is the constant alpha.
    x = torch.tensor([-2.0, 0.0, 2.0])
    n = Net(fresh)
    layer = n.net.add_activation(n.input(x), ACT.CLIP)
    layer.alpha, layer.beta = 1.0, -1.0
    n.output(layer.get_output(0))
    torch.testing.assert_close(n.run(), torch.ones(3), **EXACT)


def test_parametric_relu(fresh):
    x = torch.randn(2, 3, 4)
    slopes = np.array([0.1, 0.5, -2.0], dtype=np.float32).reshape(1, 3, 1)
    n = Net(fresh)
    n.output(n.net.add_parametric_relu(n.input(x), n.const(slopes)).get_output(0))
    expected = torch.from_numpy(np.where(x.numpy() >= 0, x.numpy(), slopes * x.numpy()))
    torch.testing.assert_close(n.run(), expected, **F32)
    n.build()


# ----------------------------------------------------------------------------- shuffle

@pytest.mark.parametrize("first,reshape,second,expected_fn", [
    ((0, 2, 1, 3), None, None, lambda x: x.transpose(0, 2, 1, 3)),
    (None, (0, -1), None, lambda x: x.reshape(2, 60)),
    (None, (0, 0, 20), None, lambda x: x.reshape(2, 3, 20)),
    ((3, 0, 1, 2), (0, 6, -1), (2, 0, 1), lambda x: x.transpose(3, 0, 1, 2).reshape(5, 6, 4).transpose(2, 0, 1)),
    (None, (6, 20), (1, 0), lambda x: x.reshape(6, 20).T),
])
def test_shuffle_static(fresh, first, reshape, second, expected_fn):
    x = torch.arange(120, dtype=torch.float32).reshape(2, 3, 4, 5)
    n = Net(fresh)
    layer = n.net.add_shuffle(n.input(x))
    if first is not None:
        layer.first_transpose = first
    if reshape is not None:
        layer.reshape_dims = reshape
    if second is not None:
        layer.second_transpose = second
    n.output(layer.get_output(0))
    torch.testing.assert_close(n.run(), torch.from_numpy(np.ascontiguousarray(expected_fn(x.numpy()))), **EXACT)
    if first == (3, 0, 1, 2):
        n.build()


def test_shuffle_dynamic_reshape_from_second_input(fresh):
    x = torch.arange(24, dtype=torch.int32).reshape(2, 3, 4)
    n = Net(fresh)
    layer = n.net.add_shuffle(n.input(x))
    layer.first_transpose = (1, 0, 2)
    layer.set_input(1, n.const(np.array([0, -1], dtype=np.int64)))
    assert layer.reshape_dims is None
    n.output(layer.get_output(0))
    expected = torch.from_numpy(x.numpy().transpose(1, 0, 2).reshape(3, 8))
    torch.testing.assert_close(n.run(), expected, **EXACT)
    n.build()


@pytest.mark.parametrize("placeholder,dims,expected", [
    (False, (0, 5), (0, 5)),      # 0 is a zero-length dimension
    (True, (0, 0, 3), (2, 0, 3)),  # 0 copies the input dimension at the same index
])
def test_shuffle_zero_is_placeholder(fresh, placeholder, dims, expected):
    x = torch.ones(2, 0, 3)
    n = Net(fresh)
    layer = n.net.add_shuffle(n.input(x))
    layer.zero_is_placeholder = placeholder
    layer.reshape_dims = dims
    n.output(layer.get_output(0))
    assert tuple(layer.get_output(0).shape) == expected  # TensorRT's own reading
    assert tuple(n.run().shape) == expected


# ----------------------------------------------------------------------------- slice

def test_slice_static_strides(fresh):
    x = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    n = Net(fresh)
    xi = n.input(x)
    n.output(n.net.add_slice(xi, (1, 0, 0), (2, 2, 3), (1, 2, 2)).get_output(0),
             n.net.add_slice(xi, (2, 3, 4), (3, 2, 2), (-1, -2, -3)).get_output(0))
    a, b = n.run()
    torch.testing.assert_close(a, x[1:3, 0:4:2, 0:5:2], **EXACT)
    torch.testing.assert_close(b, torch.from_numpy(x.numpy()[2::-1, 3::-2, 4::-3].copy()), **EXACT)
    n.build()


SAMPLE_EXPECTED = {  # 1-D input arange(5), start -3, size 10, stride 1; "f" marks the fill value
    SM.WRAP: [2, 3, 4, 0, 1, 2, 3, 4, 0, 1],
    SM.CLAMP: [0, 0, 0, 0, 1, 2, 3, 4, 4, 4],
    SM.REFLECT: [3, 2, 1, 0, 1, 2, 3, 4, 3, 2],
    SM.FILL: ["f", "f", "f", 0, 1, 2, 3, 4, "f", "f"],
}


@pytest.mark.parametrize("mode", list(SAMPLE_EXPECTED), ids=lambda m: m.name)
def test_slice_sample_modes(fresh, mode):
    x = torch.arange(10, dtype=torch.float32).reshape(2, 5) * 10
    n = Net(fresh)
    layer = n.net.add_slice(n.input(x), (0, -3), (2, 10), (1, 1))
    layer.mode = mode
    if mode == SM.FILL:
        layer.set_input(4, n.const(np.array(-7.0, dtype=np.float32)))
    n.output(layer.get_output(0))
    row = [-7.0 if v == "f" else v * 10.0 for v in SAMPLE_EXPECTED[mode]]
    expected = torch.tensor([row, [v if v == -7.0 else v + 50.0 for v in row]])
    torch.testing.assert_close(n.run(), expected, **EXACT)
    if mode in (SM.WRAP, SM.FILL):
        n.build()


def test_slice_reflect_with_stride_and_single_element_axis(fresh):
    x = torch.arange(4, dtype=torch.float32).reshape(1, 4)
    n = Net(fresh)
    layer = n.net.add_slice(n.input(x), (-2, -5), (3, 6), (1, 2))
    layer.mode = SM.REFLECT
    n.output(layer.get_output(0))
    # axis 0 has one element: every coordinate reads it. axis 1: coords -5,-3,-1,1,3,5 with period 6.
    expected = torch.tensor([[1.0, 3.0, 1.0, 1.0, 3.0, 1.0]]).expand(3, 6)
    torch.testing.assert_close(n.run(), expected, **EXACT)


def test_slice_static_axes_attribute(fresh):
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    n = Net(fresh)
    layer = n.net.add_slice(n.input(x), (3, 1), (2, 2), (-2, 1))
    layer.axes = (2, 1)
    n.output(layer.get_output(0))
    torch.testing.assert_close(n.run(), torch.from_numpy(x.numpy()[:, 1:3, 3::-2].copy()), **EXACT)
    n.build()


def test_slice_strict_bounds_out_of_range_raises(fresh):
    n = Net(fresh)
    n.output(n.net.add_slice(n.input(torch.zeros(5)), (3,), (4,), (1,)).get_output(0))
    with pytest.raises(LayerExecutionError, match="STRICT_BOUNDS"):
        n.run()


def test_slice_dynamic_inputs_and_axes(fresh):
    x = torch.arange(60, dtype=torch.int32).reshape(3, 4, 5)
    n = Net(fresh)
    xi = n.input(x)
    dyn = n.net.add_slice(xi, (0, 0, 0), (1, 1, 1), (1, 1, 1))
    dyn.set_input(1, n.const(np.array([1, 3, 0], dtype=np.int64)))
    dyn.set_input(2, n.const(np.array([2, 2, 2], dtype=np.int64)))
    dyn.set_input(3, n.const(np.array([1, -1, 3], dtype=np.int64)))
    ax = n.net.add_slice(xi, (1,), (2,), (2,))
    ax.set_input(5, n.const(np.array([-1], dtype=np.int64)))
    n.output(dyn.get_output(0), ax.get_output(0))
    a, b = n.run()
    torch.testing.assert_close(a, torch.from_numpy(x.numpy()[1:3, 3:1:-1, 0:5:3].copy()), **EXACT)
    torch.testing.assert_close(b, x[:, :, 1:5:2], **EXACT)
    n.build()


# ----------------------------------------------------------------------------- reduce, softmax, concatenation, shape

@pytest.mark.parametrize("op,ref", [
    (RED.SUM, np.sum), (RED.PROD, np.prod), (RED.MAX, np.max), (RED.MIN, np.min), (RED.AVG, np.mean),
], ids=lambda v: getattr(v, "name", ""))
@pytest.mark.parametrize("axes", [(1,), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce(fresh, op, ref, axes, keep):
    x = torch.rand(2, 3, 4) + 0.5
    n = Net(fresh)
    mask = sum(1 << a for a in axes)
    n.output(n.net.add_reduce(n.input(x), op, mask, keep).get_output(0))
    expected = torch.from_numpy(np.asarray(ref(x.double().numpy(), axis=axes, keepdims=keep))).float()
    torch.testing.assert_close(n.run(), expected, **F32)
    if axes == (0, 2) and not keep and op in (RED.SUM, RED.MAX):
        n.build()


def test_reduce_int_and_half(fresh):
    xi = torch.tensor([[1, -2, 3], [4, 5, -6]], dtype=torch.int32)
    xh = (torch.rand(4, 64) * 2).half()
    n = Net(fresh)
    n.output(n.net.add_reduce(n.input(xi), RED.SUM, 1 << 1, False).get_output(0),
             n.net.add_reduce(n.input(xh), RED.AVG, 1 << 1, True).get_output(0))
    si, ah = n.run()
    torch.testing.assert_close(si, torch.tensor([2, 3], dtype=torch.int32), **EXACT)
    torch.testing.assert_close(ah, torch.from_numpy(xh.double().numpy().mean(1, keepdims=True)).half(), **F16)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_softmax(fresh, axis, dtype):
    x = (torch.randn(2, 3, 4) * 3).to(dtype)
    n = Net(fresh)
    layer = n.net.add_softmax(n.input(x))
    layer.axes = 1 << axis
    n.output(layer.get_output(0))
    e = np.exp(x.double().numpy() - x.double().numpy().max(axis=axis, keepdims=True))
    expected = torch.from_numpy(e / e.sum(axis=axis, keepdims=True)).to(dtype)
    torch.testing.assert_close(n.run(), expected, **tol(dtype))
    if axis == 2 and dtype == torch.float32:
        n.build()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concatenation(fresh, axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for s, k in zip(shapes, (1, 2, 3)):
        s[axis] = k
    xs = [torch.randn(*s) for s in shapes]
    n = Net(fresh)
    layer = n.net.add_concatenation([n.input(x) for x in xs])
    layer.axis = axis
    n.output(layer.get_output(0))
    torch.testing.assert_close(n.run(), torch.from_numpy(np.concatenate([x.numpy() for x in xs], axis=axis)), **EXACT)
    if axis == 1:
        n.build()


def test_shape_is_int64(fresh):
    n = Net(fresh)
    out = n.net.add_shape(n.input(torch.zeros(2, 5, 7))).get_output(0)
    n.output(out)
    result = n.run()
    assert result.dtype == torch.int64
    torch.testing.assert_close(result, torch.tensor([2, 5, 7]), **EXACT)
    n.build()


# ----------------------------------------------------------------------------- fill

@pytest.mark.parametrize("to_type", [trt.float32, trt.int32, trt.int64])
def test_fill_linspace_static(fresh, to_type):
    n = Net(fresh)
    n.input(torch.zeros(1))
    layer = n.net.add_fill((6,), trt.FillOperation.LINSPACE, to_type)
    layer.alpha, layer.beta = (2.5, 0.5) if to_type == trt.float32 else (-3.0, 2.0)
    n.output(layer.get_output(0))
    out = n.run()
    expected = np.arange(6) * 0.5 + 2.5 if to_type == trt.float32 else np.arange(6) * 2 - 3
    torch.testing.assert_close(out, torch.from_numpy(expected).to(out.dtype), **EXACT)
    assert out.dtype == {trt.float32: torch.float32, trt.int32: torch.int32, trt.int64: torch.int64}[to_type]


def test_fill_linspace_dynamic_alpha_delta(fresh):
    # Element [i, j] = alpha + delta[0] * i + delta[1] * j (NvInfer.h's kLINSPACE example).
    n = Net(fresh)
    n.input(torch.zeros(1))
    layer = n.net.add_fill((3, 4), trt.FillOperation.LINSPACE, trt.float32)
    layer.set_input(1, n.const(np.array(1.0, dtype=np.float32)))
    layer.set_input(2, n.const(np.array([100.0, 10.0], dtype=np.float32)))
    n.output(layer.get_output(0))
    expected = torch.tensor([[1.0, 11, 21, 31], [101, 111, 121, 131], [201, 211, 221, 231]])
    torch.testing.assert_close(n.run(), expected, **EXACT)
    n.build()


def test_fill_dynamic_shape(fresh):
    x = torch.zeros(2, 3)
    n = Net(fresh)
    shp = n.net.add_shape(n.input(x)).get_output(0)
    layer = n.net.add_fill((0, 0), trt.FillOperation.LINSPACE, trt.int64)
    layer.set_input(0, shp)
    layer.set_input(1, n.const(np.array(5, dtype=np.int64)))
    layer.set_input(2, n.const(np.array([3, 1], dtype=np.int64)))
    n.output(layer.get_output(0))
    torch.testing.assert_close(n.run(), torch.tensor([[5, 6, 7], [8, 9, 10]]), **EXACT)


def test_fill_random_uniform_shape_and_range(fresh):
    n = Net(fresh)
    n.input(torch.zeros(1))
    layer = n.net.add_fill((50, 40), trt.FillOperation.RANDOM_UNIFORM, trt.float32)
    layer.alpha, layer.beta = -2.0, 3.0
    n.output(layer.get_output(0))
    out = n.run()
    assert out.shape == (50, 40) and out.min() >= -2.0 and out.max() <= 3.0
    assert abs(float(out.mean()) - 0.5) < 0.2  # a uniform sample, not a constant


def test_fill_random_normal_mean_and_scale(fresh):
    n = Net(fresh)
    n.input(torch.zeros(1))
    layer = n.net.add_fill((100, 50), trt.FillOperation.RANDOM_NORMAL, trt.float16)
    layer.alpha, layer.beta = 3.0, 0.5
    n.output(layer.get_output(0))
    out = n.run()
    assert out.shape == (100, 50) and out.dtype == torch.float16
    assert abs(float(out.float().mean()) - 3.0) < 0.05 and abs(float(out.float().std()) - 0.5) < 0.05


# ----------------------------------------------------------------------------- select, gather, scatter

def test_select(fresh):
    c = torch.tensor([[True, False, True]])
    a, b = torch.randn(2, 3), torch.randn(2, 1)
    n = Net(fresh)
    n.output(n.net.add_select(n.input(c), n.input(a), n.input(b)).get_output(0))
    torch.testing.assert_close(n.run(), torch.from_numpy(np.where(c.numpy(), a.numpy(), b.numpy())), **EXACT)
    n.build()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_default_with_negative_indices(fresh, axis):
    x = torch.randn(3, 4, 5)
    idx = np.array([[0, -1], [2, -3]], dtype=np.int32)
    n = Net(fresh)
    n.output(n.net.add_gather(n.input(x), n.const(idx), axis).get_output(0))
    expected = np.take(x.numpy(), idx, axis=axis)  # numpy's take counts negative indices from the end
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)
    if axis == 1:
        n.build()


def test_gather_default_elementwise_dim(fresh):
    x = torch.randn(3, 4, 5)
    idx = np.array([[0, 3], [1, 1], [-1, 2]], dtype=np.int64)
    n = Net(fresh)
    layer = n.net.add_gather(n.input(x), n.const(idx), 1)
    layer.num_elementwise_dims = 1
    n.output(layer.get_output(0))
    expected = np.stack([x.numpy()[b][idx[b]] for b in range(3)])  # (3, 2, 5)
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)


@pytest.mark.parametrize("axis", [0, 2])
def test_gather_element(fresh, axis):
    x = torch.randn(3, 4, 5)
    shape = [3, 4, 5]
    shape[axis] = 2
    idx = np.random.default_rng(0).integers(-x.shape[axis], x.shape[axis], size=shape).astype(np.int32)
    n = Net(fresh)
    layer = n.net.add_gather_v2(n.input(x), n.const(idx), trt.GatherMode.ELEMENT)
    layer.axis = axis
    n.output(layer.get_output(0))
    expected = np.take_along_axis(x.numpy(), np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)
    if axis == 2:
        n.build()


@pytest.mark.parametrize("batch_dims,idx", [
    (0, np.array([[0, 1], [2, -1], [1, 3]], dtype=np.int32)),         # picks rows of data[i, j]
    (0, np.array([[[2, 3, 4]], [[0, 0, -1]]], dtype=np.int32)),        # full coordinates -> scalars
    (1, np.array([[1], [3], [0]], dtype=np.int32)),                    # per batch, one index into axis 1
    (1, np.array([[[0, 4], [3, 1]], [[1, 1], [2, 2]], [[3, 0], [0, 3]]], dtype=np.int32)),
])
def test_gather_nd(fresh, batch_dims, idx):
    x = torch.randn(3, 4, 5)
    n = Net(fresh)
    layer = n.net.add_gather_v2(n.input(x), n.const(idx), trt.GatherMode.ND)
    layer.num_elementwise_dims = batch_dims
    n.output(layer.get_output(0))
    xs = x.numpy()
    k = idx.shape[-1]
    if batch_dims == 0:
        flat = [xs[tuple(int(c) for c in row)] for row in idx.reshape(-1, k)]
        expected = np.array(flat).reshape(idx.shape[:-1] + xs.shape[k:])
    else:
        per_b = [[xs[b][tuple(int(c) for c in row)] for row in idx[b].reshape(-1, k)] for b in range(3)]
        expected = np.array(per_b).reshape(idx.shape[:-1] + xs.shape[1 + k:])
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)
    if batch_dims == 1 and idx.ndim == 3:
        n.build()


@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_element(fresh, axis):
    data = torch.zeros(3, 4)
    idx = np.array([[2, 0, 1, -1], [0, 2, 2, 1]], dtype=np.int32) if axis == 0 else \
        np.array([[3, 0], [1, 2], [-1, 0]], dtype=np.int32)
    updates = torch.arange(1, idx.size + 1, dtype=torch.float32).reshape(idx.shape)
    n = Net(fresh)
    layer = n.net.add_scatter(n.input(data), n.const(idx), n.input(updates), trt.ScatterMode.ELEMENT)
    layer.axis = axis
    n.output(layer.get_output(0))
    expected = data.numpy().copy()
    for pos in np.ndindex(*idx.shape):
        target = list(pos)
        target[axis] = idx[pos] % data.shape[axis]
        expected[tuple(target)] = updates.numpy()[pos]
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)
    if axis == 1:
        n.build()


def test_scatter_nd(fresh):
    data = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    idx = np.array([[0, 2], [1, -3]], dtype=np.int32)
    updates = -torch.arange(8, dtype=torch.float32).reshape(2, 4) - 1
    n = Net(fresh)
    n.output(n.net.add_scatter(n.input(data), n.const(idx), n.input(updates), trt.ScatterMode.ND).get_output(0))
    expected = data.numpy().copy()
    expected[0, 2] = updates.numpy()[0]
    expected[1, 0] = updates.numpy()[1]
    torch.testing.assert_close(n.run(), torch.from_numpy(expected), **EXACT)
    n.build()


# ----------------------------------------------------------------------------- squeeze, unsqueeze

@pytest.mark.parametrize("axes,expected", [([0, 2], (3, 4)), ([-1], (1, 3, 1, 4))])
def test_squeeze(fresh, axes, expected):
    x = torch.randn(1, 3, 1, 4, 1) if axes == [-1] else torch.randn(1, 3, 1, 4)
    n = Net(fresh)
    n.output(n.net.add_squeeze(n.input(x), n.const(np.array(axes, dtype=np.int64))).get_output(0))
    out = n.run()
    torch.testing.assert_close(out, torch.from_numpy(x.numpy().reshape(expected)), **EXACT)
    assert out.shape == expected


def test_squeeze_without_axes_removes_every_unit_dim(fresh):
    x = torch.randn(1, 3, 1, 4)
    n = Net(fresh)
    n.output(n.net.add_squeeze(n.input(x)).get_output(0))
    torch.testing.assert_close(n.run(), x.reshape(3, 4), **EXACT)


@pytest.mark.parametrize("axes,expected", [([0, 3], (1, 2, 3, 1)), ([-1, 1], (2, 1, 3, 1))])
def test_unsqueeze(fresh, axes, expected):
    x = torch.randn(2, 3)
    n = Net(fresh)
    n.output(n.net.add_unsqueeze(n.input(x), n.const(np.array(axes, dtype=np.int32))).get_output(0))
    out = n.run()
    assert out.shape == expected
    torch.testing.assert_close(out, torch.from_numpy(x.numpy().reshape(expected)), **EXACT)
    if axes == [0, 3]:
        n.build()


# ----------------------------------------------------------------------------- einsum, matrix multiply

@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij->bji", [(2, 3, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("bik,bkj->bij", [(2, 3, 4), (2, 4, 5)]),
    ("ij->", [(3, 4)]),
])
def test_einsum(fresh, equation, shapes):
    xs = [torch.randn(*s) for s in shapes]
    n = Net(fresh)
    n.output(n.net.add_einsum([n.input(x) for x in xs], equation).get_output(0))
    expected = torch.from_numpy(np.asarray(np.einsum(equation, *[x.double().numpy() for x in xs]))).float()
    torch.testing.assert_close(n.run(), expected, **F32)
    if equation == "bik,bkj->bij":
        n.build()


MO = trt.MatrixOperation


@pytest.mark.parametrize("sa,op0,sb,op1,ref", [
    ((2, 3), MO.NONE, (3, 4), MO.NONE, lambda a, b: a @ b),
    ((3, 2), MO.TRANSPOSE, (3, 4), MO.NONE, lambda a, b: a.T @ b),
    ((2, 3), MO.NONE, (4, 3), MO.TRANSPOSE, lambda a, b: a @ b.T),
    ((1, 2, 3), MO.NONE, (4, 3, 5), MO.NONE, lambda a, b: np.matmul(a, b)),
    ((4, 3, 2), MO.TRANSPOSE, (1, 5, 3), MO.TRANSPOSE,
     lambda a, b: np.matmul(a.transpose(0, 2, 1), b.transpose(0, 2, 1))),
    ((2, 3), MO.NONE, (3,), MO.VECTOR, lambda a, b: a @ b),
    ((3,), MO.VECTOR, (3, 4), MO.NONE, lambda a, b: a @ b),
    ((3,), MO.VECTOR, (3,), MO.VECTOR, lambda a, b: np.dot(a, b)),
    ((4, 3), MO.VECTOR, (4, 3, 2), MO.NONE, lambda a, b: np.einsum("bk,bkn->bn", a, b)),
    ((4, 2, 3), MO.NONE, (4, 3), MO.VECTOR, lambda a, b: np.einsum("bmk,bk->bm", a, b)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matrix_multiply(fresh, sa, op0, sb, op1, ref, dtype):
    a, b = torch.randn(*sa).to(dtype), torch.randn(*sb).to(dtype)
    n = Net(fresh)
    n.output(n.net.add_matrix_multiply(n.input(a), op0, n.input(b), op1).get_output(0))
    expected = torch.from_numpy(np.asarray(ref(a.double().numpy(), b.double().numpy()))).to(dtype)
    torch.testing.assert_close(n.run(), expected, **(F32 if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)))
    if dtype == torch.float32 and (op0, op1) in ((MO.TRANSPOSE, MO.TRANSPOSE), (MO.NONE, MO.VECTOR)):
        n.build()


# ----------------------------------------------------------------------------- cumulative, top-k, one-hot, non-zero

@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [1, -1])
def test_cumulative(fresh, exclusive, reverse, axis):
    x = torch.randint(-5, 6, (2, 3, 4)).float()
    n = Net(fresh)
    layer = n.net.add_cumulative(n.input(x), n.const(np.array(axis, dtype=np.int32)),
                                 trt.CumulativeOperation.SUM, exclusive, reverse)
    n.output(layer.get_output(0))
    xs = np.moveaxis(x.numpy(), axis, -1)
    expected = np.zeros_like(xs)
    size = xs.shape[-1]
    for j in range(size):  # the docstring's index ranges, literally
        rng = {(False, False): range(0, j + 1), (False, True): range(j, size),
               (True, False): range(0, j), (True, True): range(j + 1, size)}[(exclusive, reverse)]
        expected[..., j] = sum((xs[..., i] for i in rng), np.zeros(xs.shape[:-1], dtype=xs.dtype))
    torch.testing.assert_close(n.run(), torch.from_numpy(np.moveaxis(expected, -1, axis)), **EXACT)
    if exclusive and reverse and axis == 1:
        n.build()


@pytest.mark.parametrize("op", [trt.TopKOperation.MAX, trt.TopKOperation.MIN])
@pytest.mark.parametrize("axis,k", [(1, 2), (2, 4)])
def test_topk(fresh, op, axis, k):
    x = torch.randperm(2 * 3 * 5).float().reshape(2, 3, 5)
    n = Net(fresh)
    layer = n.net.add_topk(n.input(x), op, k, 1 << axis)
    n.output(layer.get_output(0), layer.get_output(1))
    values, indices = n.run()
    xs = x.numpy()
    order = np.argsort(-xs if op == trt.TopKOperation.MAX else xs, axis=axis)
    ref_idx = np.take(order, np.arange(k), axis=axis)
    assert indices.dtype == torch.int32
    torch.testing.assert_close(indices, torch.from_numpy(ref_idx.astype(np.int32)), **EXACT)
    torch.testing.assert_close(values, torch.from_numpy(np.take_along_axis(xs, ref_idx, axis=axis)), **EXACT)
    if op == trt.TopKOperation.MIN and axis == 2:
        n.build()


def test_topk_k_from_input(fresh):
    x = torch.tensor([[3.0, 9.0, 1.0, 7.0], [0.5, -1.0, 2.0, 8.0]])
    n = Net(fresh)
    layer = n.net.add_topk(n.input(x), trt.TopKOperation.MAX, 1, 1 << 1)
    layer.set_input(1, n.const(np.array(3, dtype=np.int32)))
    layer.indices_type = trt.int64
    n.output(layer.get_output(0), layer.get_output(1))
    values, indices = n.run()
    torch.testing.assert_close(values, torch.tensor([[9.0, 7.0, 3.0], [8.0, 2.0, 0.5]]), **EXACT)
    torch.testing.assert_close(indices, torch.tensor([[1, 3, 0], [3, 2, 0]]), **EXACT)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_one_hot(fresh, axis):
    idx = torch.tensor([[0, 3, -1], [2, 1, 0]], dtype=torch.int32)
    depth = 4
    n = Net(fresh)
    layer = n.net.add_one_hot(n.input(idx), n.const(np.array([0.5, 9.0], dtype=np.float32)),
                              n.const(np.array(depth, dtype=np.int32)), axis)
    n.output(layer.get_output(0))
    hot = np.full((2, 3, depth), 0.5, dtype=np.float32)
    for i, j in np.ndindex(2, 3):
        hot[i, j, int(idx[i, j]) % depth] = 9.0  # a negative index counts from the end (ONNX OneHot)
    expected = np.moveaxis(hot, -1, axis)
    torch.testing.assert_close(n.run(), torch.from_numpy(np.ascontiguousarray(expected)), **EXACT)
    if axis == -1:
        n.build()


def test_non_zero(fresh):
    x = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, -3.0]])
    n = Net(fresh)
    n.output(n.net.add_non_zero(n.input(x)).get_output(0))
    out = n.run()
    torch.testing.assert_close(out, torch.tensor([[0, 1, 1], [1, 0, 2]], dtype=torch.int32), **EXACT)
    # No build: TensorRT-RTX 1.7 refuses to build a network whose output has a data-dependent
    # shape (NonZero's count) on these machines (build_serialized_network returns None).


@pytest.mark.parametrize("batch_first", [False, True])
def test_reverse_sequence(fresh, batch_first):
    x = torch.arange(40, dtype=torch.float32).reshape(4, 5, 2)  # [sequence, batch, feature] with the default axes
    lens = torch.tensor([4, 1, 2, 3, 0], dtype=torch.int32)
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    n = Net(fresh)
    layer = n.net.add_reverse_sequence(n.input(x), n.input(lens))
    assert (layer.batch_axis, layer.sequence_axis) == (1, 0)
    if batch_first:
        layer.batch_axis, layer.sequence_axis = 0, 1
    n.output(layer.get_output(0))
    xs = x.numpy() if not batch_first else x.numpy().transpose(1, 0, 2)
    expected = xs.copy()
    for b, length in enumerate(lens.tolist()):
        expected[:length, b] = xs[:length, b][::-1]
    if batch_first:
        expected = expected.transpose(1, 0, 2)
    torch.testing.assert_close(n.run(), torch.from_numpy(np.ascontiguousarray(expected)), **EXACT)
    if batch_first:
        n.build()


# ----------------------------------------------------------------------------- assertion, if-conditional, loops

def test_assertion_names_layer_and_message(fresh):
    x = torch.zeros(2, 3)
    n = Net(fresh)
    shp = n.net.add_shape(n.input(x)).get_output(0)
    eq = n.net.add_elementwise(shp, n.const(np.array([2, 4], dtype=np.int64)), EW.EQUAL).get_output(0)
    layer = n.net.add_assertion(eq, "second dim must be 4")
    layer.name = "check_dims"
    n.output(n.net.add_identity(n.net.get_input(0)).get_output(0))
    with pytest.raises(AssertionFailedError, match=r"'check_dims'.*second dim must be 4"):
        n.run()
    with pytest.raises(AssertionError, match="refused to build"):  # TensorRT agrees: the assertion fails at build time
        n.build()


def test_assertion_passes_when_true(fresh):
    x = torch.zeros(2, 3)
    n = Net(fresh)
    shp = n.net.add_shape(n.input(x)).get_output(0)
    eq = n.net.add_elementwise(shp, n.const(np.array([2, 3], dtype=np.int64)), EW.EQUAL).get_output(0)
    n.net.add_assertion(eq, "never")
    n.output(n.net.add_unary(n.net.get_input(0), UN.EXP).get_output(0))
    torch.testing.assert_close(n.run(), torch.ones(2, 3), **EXACT)


@pytest.mark.parametrize("flag", [True, False])
def test_if_conditional(fresh, flag):
    x = torch.randn(2, 3)
    n = Net(fresh)
    xi = n.input(x)
    cond = n.net.add_if_conditional()
    cond.set_condition(n.input(torch.tensor(flag)))
    inner = cond.add_input(xi).get_output(0)
    then = n.net.add_unary(inner, UN.EXP).get_output(0)
    other = n.net.add_unary(inner, UN.NEG).get_output(0)
    n.output(cond.add_output(then, other).get_output(0))
    torch.testing.assert_close(n.run(), x.exp() if flag else -x, **F32)
    if flag:
        n.build()


def test_if_conditional_rerun_with_other_condition(fresh):
    from torch2x.interpreter import Interpreter

    x = torch.randn(4)
    n = Net(fresh)
    xi = n.input(x)
    flag = n.input(torch.tensor(True))
    cond = n.net.add_if_conditional()
    cond.set_condition(flag)
    inner = cond.add_input(xi).get_output(0)
    out = cond.add_output(n.net.add_unary(inner, UN.ABS).get_output(0), n.net.add_unary(inner, UN.NEG).get_output(0))
    n.output(out.get_output(0))
    run = Interpreter(n.net)
    torch.testing.assert_close(run({"in0": x, "in1": torch.tensor(True)})["out0"], x.abs(), **EXACT)
    torch.testing.assert_close(run({"in0": x, "in1": torch.tensor(False)})["out0"], -x, **EXACT)


def test_loop_is_unsupported(fresh):
    x = torch.ones(3)
    n = Net(fresh)
    xi = n.input(x)
    loop = n.net.add_loop()
    loop.add_trip_limit(n.const(np.array(4, dtype=np.int32)), trt.TripLimit.COUNT)
    rec = loop.add_recurrence(xi)
    nxt = n.net.add_elementwise(rec.get_output(0), xi, EW.SUM).get_output(0)
    rec.set_input(1, nxt)
    n.output(loop.add_loop_output(rec.get_output(0), trt.LoopOutput.LAST_VALUE).get_output(0))
    with pytest.raises(UnsupportedLayerError):
        n.run()


def test_fill_linspace_static_beta_needs_1d_output(fresh):
    n = Net(fresh)
    n.input(torch.zeros(1))
    layer = n.net.add_fill((2, 2), trt.FillOperation.LINSPACE, trt.int64)
    n.output(layer.get_output(0))
    with pytest.raises(LayerExecutionError, match="static beta needs a 1-D output"):
        n.run()


# ----------------------------------------------------------------------------- TensorRT's own arithmetic as reference
#
# TensorRT folds small integer "shape tensors" while it infers shapes at network-definition
# time. Feeding such a tensor (plus an offset) into a fill layer's dimensions makes the values
# TensorRT computed readable as that fill's inferred shape: an oracle independent of this
# project and of PyTorch. Each case builds its subgraph twice: once into the oracle network,
# once into the interpreted one.

OFFSET = 20000


def _folded_by_tensorrt(builder, make) -> list:
    from torch2x.flavour import create_network

    net = create_network(builder)

    def const(array):
        array = np.array(array, copy=True, order="C")
        return net.add_constant(array.shape, array).get_output(0)

    t = make(net, const)
    if len(t.shape) != 1:
        t = net.add_shuffle(t)
        t.reshape_dims = (-1,)
        t = t.get_output(0)
    if t.dtype not in (trt.int32, trt.int64):
        t = net.add_cast(t, trt.int64).get_output(0)
    values = []
    for start in range(0, t.shape[0], 8):  # a fill has at most Dims.MAX_DIMS = 8 dimensions
        length = min(8, t.shape[0] - start)
        part = net.add_slice(t, (start,), (length,), (1,)).get_output(0)
        offset = const(np.full(length, OFFSET, dtype=np.int64 if t.dtype == trt.int64 else np.int32))
        part = net.add_elementwise(part, offset, EW.SUM).get_output(0)
        fill = net.add_fill((0,) * length, trt.FillOperation.LINSPACE, trt.float32)
        fill.set_input(0, part)
        fill.set_input(1, const(np.array(0, dtype=np.float32)))
        fill.set_input(2, const(np.ones(length, dtype=np.float32)))
        dims = list(fill.get_output(0).shape)
        assert all(d >= 0 for d in dims), f"TensorRT did not fold the values: {dims}"
        values += [d - OFFSET for d in dims]
    return values


def _interpreted(fresh, make):
    n = Net(fresh)
    n.input(torch.zeros(1))
    n.output(make(n.net, n.const))
    return n.run()


def _ew(op, a, b, dt=np.int64):
    return lambda net, c: net.add_elementwise(c(np.array(a, dtype=dt)), c(np.array(b, dtype=dt)), op).get_output(0)


def _slice(mode, start, size, stride):
    # (a FILL slice of a shape tensor only folds with the default zero fill value)
    def make(net, c):
        layer = net.add_slice(c(np.arange(5, dtype=np.int64) * 3), (start,), (size,), (stride,))
        layer.mode = mode
        return layer.get_output(0)
    return make


def _gather(mode, data, idx, axis=0, ne=0):
    def make(net, c):
        layer = net.add_gather_v2(c(np.array(data, dtype=np.int64)), c(np.array(idx, dtype=np.int32)), mode)
        if mode != trt.GatherMode.ND:
            layer.axis = axis
        layer.num_elementwise_dims = ne
        return layer.get_output(0)
    return make


def _unary(op, values):
    return lambda net, c: net.add_unary(c(np.array(values, dtype=np.int64)), op).get_output(0)


def _reduce(op, keep):
    return lambda net, c: net.add_reduce(c(np.array([[3, -1, 4], [1, -5, 9]], dtype=np.int64)), op, 1 << 1,
                                         keep).get_output(0)


def _one_hot(axis):
    return lambda net, c: net.add_one_hot(c(np.array([[1, -1], [0, 2]], dtype=np.int32)),
                                          c(np.array([2, 7], dtype=np.int64)),
                                          c(np.array(3, dtype=np.int32)), axis).get_output(0)


def _linspace(net, c):
    layer = net.add_fill((3, 2), trt.FillOperation.LINSPACE, trt.int64)
    layer.set_input(1, c(np.array(-4, dtype=np.int64)))
    layer.set_input(2, c(np.array([5, 2], dtype=np.int64)))
    return layer.get_output(0)


def _slice_2d_axes(net, c):
    layer = net.add_slice(c(np.arange(12, dtype=np.int64).reshape(3, 4)), (0,), (1,), (1,))
    layer.set_input(1, c(np.array([3, -1], dtype=np.int64)))
    layer.set_input(2, c(np.array([2, 3], dtype=np.int64)))
    layer.set_input(3, c(np.array([-2, 1], dtype=np.int64)))
    layer.set_input(5, c(np.array([1, 0], dtype=np.int64)))
    layer.mode = SM.WRAP
    return layer.get_output(0)


def _shuffle_second_transpose(net, c):
    layer = net.add_shuffle(c(np.arange(12, dtype=np.int64).reshape(2, 3, 2)))
    layer.first_transpose = (2, 0, 1)
    layer.reshape_dims = (0, 6)
    layer.second_transpose = (1, 0)
    return layer.get_output(0)


def _shuffle(net, c):
    layer = net.add_shuffle(c(np.arange(6, dtype=np.int64).reshape(2, 3)))
    layer.first_transpose = (1, 0)
    layer.reshape_dims = (0, -1)
    return layer.get_output(0)


A, B = [-7, 7, -9, 9, 0, 5, -6], [2, -2, 4, -4, 3, -5, 3]
ORACLE_CASES = {
    **{f"ew_{op.name}_{np.dtype(dt).name}": _ew(op, A, B, dt)
       for op in (EW.SUM, EW.SUB, EW.PROD, EW.MAX, EW.MIN, EW.DIV, EW.FLOOR_DIV) for dt in (np.int32, np.int64)},
    "ew_POW": _ew(EW.POW, [2, -3, 3, 0, -1], [3, 3, 0, 2, 5]),
    "ew_POW_negative_exponent": _ew(EW.POW, [2, 1, -1, -2, -1, 5], [-1, -3, -1, -2, -2, -1], np.int32),
    "one_hot_out_of_range": lambda net, c: net.add_one_hot(
        c(np.array([3, -4, 1], dtype=np.int32)), c(np.array([0, 1], dtype=np.int32)), c(np.array(3, dtype=np.int32)), 0
    ).get_output(0),
    **{f"unary_{op.name}": _unary(op, [-3, 0, 4]) for op in (UN.ABS, UN.NEG, UN.SIGN)},
    **{f"slice_{m.name}": _slice(m, -3, 9, 1) for m in (SM.WRAP, SM.CLAMP, SM.REFLECT, SM.FILL)},
    "slice_WRAP_stride": _slice(SM.WRAP, 7, 6, -3),
    "slice_REFLECT_stride": _slice(SM.REFLECT, -9, 7, 4),
    "slice_negative_stride": _slice(SM.STRICT_BOUNDS, 4, 3, -2),
    "gather_default_negative": _gather(trt.GatherMode.DEFAULT, [10, 11, 12, 13, 14], [-1, -5, 2]),
    "gather_default_axis1": _gather(trt.GatherMode.DEFAULT, [[1, 2, 3], [4, 5, 6]], [[-1], [0]], axis=1),
    "gather_default_elementwise": _gather(trt.GatherMode.DEFAULT, [[1, 2, 3], [4, 5, 6]], [[2, -3], [1, -1]],
                                          axis=1, ne=1),
    "gather_default_elementwise_broadcast": _gather(trt.GatherMode.DEFAULT, [[1, 2, 3]], [[0], [2], [-1]],
                                                    axis=1, ne=1),
    "gather_element": _gather(trt.GatherMode.ELEMENT, [[1, 2, 3], [4, 5, 6]], [[2, -1, 0], [-3, 1, 1]], axis=1),
    "gather_nd": _gather(trt.GatherMode.ND, [[1, 2, 3], [4, 5, 6]], [[1, -1], [0, 1], [-2, -3]]),
    "gather_nd_rows": _gather(trt.GatherMode.ND, [[1, 2, 3], [4, 5, 6]], [[-1], [0]]),
    "gather_nd_batched": _gather(trt.GatherMode.ND, [[1, 2, 3], [4, 5, 6]], [[2], [-3]], ne=1),
    **{f"reduce_{op.name}_{keep}": _reduce(op, keep)
       for op in (RED.SUM, RED.PROD, RED.MAX, RED.MIN) for keep in (True, False)},
    **{f"one_hot_{axis}": _one_hot(axis) for axis in (0, 1, -1)},
    "linspace_delta_per_dim": _linspace,
    "shuffle": _shuffle,
    "shuffle_second_transpose": _shuffle_second_transpose,
    "slice_dynamic_axes_wrap": _slice_2d_axes,
    "squeeze_unsqueeze": lambda net, c: net.add_squeeze(net.add_unsqueeze(
        c(np.array([4, -5], dtype=np.int64)), c(np.array([0, -1], dtype=np.int64))).get_output(0),
        c(np.array([-1], dtype=np.int64))).get_output(0),
    "concat": lambda net, c: net.add_concatenation([c(np.array([1], dtype=np.int64)),
                                                    c(np.array([-2, 3], dtype=np.int64))]).get_output(0),
    "select": lambda net, c: net.add_select(c(np.array([True, False, True])), c(np.array([1, 2, 3], dtype=np.int64)),
                                            c(np.array([-5], dtype=np.int64))).get_output(0),
    "cast_float_to_int_truncates": lambda net, c: net.add_cast(
        c(np.array([-2.5, -1.5, 1.5, 2.7, -0.9], dtype=np.float32)), trt.int64).get_output(0),
    "compare": lambda net, c: net.add_cast(_ew(EW.GREATER, A, B)(net, c), trt.int32).get_output(0),
}


@pytest.mark.parametrize("make", list(ORACLE_CASES.values()), ids=list(ORACLE_CASES))
def test_matches_tensorrt_constant_folding(fresh, make):
    expected = _folded_by_tensorrt(fresh.builder, make)
    out = _interpreted(fresh, make)
    assert out.reshape(-1).tolist() == expected


# Float shape tensors fold too. Scaled by 1000 and cast (truncating) to int64 on both sides, they
# check the float rules to 1e-3; ``atol=1`` allows one unit where TensorRT's folding and PyTorch
# differ in the last float32 bit right at a truncation boundary.
SCALE = 1000.0
XS = [-2.0, -0.5, 0.0, 0.25, 0.5, 1.0, 3.0]
POSITIVE = [0.25, 0.5, 1.0, 2.0, 0.1, 0.3, 0.9]
IN_UNIT = [-0.9, -0.5, -0.1, 0.0, 0.2, 0.6, 0.95]


def _scaled(make):
    def scaled(net, c):
        t = make(net, c)
        factor = c(np.full([1] * len(t.shape), SCALE, dtype=np.float32))
        return net.add_cast(net.add_elementwise(t, factor, EW.PROD).get_output(0), trt.int64).get_output(0)
    return scaled


def _act(kind, alpha=0.0, beta=0.0):
    def make(net, c):
        layer = net.add_activation(c(np.array(XS, dtype=np.float32)), kind)
        layer.alpha, layer.beta = alpha, beta
        return layer.get_output(0)
    return make


def _funary(op, values):
    return lambda net, c: net.add_unary(c(np.array(values, dtype=np.float32)), op).get_output(0)


FLOAT_ORACLE_CASES = {
    **{f"act_{k.name}": _act(k, a, b) for k, a, b in [
        (ACT.RELU, 0, 0), (ACT.SIGMOID, 0, 0), (ACT.TANH, 0, 0), (ACT.LEAKY_RELU, 0.1, 0), (ACT.ELU, 0.7, 0),
        (ACT.SELU, 1.5, 2.0), (ACT.SOFTSIGN, 0, 0), (ACT.SOFTPLUS, 1.5, 2.0), (ACT.CLIP, -0.5, 1.25),
        (ACT.HARD_SIGMOID, 0.2, 0.5), (ACT.SCALED_TANH, 1.7, 0.66), (ACT.THRESHOLDED_RELU, 0.5, 0),
        (ACT.GELU_ERF, 0, 0), (ACT.GELU_TANH, 0, 0)]},
    **{f"unary_{op.name}": _funary(op, XS) for op in (
        UN.EXP, UN.ABS, UN.NEG, UN.SIN, UN.COS, UN.ATAN, UN.SINH, UN.COSH, UN.ASINH, UN.ERF, UN.SIGN)},
    **{f"unary_{op.name}": _funary(op, POSITIVE) for op in (UN.LOG, UN.RECIP, UN.TAN)},
    **{f"unary_{op.name}": _funary(op, IN_UNIT) for op in (UN.ASIN, UN.ACOS, UN.ATANH)},
    "unary_ACOSH": _funary(UN.ACOSH, [1.0, 1.5, 2.0, 3.0, 10.0]),
    **{f"unary_{op.name}": _funary(op, [0.5, 1.5, 2.5, -0.5, -2.5, -1.7, 2.0004])
       for op in (UN.ROUND, UN.FLOOR, UN.CEIL)},
    **{f"ew_{op.name}_float": _ew(op, [-7.0, 7.0, 9.0, 2.5, -1.25], [2.0, -2.0, 4.0, 2.0, 0.5], np.float32)
       for op in (EW.SUM, EW.SUB, EW.PROD, EW.MAX, EW.MIN, EW.DIV, EW.FLOOR_DIV)},
    "ew_POW_float": _ew(EW.POW, [2.0, 0.5, 3.0, 2.5, 4.0], [3.0, -2.0, 0.0, 1.5, -0.5], np.float32),
    **{f"reduce_{op.name}_float": (lambda red: lambda net, c: net.add_reduce(
        c(np.array([[1.5, -2.25, 4.0], [0.5, 3.0, -1.0]], dtype=np.float32)), red, 1 << 1, False).get_output(0))(op)
       for op in (RED.SUM, RED.PROD, RED.MAX, RED.MIN, RED.AVG)},
}


@pytest.mark.parametrize("make", list(FLOAT_ORACLE_CASES.values()), ids=list(FLOAT_ORACLE_CASES))
def test_float_rules_match_tensorrt_constant_folding(fresh, make):
    expected = _folded_by_tensorrt(fresh.builder, _scaled(make))
    out = _interpreted(fresh, _scaled(make))
    torch.testing.assert_close(out.reshape(-1), torch.tensor(expected), rtol=0, atol=1)


def test_dynamic_shapes_flow_through_shape_slice_shuffle(fresh):
    # -1 dims in the declared input: the rules take every size from the runtime values.
    net = fresh.network
    x = net.add_input("x", trt.float32, (-1, 3, -1))
    shp = net.add_shape(x).get_output(0)
    half = net.add_elementwise(shp, net.add_constant((3,), np.array([1, 1, 2], dtype=np.int64)).get_output(0),
                               EW.FLOOR_DIV).get_output(0)
    sl = net.add_slice(x, (0, 0, 0), (0, 0, 0), (1, 1, 1))
    sl.set_input(2, half)
    sh = net.add_shuffle(sl.get_output(0))
    sh.reshape_dims = (0, -1)
    out = sh.get_output(0)
    out.name = "y"
    net.mark_output(out)
    assert tuple(out.shape) == (-1, -1)
    for shape in [(2, 3, 4), (5, 3, 7)]:
        value = torch.randn(*shape)
        expected = value[:, :, : shape[2] // 2].reshape(shape[0], -1)
        torch.testing.assert_close(interpret(net, {"x": value})["y"], expected, **EXACT)


def test_bfloat16_constant_is_reported_unsupported(fresh):
    values = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    n = Net(fresh)
    n.input(torch.zeros(1))
    n.output(n.net.add_constant((3,), trt.Weights(trt.bfloat16, values.data_ptr(), 3)).get_output(0))
    with pytest.raises(UnsupportedLayerError, match="BF16 weights cannot be read back"):
        n.run()


def test_constant_dtypes_read_back(fresh):
    n = Net(fresh)
    n.input(torch.zeros(1))
    arrays = [np.array([1.5, -2.0], dtype=np.float16), np.array([[1, -2], [3, 4]], dtype=np.int8),
              np.array([True, False]), np.array(7, dtype=np.int64)]
    n.output(*[n.const(a) for a in arrays])
    for out, a in zip(n.run(), arrays):
        torch.testing.assert_close(out, torch.from_numpy(a), **EXACT)


# ----------------------------------------------------------------------------- NVIDIA's own op mapping
#
# Tiny PyTorch functions exported to ONNX and parsed by trt.OnnxParser: the parser picks the
# layers and their settings (Tile -> WRAP slice, reflect/replicate Pad -> if-conditionals and
# gathers on shape tensors, flip -> negative-stride slice, ...), so these check the rules on
# networks this project did not build, against PyTorch eager.

_IDX = torch.tensor([[2, 0, 1, 1], [3, 3, 0, 2]])
ONNX_CASES = {
    "where_expand": lambda x: torch.where(x > 0, x, torch.tensor([[-1.0], [-2.0]]).expand(2, 5)),
    "cumsum": lambda x: torch.cumsum(x, 1),
    "topk": lambda x: torch.topk(x, 3, dim=-1).values + torch.topk(x, 3, dim=-1).indices.float(),
    "gather_elements": lambda x: torch.gather(x, 1, _IDX),
    "index_select": lambda x: x[:, [4, 0, -1]],
    "tile": lambda x: x.repeat(2, 3),
    "pad_reflect": lambda x: torch.nn.functional.pad(x.unsqueeze(0), (3, 2), mode="reflect").squeeze(0),
    "pad_replicate": lambda x: torch.nn.functional.pad(x.unsqueeze(0), (3, 2), mode="replicate").squeeze(0),
    "pad_circular": lambda x: torch.nn.functional.pad(x.unsqueeze(0), (3, 2), mode="circular").squeeze(0),
    "einsum": lambda x: torch.einsum("ij,kj->ik", x, x),
    "softmax": lambda x: torch.softmax(x, 1) + torch.log_softmax(x, 0),
    "flip_stride": lambda x: x.flip(1)[:, ::2],
    "scatter": lambda x: torch.zeros(2, 5).scatter(1, _IDX[:, :2], x[:, :2]),
    # (SELU is left out: the parsed layer carries alpha=1.6732, beta=1.0507, 4e-5 off PyTorch's constants)
    "activations": lambda x: (torch.nn.functional.elu(x) + torch.nn.functional.softplus(x, beta=2.0)
                              + torch.nn.functional.hardsigmoid(x) + torch.nn.functional.leaky_relu(x, 0.2)
                              + torch.nn.functional.gelu(x) + torch.nn.functional.hardtanh(x, -0.5, 0.5)),
    "int_div": lambda x: (torch.div((x * 10).int(), 3, rounding_mode="floor")
                          + torch.div((x * 10).int(), 3, rounding_mode="trunc")).float(),
    "reduce": lambda x: x.mean(1, keepdim=True) + x.amax(0) - x.prod(1, keepdim=True) + x.sum() + x.amin(),
    "shape_ops": lambda x: (torch.cat([x, x * 2], 0).reshape(4, 5).permute(1, 0).unsqueeze(0).squeeze(0)
                            .chunk(2, dim=1)[1]),
    "batched_matmul": lambda x: torch.matmul(x.unsqueeze(0), x.T.unsqueeze(0).expand(3, 5, 2)),
    "one_hot": lambda x: torch.nn.functional.one_hot((x.abs() * 2).long().clamp(max=3), 4).float(),
    "round_sign": lambda x: torch.round(x * 2) + torch.sign(x) + torch.floor(x) + torch.ceil(x),
    # (torch.nonzero is not here: the parser needs a NonZero plugin TensorRT-RTX does not ship)
}


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn", list(ONNX_CASES.values()), ids=list(ONNX_CASES))
def test_onnx_parsed_tensor_ops_match_pytorch(fn):
    from onnx_util import onnx_network

    x = torch.randn(2, 5)
    parsed = onnx_network(_Fn(fn), x)
    out = interpret(parsed.network, {parsed.input_name: x})[parsed.output_name]
    torch.testing.assert_close(out, fn(x), rtol=1e-5, atol=1e-5)
