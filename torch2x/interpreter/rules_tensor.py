"""Rules for data movement and arithmetic layers (constant, identity, cast, elementwise, shuffle, ...).

Each rule follows TensorRT's documented semantics (the Python docstrings of the layer
classes, the ``NvInfer.h`` enum comments and the operator reference). Where TensorRT's
own documents disagree, the comment at the rule says which reading was chosen and why.
"""
from __future__ import annotations

import math
import zlib

import torch

from ..dtypes import to_torch
from ..flavour import trt
from .core import LayerExecutionError, UnsupportedLayerError, rule

LT = trt.LayerType
EW = trt.ElementWiseOperation
UN = trt.UnaryOperation
ACT = trt.ActivationType
RED = trt.ReduceOperation
SM = trt.SampleMode
GM = trt.GatherMode
MO = trt.MatrixOperation


class AssertionFailedError(LayerExecutionError):
    """An ``IAssertionLayer`` saw a false element in its condition."""


# ----------------------------------------------------------------------------- helpers

def _axes_from_mask(mask: int, rank: int) -> list:
    """TensorRT axes bitmask (bit i = axis i) -> sorted list of axes."""
    axes = [i for i in range(rank) if (mask >> i) & 1]
    if mask >> rank:
        raise ValueError(f"axes bitmask {mask:#b} names an axis beyond rank {rank}")
    return axes


def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Compute half/bfloat16 in float32 (TensorRT kernels accumulate in float32; the core casts back)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Floating view for ops that are only defined on floats (integers go through float64)."""
    if x.is_floating_point():
        return _wide(x)
    return x.double()


def _ints(t: torch.Tensor) -> list:
    return [int(v) for v in t.reshape(-1).tolist()]


def _wrap_negative(idx: torch.Tensor, size) -> torch.Tensor:
    """Negative indices count from the end of the axis, as in ONNX.

    The TensorRT docs only list ``0 <= index < dim``; TensorRT's own constant folding of
    gather / one-hot on shape tensors wraps negatives this way (see the tests).
    """
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx)


# ----------------------------------------------------------------------------- constant, identity, cast

@rule(LT.CONSTANT)
def constant(layer, inputs, env):
    def make():
        weights = layer.weights
        if not hasattr(weights, "copy"):
            # The Python API returns types numpy cannot hold (bfloat16, FP8, INT4) as an opaque
            # trt.Weights with no way to read its bytes.
            raise UnsupportedLayerError(
                layer, f"its {weights.dtype} weights cannot be read back through TensorRT's Python API; "
                "a float32 constant followed by a cast layer can be interpreted"
            )
        return torch.from_numpy(weights.copy()).reshape(tuple(layer.shape)).to(env.device)

    return env.cached(layer, "weights", make)


@rule(LT.IDENTITY)
def identity(layer, inputs, env):
    return inputs[0]


@rule(LT.CAST)
def cast(layer, inputs, env):
    return inputs[0].to(to_torch(layer.to_type))


# ----------------------------------------------------------------------------- elementwise

def _div(a, b):
    if a.is_floating_point():
        return a / b
    # TensorRT integer kDIV rounds toward zero, like C (NVIDIA in onnx/onnx#4016, and TensorRT's own
    # constant folding); kFLOOR_DIV rounds down.
    return torch.div(a, b, rounding_mode="trunc")


def _floor_div(a, b):
    if a.is_floating_point():
        return torch.floor(a / b)
    return torch.div(a, b, rounding_mode="floor")


def _pow(a, b):
    if a.is_floating_point():
        return torch.pow(a, b)
    # Integer kPOW truncates the real power (TensorRT's constant folding: 2 ** -1 == 0,
    # (-1) ** -1 == -1); torch refuses negative integer exponents.
    a, b = torch.broadcast_tensors(a, b)
    direct = torch.pow(a, b.clamp(min=0))
    reciprocal = torch.where(a == 1, 1, torch.where(a == -1, 1 - 2 * (b.abs() % 2), 0)).to(direct.dtype)
    return torch.where(b < 0, reciprocal, direct)


_ELEMENTWISE = {
    EW.SUM: torch.add,
    EW.PROD: torch.mul,
    EW.MAX: torch.maximum,
    EW.MIN: torch.minimum,
    EW.SUB: torch.sub,
    EW.DIV: _div,
    EW.POW: _pow,
    EW.FLOOR_DIV: _floor_div,
    EW.AND: torch.logical_and,
    EW.OR: torch.logical_or,
    EW.XOR: torch.logical_xor,
    EW.EQUAL: torch.eq,
    EW.GREATER: torch.gt,
    EW.LESS: torch.lt,
}


@rule(LT.ELEMENTWISE)
def elementwise(layer, inputs, env):
    fn = _ELEMENTWISE.get(layer.op)
    if fn is None:
        raise UnsupportedLayerError(layer, f"elementwise operation {layer.op}")
    a, b = inputs[0], inputs[1]
    if layer.op in (EW.SUM, EW.PROD, EW.SUB, EW.DIV, EW.POW, EW.FLOOR_DIV):
        a, b = _wide(a), _wide(b)
    return fn(a, b)


# ----------------------------------------------------------------------------- unary

_UNARY = {
    UN.EXP: torch.exp, UN.LOG: torch.log, UN.SQRT: torch.sqrt, UN.RECIP: torch.reciprocal,
    UN.SIN: torch.sin, UN.COS: torch.cos, UN.TAN: torch.tan,
    UN.SINH: torch.sinh, UN.COSH: torch.cosh,
    UN.ASIN: torch.asin, UN.ACOS: torch.acos, UN.ATAN: torch.atan,
    UN.ASINH: torch.asinh, UN.ACOSH: torch.acosh, UN.ATANH: torch.atanh,
    UN.CEIL: torch.ceil, UN.FLOOR: torch.floor, UN.ERF: torch.erf,
    # torch.round rounds half to even, which is TensorRT's kROUND.
    UN.ROUND: torch.round,
}
_UNARY_KEEP_INT = {UN.ABS: torch.abs, UN.NEG: torch.neg, UN.SIGN: torch.sign}


@rule(LT.UNARY)
def unary(layer, inputs, env):
    x, op = inputs[0], layer.op
    if op == UN.NOT:
        return torch.logical_not(x) if x.dtype == torch.bool else torch.bitwise_not(x)
    if op == UN.ISINF:
        return torch.isinf(x)
    if op == UN.ISNAN:
        return torch.isnan(x)
    if op in _UNARY_KEEP_INT:
        return _UNARY_KEEP_INT[op](_wide(x))
    if op in (UN.CEIL, UN.FLOOR, UN.ROUND) and not x.is_floating_point():
        return x
    fn = _UNARY.get(op)
    if fn is None:
        raise UnsupportedLayerError(layer, f"unary operation {op}")
    return fn(_as_float(x))


# ----------------------------------------------------------------------------- activation

def _activation(kind, x, alpha, beta):
    if kind == ACT.RELU:
        return torch.relu(x)
    if kind == ACT.SIGMOID:
        return torch.sigmoid(x)
    if kind == ACT.TANH:
        return torch.tanh(x)
    if kind == ACT.LEAKY_RELU:
        return torch.where(x >= 0, x, alpha * x)
    if kind == ACT.ELU:
        return torch.where(x >= 0, x, alpha * torch.expm1(x))
    if kind == ACT.SELU:
        return torch.where(x > 0, beta * x, beta * (alpha * torch.exp(x) - alpha))
    if kind == ACT.SOFTSIGN:
        return x / (1 + x.abs())
    if kind == ACT.SOFTPLUS:
        # alpha * log(exp(beta * x) + 1), without overflow for large beta * x
        return alpha * torch.logaddexp(beta * x, torch.zeros_like(x))
    if kind == ACT.CLIP:
        # max(alpha, min(beta, x)): alpha wins when alpha > beta, unlike torch.clamp's argument check.
        return x.clamp(max=beta).clamp(min=alpha)
    if kind == ACT.HARD_SIGMOID:
        return (alpha * x + beta).clamp(max=1.0).clamp(min=0.0)
    if kind == ACT.SCALED_TANH:
        return alpha * torch.tanh(beta * x)
    if kind == ACT.THRESHOLDED_RELU:
        # NvInfer.h: "x > alpha ? x : 0" (ONNX ThresholdedRelu). The operator page's "max(0, x - alpha)"
        # contradicts it; TensorRT's constant folding agrees with the header (see the tests).
        return torch.where(x > alpha, x, torch.zeros_like(x))
    if kind == ACT.GELU_ERF:
        return 0.5 * x * (1 + torch.erf(x * math.sqrt(0.5)))
    if kind == ACT.GELU_TANH:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (0.044715 * x ** 3 + x)))
    return None


@rule(LT.ACTIVATION)
def activation(layer, inputs, env):
    kind = layer.type  # on IActivationLayer, ``type`` is the ActivationType
    out = _activation(kind, _as_float(inputs[0]), float(layer.alpha), float(layer.beta))
    if out is None:
        raise UnsupportedLayerError(layer, f"activation type {kind}")
    return out


@rule(LT.PARAMETRIC_RELU)
def parametric_relu(layer, inputs, env):
    x, slopes = _wide(inputs[0]), _wide(inputs[1])
    return torch.where(x >= 0, x, slopes * x)


# ----------------------------------------------------------------------------- shuffle

@rule(LT.SHUFFLE)
def shuffle(layer, inputs, env):
    x = inputs[0]
    perm = list(layer.first_transpose)[: x.dim()]
    x = x.permute(perm)
    if layer.num_inputs > 1 and inputs[1] is not None:
        dims = _ints(inputs[1])
    else:
        dims = layer.reshape_dims
        dims = None if dims is None else list(dims)
    if dims is not None:
        if layer.zero_is_placeholder:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        x = x.reshape(dims)
    perm = list(layer.second_transpose)[: x.dim()]
    return x.permute(perm)


# ----------------------------------------------------------------------------- slice

def _sample_index(coord: torch.Tensor, size: int, mode, layer):
    """Map raw coordinates along one axis to in-bounds indices, plus an in-bounds mask (for FILL)."""
    inside = (coord >= 0) & (coord < size)
    if mode == SM.STRICT_BOUNDS:
        if not bool(inside.all()):
            raise LayerExecutionError(
                f"slice layer {layer.name!r} (STRICT_BOUNDS) reads coordinates {coord.tolist()} "
                f"outside an axis of size {size}"
            )
        return coord, None
    if size == 0:
        if coord.numel() == 0:  # an empty axis may only produce an empty axis
            return coord, None
        raise LayerExecutionError(f"slice layer {layer.name!r} samples from an empty axis in mode {mode}")
    if mode == SM.WRAP:
        return torch.remainder(coord, size), None
    if mode == SM.CLAMP:
        return coord.clamp(0, size - 1), None
    if mode == SM.FILL:
        return coord.clamp(0, size - 1), inside
    if mode == SM.REFLECT:
        # Reflection about the middle of the border element, repeated indefinitely (period 2 * (size - 1)).
        if size == 1:
            return torch.zeros_like(coord), None
        period = 2 * (size - 1)
        c = torch.remainder(coord, period)
        return torch.where(c >= size, period - c, c), None
    raise UnsupportedLayerError(layer, f"slice sample mode {mode}")


@rule(LT.SLICE)
def slice_(layer, inputs, env):
    x = inputs[0]
    rank = x.dim()

    def param(index, attr):
        if layer.num_inputs > index and inputs[index] is not None:
            return _ints(inputs[index])
        value = getattr(layer, attr)
        return None if value is None else [int(v) for v in value]

    start, size, stride = param(1, "start"), param(2, "shape"), param(3, "stride")
    axes = param(5, "axes")
    if axes is not None:
        full_start, full_size, full_stride = [0] * rank, list(x.shape), [1] * rank
        for k, axis in enumerate(axes):
            axis = _norm_axis(axis, rank)
            full_start[axis], full_size[axis], full_stride[axis] = start[k], size[k], stride[k]
        start, size, stride = full_start, full_size, full_stride
    mode = layer.mode
    fill = inputs[4] if layer.num_inputs > 4 and inputs[4] is not None else None
    mask = None
    for axis in range(rank):
        coord = start[axis] + stride[axis] * torch.arange(size[axis], device=x.device)
        idx, inside = _sample_index(coord, x.shape[axis], mode, layer)
        x = x.index_select(axis, idx)
        if inside is not None:
            view = [1] * rank
            view[axis] = size[axis]
            inside = inside.reshape(view)
            mask = inside if mask is None else mask & inside
    if mask is not None:
        value = fill.reshape(()) if fill is not None else torch.zeros((), dtype=x.dtype, device=x.device)
        x = torch.where(mask, x, value.to(x.dtype))
    return x


# ----------------------------------------------------------------------------- reduce, softmax, concatenation

@rule(LT.REDUCE)
def reduce(layer, inputs, env):
    x = inputs[0]
    axes = _axes_from_mask(int(layer.axes), x.dim())
    keep = bool(layer.keep_dims)
    op = layer.op
    if not axes:
        return x
    if op in (RED.SUM, RED.AVG, RED.PROD):
        x = _wide(x) if x.is_floating_point() else x
    if op == RED.SUM:
        return x.sum(dim=axes, keepdim=keep)
    if op == RED.AVG:
        return _as_float(x).mean(dim=axes, keepdim=keep)
    if op == RED.MAX:
        return x.amax(dim=axes, keepdim=keep)
    if op == RED.MIN:
        return x.amin(dim=axes, keepdim=keep)
    if op == RED.PROD:
        for axis in sorted(axes, reverse=True):
            x = x.prod(dim=axis, keepdim=keep)
        return x
    raise UnsupportedLayerError(layer, f"reduce operation {op}")


def _one_axis(layer, x, what: str) -> int:
    """The single axis of a layer's axes bitmask (softmax and top-k take exactly one)."""
    axes = _axes_from_mask(int(layer.axes), x.dim())
    if len(axes) != 1:
        raise UnsupportedLayerError(layer, f"{what} over axes {axes} (TensorRT takes exactly one)")
    return axes[0]


@rule(LT.SOFTMAX)
def softmax(layer, inputs, env):
    x = inputs[0]
    return torch.softmax(_wide(x), dim=_one_axis(layer, x, "softmax"))


@rule(LT.CONCATENATION)
def concatenation(layer, inputs, env):
    return torch.cat(inputs, dim=_norm_axis(int(layer.axis), inputs[0].dim()))


@rule(LT.SHAPE)
def shape(layer, inputs, env):
    return torch.tensor(list(inputs[0].shape), dtype=torch.int64, device=inputs[0].device)


# ----------------------------------------------------------------------------- fill

@rule(LT.FILL)
def fill(layer, inputs, env):
    def given(k):
        return layer.num_inputs > k and inputs[k] is not None

    dims = _ints(inputs[0]) if given(0) else [int(d) for d in layer.shape]
    out_dtype = to_torch(layer.to_type)
    device = env.device
    op = layer.operation
    int_out = not out_dtype.is_floating_point
    work = torch.int64 if int_out else torch.float64
    if given(1) != given(2):
        raise LayerExecutionError(f"fill layer {layer.name!r}: alpha and beta must both be static or both dynamic")
    if given(1):
        alpha = inputs[1].reshape(()).to(work)
        beta = inputs[2].to(work)
    else:
        alpha = torch.tensor(layer.alpha, dtype=torch.float64, device=device)
        beta = torch.tensor(layer.beta, dtype=torch.float64, device=device)
        if int_out:
            alpha, beta = alpha.round().to(work), beta.round().to(work)
    if op == trt.FillOperation.LINSPACE:
        # Element [i0, i1, ...] = alpha + sum_k beta[k] * i_k (NvInfer.h FillOperation::kLINSPACE).
        # TensorRT rejects a static (scalar) beta unless the output is 1-D.
        beta = beta.reshape(-1)
        if not given(2) and len(dims) != 1:
            raise LayerExecutionError(
                f"fill layer {layer.name!r}: a static beta needs a 1-D output, got rank {len(dims)} "
                "(TensorRT rejects it too)"
            )
        if beta.numel() != len(dims):
            raise LayerExecutionError(f"fill layer {layer.name!r}: delta has {beta.numel()} entries "
                                      f"for rank {len(dims)}")
        out = alpha.clone().expand(dims).clone() if dims else alpha.clone()
        for k, n in enumerate(dims):
            view = [1] * len(dims)
            view[k] = n
            out = out + beta[k] * torch.arange(n, device=device, dtype=work).reshape(view)
        return out.to(out_dtype)
    # Random fills cannot match an engine bit for bit; a deterministic sample of the right
    # distribution and shape keeps downstream layers runnable.
    gen = torch.Generator(device="cpu").manual_seed(zlib.crc32(layer.name.encode()))
    lo, hi = float(alpha), float(beta.reshape(-1)[0])
    if op == trt.FillOperation.RANDOM_UNIFORM:
        sample = torch.rand(dims, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    elif op == trt.FillOperation.RANDOM_NORMAL:
        sample = torch.randn(dims, generator=gen, dtype=torch.float64) * hi + lo
    else:
        raise UnsupportedLayerError(layer, f"fill operation {op}")
    return sample.to(device=device, dtype=out_dtype)


# ----------------------------------------------------------------------------- select, gather, scatter

@rule(LT.SELECT)
def select(layer, inputs, env):
    cond, a, b = inputs
    return torch.where(cond, a, b)


def _gather_default(data, idx, axis, elementwise_dims):
    idx = _wrap_negative(idx, data.shape[axis])
    if elementwise_dims == 0:
        return data[(slice(None),) * axis + (idx,)]
    # nbElementwiseDims == 1: leading dimension of data and indices is a (broadcast) batch.
    if axis < 1:
        raise ValueError("gather with num_elementwise_dims=1 needs axis >= 1")
    batch = max(data.shape[0], idx.shape[0])
    data = data.expand(batch, *data.shape[1:])
    idx = idx.expand(batch, *idx.shape[1:])
    return torch.stack([data[b][(slice(None),) * (axis - 1) + (idx[b],)] for b in range(batch)])


def _gather_nd(data, idx, batch_dims):
    k = idx.shape[-1]
    batch_shape = tuple(data.shape[:batch_dims])
    nb = math.prod(batch_shape)
    rest = tuple(data.shape[batch_dims + k:])
    d = data.reshape(nb, *data.shape[batch_dims:])
    i = idx.reshape(nb, -1, k).long()
    comps = [_wrap_negative(i[..., j], d.shape[1 + j]) for j in range(k)]
    b = torch.arange(nb, device=data.device).reshape(nb, 1).expand_as(comps[0]) if comps else None
    out = d[(b, *comps)]
    return out.reshape(*idx.shape[:-1], *rest)


@rule(LT.GATHER)
def gather(layer, inputs, env):
    data, idx = inputs[0], inputs[1]
    mode, ne = layer.mode, int(layer.num_elementwise_dims)
    if mode == GM.DEFAULT:
        return _gather_default(data, idx, _norm_axis(int(layer.axis), data.dim()), ne)
    if mode == GM.ELEMENT:
        axis = _norm_axis(int(layer.axis), data.dim())
        return torch.gather(data, axis, _wrap_negative(idx, data.shape[axis]))
    if mode == GM.ND:
        return _gather_nd(data, idx, ne)
    raise UnsupportedLayerError(layer, f"gather mode {mode}")


@rule(LT.SCATTER)
def scatter(layer, inputs, env):
    data, idx, updates = inputs
    out = data.clone()
    if layer.mode == trt.ScatterMode.ELEMENT:
        axis = _norm_axis(int(layer.axis), data.dim())
        return out.scatter_(axis, _wrap_negative(idx, data.shape[axis]), updates.to(out.dtype))
    if layer.mode == trt.ScatterMode.ND:
        k = idx.shape[-1]
        comps = tuple(_wrap_negative(idx[..., j], data.shape[j]) for j in range(k))
        out[comps] = updates.to(out.dtype)
        return out
    raise UnsupportedLayerError(layer, f"scatter mode {layer.mode}")


# ----------------------------------------------------------------------------- squeeze, unsqueeze

@rule(LT.SQUEEZE)
def squeeze(layer, inputs, env):
    x = inputs[0]
    if layer.num_inputs < 2 or inputs[1] is None:
        return x.squeeze()
    axes = sorted({_norm_axis(a, x.dim()) for a in _ints(inputs[1])})
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise ValueError(f"squeeze axes {bad} have sizes {[x.shape[a] for a in bad]}, not 1")
    return x.reshape([s for i, s in enumerate(x.shape) if i not in axes])


@rule(LT.UNSQUEEZE)
def unsqueeze(layer, inputs, env):
    x = inputs[0]
    raw = _ints(inputs[1])
    final = x.dim() + len(raw)
    axes = {_norm_axis(a, final) for a in raw}
    it = iter(x.shape)
    return x.reshape([1 if i in axes else next(it) for i in range(final)])


# ----------------------------------------------------------------------------- einsum, matrix multiply

@rule(LT.EINSUM)
def einsum(layer, inputs, env):
    return torch.einsum(layer.equation, *[_wide(t) for t in inputs])


@rule(LT.MATRIX_MULTIPLY)
def matrix_multiply(layer, inputs, env):
    a, b = _wide(inputs[0]), _wide(inputs[1])
    if not a.is_floating_point():  # torch.matmul has no integer CPU kernel for every type
        a, b = a.double(), b.double()
    op0, op1 = layer.op0, layer.op1
    if op0 == MO.TRANSPOSE:
        a = a.transpose(-1, -2)
    if op1 == MO.TRANSPOSE:
        b = b.transpose(-1, -2)
    if op0 == MO.VECTOR:
        a = a.unsqueeze(-2)
    if op1 == MO.VECTOR:
        b = b.unsqueeze(-1)
    out = torch.matmul(a, b)
    if op1 == MO.VECTOR:
        out = out.squeeze(-1)
    if op0 == MO.VECTOR:
        out = out.squeeze(-1 if op1 == MO.VECTOR else -2)
    return out


# ----------------------------------------------------------------------------- cumulative, top-k, one-hot, non-zero

@rule(LT.CUMULATIVE)
def cumulative(layer, inputs, env):
    x = inputs[0]
    if layer.op != trt.CumulativeOperation.SUM:
        raise UnsupportedLayerError(layer, f"cumulative operation {layer.op}")
    axis = _norm_axis(int(inputs[1].reshape(())), x.dim())
    w = _wide(x)
    if layer.reverse:
        w = w.flip(axis)
    out = torch.cumsum(w, dim=axis)
    if layer.exclusive:
        out = out - w
    if layer.reverse:
        out = out.flip(axis)
    return out


@rule(LT.TOPK)
def topk(layer, inputs, env):
    x = inputs[0]
    axis = _one_axis(layer, x, "top-k")
    k = int(inputs[1].reshape(())) if layer.num_inputs > 1 and inputs[1] is not None else int(layer.k)
    values, indices = torch.topk(x, k, dim=axis, largest=layer.op == trt.TopKOperation.MAX, sorted=True)
    return values, indices


@rule(LT.ONE_HOT)
def one_hot(layer, inputs, env):
    indices, values, depth = inputs
    depth = int(depth.reshape(()))
    axis = _norm_axis(int(layer.axis), indices.dim() + 1)
    idx = _wrap_negative(indices, depth).unsqueeze(axis)
    view = [1] * (indices.dim() + 1)
    view[axis] = depth
    hot = idx == torch.arange(depth, device=indices.device).reshape(view)
    off, on = values[0], values[1]
    return torch.where(hot, on, off)


@rule(LT.NON_ZERO)
def non_zero(layer, inputs, env):
    return torch.nonzero(inputs[0]).T.contiguous()


@rule(LT.ASSERTION)
def assertion(layer, inputs, env):
    if not bool(inputs[0].all()):
        raise AssertionFailedError(
            f"assertion layer {layer.name!r} failed: {layer.message!r} (condition {inputs[0].tolist()})"
        )
    return []


@rule(LT.REVERSE_SEQUENCE)
def reverse_sequence(layer, inputs, env):
    x, lens = inputs
    batch_axis = _norm_axis(int(layer.batch_axis), x.dim())
    seq_axis = _norm_axis(int(layer.sequence_axis), x.dim())
    y = x.movedim((batch_axis, seq_axis), (0, 1))
    steps = y.shape[1]
    pos = torch.arange(steps, device=x.device).reshape(1, steps)
    n = lens.long().reshape(-1, 1)
    src = torch.where(pos < n, n - 1 - pos, pos)
    src = src.reshape(*src.shape, *([1] * (y.dim() - 2))).expand_as(y)
    return torch.gather(y, 1, src).movedim((0, 1), (batch_axis, seq_axis))


# ----------------------------------------------------------------------------- if-conditional

# Both branches are computed eagerly (the layers inside them are ordinary layers of the network);
# the output layer picks one. The condition is stored per conditional by the CONDITION layer,
# which has no output tensor to carry it.

def _conditions(env) -> dict:
    return env.__dict__.setdefault("_if_conditions", {})


@rule(LT.CONDITION)
def condition(layer, inputs, env):
    _conditions(env)[layer.conditional.name] = bool(inputs[0].reshape(()))
    return []


@rule(LT.CONDITIONAL_INPUT)
def conditional_input(layer, inputs, env):
    return inputs[0]


@rule(LT.CONDITIONAL_OUTPUT)
def conditional_output(layer, inputs, env):
    name = layer.conditional.name
    state = _conditions(env)
    if name not in state:
        raise UnsupportedLayerError(layer, f"the condition of {name!r} is not computed before its outputs")
    return inputs[0] if state[name] else inputs[1]
