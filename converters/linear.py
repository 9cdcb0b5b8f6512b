"""Linear algebra: linear, matmul and its variants (mm, bmm, mv, dot, outer, the add* family, multi_dot),
einsum and what reduces to it (tensordot, inner, bilinear).

Weights enter as constants already at the rank the matrix multiply needs (``ctx.trt_shaped``), and
``F.linear`` multiplies by the weight with TensorRT's TRANSPOSE operation: a linear layer is one
matrix multiply and one bias add.
"""
from __future__ import annotations

import string

import torch

from torch2x import layout
from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.layout import Channels
from torch2x.quantization import QUANTIZABLE
from torch2x.registry import converter

MO = trt.MatrixOperation
Op = trt.ElementWiseOperation


def _float_type(ctx, call):
    if not call.output.is_floating_point():
        raise ConversionError(f"{call.name} on {call.output.dtype}: TensorRT multiplies matrices of floats only")
    return ctx.dtype_for(call.output.dtype)


def _at_rank(ctx, x, rank, dtype):
    """``x`` with leading size-1 dims up to ``rank`` (TensorRT's matrix multiply needs equal batch ranks);
    a weight becomes a constant of that shape directly."""
    shape = tuple(x.shape)
    return ctx.cast(ctx.trt_shaped(x, (1,) * (rank - len(shape)) + shape), dtype)


def matmul(ctx, a, b, dtype, transpose_b=False):
    """torch.matmul of two values (torch tensors or network tensors) of any ranks >= 1
    (1-D operands are TensorRT vectors)."""
    ra, rb = len(a.shape), len(b.shape)
    if ra == 0 or rb == 0:
        raise ConversionError("matmul of a 0-d tensor")
    op_b = MO.TRANSPOSE if transpose_b else MO.NONE
    if ra == 1 and rb == 1:
        a, b, op_a, op_b = _at_rank(ctx, a, 1, dtype), _at_rank(ctx, b, 1, dtype), MO.VECTOR, MO.VECTOR
    elif ra == 1:  # a vector against a collection of matrices: one vector per batch entry
        a, b, op_a = _at_rank(ctx, a, rb - 1, dtype), _at_rank(ctx, b, rb, dtype), MO.VECTOR
    elif rb == 1:
        a, b, op_a, op_b = _at_rank(ctx, a, ra, dtype), _at_rank(ctx, b, ra - 1, dtype), MO.NONE, MO.VECTOR
    else:
        rank = max(ra, rb)
        a, b, op_a = _at_rank(ctx, a, rank, dtype), _at_rank(ctx, b, rank, dtype), MO.NONE
    return ctx.network.add_matrix_multiply(a, op_a, b, op_b).get_output(0)


def add_bias(ctx, y, bias, dtype):
    """``y + bias`` for a bias along the last dim (a weight is made a constant of ``y``'s rank)."""
    if bias is None:
        return y
    rank = len(y.shape)
    shape = tuple(bias.shape)
    b = ctx.cast(ctx.trt_shaped(bias, (1,) * (rank - len(shape)) + shape), dtype)
    return ctx.network.add_elementwise(y, b, Op.SUM).get_output(0)


def _scaled(ctx, value, factor, dtype):
    return value if factor == 1 else ctx.elementwise(value, float(factor), Op.PROD, dtype)


def _add_scaled(ctx, call, product, dtype):
    """``beta * input + alpha * product`` as torch's add* ops define it (beta=0 ignores input, NaN included)."""
    beta, alpha = call.arg("beta"), call.arg("alpha")
    product = _scaled(ctx, product, alpha, dtype)
    if beta == 0:
        return product
    return ctx.elementwise(_scaled(ctx, ctx.trt(call.arg("input"), dtype), beta, dtype), product, Op.SUM, dtype)


def linear_as_convolution(ctx, x, weight, bias, dtype):
    """``F.linear`` as a 1x1 convolution over ``x`` in channel layout (see torch2x.layout): one layer with
    the weights inside it. None when the operands do not allow it (weights computed in the forward pass,
    an input that cannot take the layout)."""
    if weight.dim() != 2 or any(ctx.is_traced(t) for t in (weight, bias)) or dtype not in layout.FLOATS:
        return None
    ch = ctx.channels(x, enter=layout.may_enter(ctx, x), dtype=dtype)
    if ch is None:
        return None
    w = weight.detach()
    b = bias.detach() if bias is not None else w.new_zeros(w.shape[0])
    return layout.note(ctx, convolve_channels(ctx, ch, w, b, dtype), ctx.dims(x)[:-1] + (w.shape[0],))


def folded_affine(ch, weight, bias):
    """``weight`` [out, in] and ``bias`` [out] of a linear layer reading ``ch``, with ``ch``'s pending affine
    (a layer norm's weight and bias) folded in, in float64 so the folded weights are as exact as the network's
    type allows. Unchanged when nothing is pending."""
    if not ch.affine:
        return weight, bias
    weight = weight.double()
    bias = bias.double() if bias is not None else weight.new_zeros(weight.shape[0])
    if ch.shift is not None:
        bias = bias + weight @ ch.shift
    if ch.scale is not None:
        weight = weight * ch.scale
    return weight, bias


def _rows(ctx, x, weight, bias, dtype):
    """The operands of ``F.linear`` over a 2-D input ``x`` [N, in] and a weight matrix: a value held in channel
    layout with a pending affine is read as [N, in] and the affine folds into the weights (no scale layer)."""
    ch = ctx.channels(x, dtype=dtype)
    if ch is None or not ch.affine or any(ctx.is_traced(t) for t in (weight, bias)):
        return x, weight, bias
    weight, bias = folded_affine(ch, weight.detach(), None if bias is None else bias.detach())
    return layout.materialize(ctx, x, ch.with_tensor(ch.itensor)), weight, bias


def convolve_channels(ctx, ch, weight, bias, dtype):
    """``ch`` (channel layout) times ``weight`` [out, in] plus ``bias`` as a 1x1 convolution, the pending
    affine of ``ch`` (a layer norm's weight and bias) folded into the weights."""
    weight, bias = folded_affine(ch, weight, bias)
    spatial = len(ch.itensor.shape) - 2
    layer = ctx.network.add_convolution_nd(ch.itensor, weight.shape[0], (1,) * spatial,
                                           ctx.weights(weight.reshape(weight.shape + (1,) * spatial), dtype),
                                           ctx.weights(bias, dtype))
    return Channels(layer.get_output(0), ch.order)


@converter("torch.nn.functional.linear", signature="input, weight, bias=None")
def linear(ctx, call):
    dtype = _float_type(ctx, call)
    x, weight, bias = call.arg("input"), call.arg("weight"), call.arg("bias")
    # Rows [N, in] (a classifier head) stay a matrix multiply and a bias add, which TensorRT fuses into one
    # kernel writing [N, out]; as a 1x1 convolution the [N, out, 1, 1] result needs a reshape, a copy kernel
    # of its own when it is a network output (the logits).
    as_convolution = None if x.dim() == 2 else linear_as_convolution(ctx, x, weight, bias, dtype)
    if as_convolution is not None:
        return as_convolution
    if weight.dim() == 1:
        y = matmul(ctx, x, weight, dtype)
    elif x.dim() == 1:
        y = matmul(ctx, weight, x, dtype)
    else:
        if ctx.quantizer is not None and not ctx.is_traced(weight):
            # int8: the weight per output channel, as a constant already at the product's rank
            weight = ctx.quantized_weights(weight.reshape((1,) * (x.dim() - 2) + tuple(weight.shape)), dtype, -2)
            x = ctx.quantize_input(call, "input", ctx.trt(x, dtype))
        elif x.dim() == 2:
            x, weight, bias = _rows(ctx, x, weight, bias, dtype)
        y = matmul(ctx, x, weight, dtype, transpose_b=True)
    return add_bias(ctx, y, bias, dtype)


@converter("torch.matmul", "torch.Tensor.matmul", "torch.Tensor.__matmul__", "torch.linalg.matmul",
           signature="input, other, *, out=None")
@converter("torch.mm", "torch.Tensor.mm", "torch.bmm", "torch.Tensor.bmm", signature="input, mat2, *, out=None")
@converter("torch.mv", "torch.Tensor.mv", signature="input, vec, *, out=None")
@converter("torch.dot", "torch.Tensor.dot", "torch.vdot", "torch.Tensor.vdot", signature="input, tensor, *, out=None")
def matmul_like(ctx, call):
    dtype = _float_type(ctx, call)
    a, b = _int8_operands(ctx, call, dtype) if ctx.quantizer is not None else list(call.bound().values())[:2]
    return matmul(ctx, a, b, dtype)


def _int8_operands(ctx, call, dtype):
    """The two operands of a quantizable product in an int8 conversion: traced ones through their
    calibrated Q/DQ, a weight matrix per output channel (the right operand's columns, the left's rows)."""
    operands = list(call.bound().items())[:2]
    if call.name not in QUANTIZABLE:
        return [value for _, value in operands]
    out = []
    for (name, value), axis in zip(operands, (-2, -1)):
        if ctx.is_traced(value):
            value = ctx.quantize_input(call, name, ctx.trt(value, dtype))
        elif isinstance(value, torch.Tensor) and value.dim() >= 2:
            value = ctx.quantized_weights(value, dtype, axis)
        out.append(value)
    return out


@converter("torch.Tensor.__rmatmul__", signature="input, other")
def rmatmul(ctx, call):
    return matmul(ctx, call.arg("other"), call.arg("input"), _float_type(ctx, call))


@converter("torch.addmm", "torch.Tensor.addmm", "torch.Tensor.addmm_", "torch.baddbmm", "torch.Tensor.baddbmm",
           "torch.Tensor.baddbmm_", signature="input, mat1, mat2, *, beta=1, alpha=1, out=None")
@converter("torch.addmv", "torch.Tensor.addmv", "torch.Tensor.addmv_",
           signature="input, mat1, mat2, *, beta=1, alpha=1, out=None")
def addmm(ctx, call):
    dtype = _float_type(ctx, call)
    bias, x, weight = call.arg("input"), call.arg("mat1"), call.arg("mat2")
    if (call.name in ("torch.addmm", "torch.Tensor.addmm") and call.arg("beta") == 1 and call.arg("alpha") == 1
            and isinstance(bias, torch.Tensor) and bias.dim() == 1 and weight.dim() == 2 and x.dim() == 2):
        # bias + x @ weight with parameters (transformers' Conv1D, GPT-2's linear layers) is a linear layer
        kept = linear_as_convolution(ctx, x, weight.t(), bias, dtype)
        if kept is not None:
            return kept
    return _add_scaled(ctx, call, matmul(ctx, x, weight, dtype), dtype)


@converter("torch.addbmm", "torch.Tensor.addbmm", "torch.Tensor.addbmm_",
           signature="input, batch1, batch2, *, beta=1, alpha=1, out=None")
def addbmm(ctx, call):
    # The sum over the batch of b1[i] @ b2[i] is one matrix product over (batch, k) pairs.
    dtype = _float_type(ctx, call)
    b1, b2 = ctx.trt(call.arg("batch1"), dtype), ctx.trt(call.arg("batch2"), dtype)
    (nb, n, k), (_, _, p) = tuple(b1.shape), tuple(b2.shape)
    a = ctx.reshape(ctx.permute(b1, (1, 0, 2)), (n, nb * k))
    product = matmul(ctx, a, ctx.reshape(b2, (nb * k, p)), dtype)
    return _add_scaled(ctx, call, product, dtype)


def _outer(ctx, a, b, dtype):
    a, b = ctx.trt(a, dtype), ctx.trt(b, dtype)
    return ctx.elementwise(ctx.reshape(a, (a.shape[0], 1)), b, Op.PROD, dtype)


@converter("torch.outer", "torch.Tensor.outer", "torch.ger", "torch.Tensor.ger", signature="input, vec2, *, out=None")
def outer(ctx, call):
    dtype = ctx.dtype_for(call.output.dtype)
    return _outer(ctx, call.arg("input"), call.arg("vec2"), dtype)


@converter("torch.addr", "torch.Tensor.addr", "torch.Tensor.addr_",
           signature="input, vec1, vec2, *, beta=1, alpha=1, out=None")
def addr(ctx, call):
    dtype = _float_type(ctx, call)
    return _add_scaled(ctx, call, _outer(ctx, call.arg("vec1"), call.arg("vec2"), dtype), dtype)


@converter("torch.linalg.multi_dot", signature="tensors, *, out=None")
@converter("torch.chain_matmul", signature="*matrices, out=None")
def multi_dot(ctx, call):
    values = call.arg("tensors") if "tensors" in call.bound() else call.arg("matrices")
    dtype = _float_type(ctx, call)
    out = values[0]
    for value in values[1:]:
        out = matmul(ctx, out, value, dtype)
    return out


# ----------------------------------------------------------------------------- einsum

def _einsum_equation(equation, ranks):
    """torch's einsum equation rewritten for TensorRT: lower-case labels only, no ellipsis, explicit output."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ConversionError(f"einsum equation {equation!r} names {len(terms)} operands, got {len(ranks)}")
    labels = [t.replace("...", "") for t in terms]
    ellipsis_dims = [rank - len(lab) if "..." in t else 0 for t, lab, rank in zip(terms, labels, ranks)]
    used = set("".join(labels) + rhs.replace("...", ""))
    if not arrow:  # implicit output: broadcast dims, then labels seen once, in ASCII order (as torch orders them)
        counts = {c: "".join(labels).count(c) for c in set("".join(labels))}
        rhs = ("..." if any(ellipsis_dims) else "") + "".join(sorted(c for c, n in counts.items() if n == 1))
    free = [c for c in string.ascii_lowercase if c not in used]
    renamed = {c: c for c in used if c.islower()}
    for c in sorted(used):
        if not c.islower():
            if not free:
                raise ConversionError(f"einsum equation {equation!r} has more labels than TensorRT's 26")
            renamed[c] = free.pop(0)
    n_ell = max(ellipsis_dims)
    if n_ell > len(free):
        raise ConversionError(f"einsum equation {equation!r} has more labels than TensorRT's 26")
    ell = "".join(free[:n_ell])

    def rewrite(term, n):
        head, dots, tail = term.partition("...")
        out = "".join(renamed[c] for c in head)
        if dots:
            out += ell[len(ell) - n:]
        return out + "".join(renamed[c] for c in tail)

    new_terms = [rewrite(t, n) for t, n in zip(terms, ellipsis_dims)]
    return ",".join(new_terms) + "->" + rewrite(rhs, n_ell)


def einsum_layer(ctx, equation, operands, dtype):
    """An einsum layer for torch's ``equation`` (ellipsis and upper-case labels rewritten)."""
    tensors = [ctx.trt(o, dtype) for o in operands]
    eq = _einsum_equation(equation, [len(t.shape) for t in tensors])
    return ctx.network.add_einsum(tensors, eq).get_output(0)


@converter("torch.einsum", signature="equation, *operands")
def einsum(ctx, call):
    operands = call.arg("operands")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    equation = call.arg("equation")
    if not isinstance(equation, str):
        raise ConversionError("einsum in sublist format: write the equation as a string")
    return einsum_layer(ctx, equation, operands, _float_type(ctx, call))


@converter("torch.tensordot", signature="a, b, dims=2, out=None")
def tensordot(ctx, call):
    a, b, dims = call.arg("a"), call.arg("b"), call.arg("dims")
    ra, rb = a.dim(), b.dim()
    if isinstance(dims, torch.Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        dims_a, dims_b = list(range(ra - dims, ra)), list(range(dims))
    else:
        dims_a, dims_b = ([d] if isinstance(d, int) else list(d) for d in dims)
    letters = iter(string.ascii_lowercase)
    la = [next(letters) for _ in range(ra)]
    lb = [next(letters) for _ in range(rb)]
    for da, db in zip(dims_a, dims_b):
        lb[db % rb] = la[da % ra]
    contracted = set(la[d % ra] for d in dims_a)
    out = [c for c in la if c not in contracted] + [c for c in lb if c not in contracted]
    eq = f"{''.join(la)},{''.join(lb)}->{''.join(out)}"
    return einsum_layer(ctx, eq, [a, b], _float_type(ctx, call))


@converter("torch.inner", "torch.Tensor.inner", signature="input, other, *, out=None")
def inner(ctx, call):
    a, b = call.arg("input"), call.arg("other")
    if a.dim() == 0 or b.dim() == 0:
        return ctx.elementwise(a, b, Op.PROD, ctx.dtype_for(call.output.dtype))
    la, lb = string.ascii_lowercase[:a.dim() - 1], string.ascii_lowercase[a.dim() - 1:a.dim() + b.dim() - 2]
    return einsum_layer(ctx, f"{la}z,{lb}z->{la}{lb}", [a, b], _float_type(ctx, call))


@converter("torch.linalg.vecdot", signature="x, y, *, dim=-1, out=None")
def vecdot(ctx, call):
    x, y = call.arg("x"), call.arg("y")
    dtype = _float_type(ctx, call)
    product = ctx.elementwise(x, y, Op.PROD, dtype)
    rank = len(product.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    return ctx.network.add_reduce(product, trt.ReduceOperation.SUM, 1 << axis, False).get_output(0)


@converter("torch.nn.functional.bilinear", "torch.bilinear", signature="input1, input2, weight, bias=None")
def bilinear(ctx, call):
    dtype = _float_type(ctx, call)
    y = einsum_layer(ctx, "...i,kij,...j->...k", [call.arg("input1"), call.arg("weight"), call.arg("input2")], dtype)
    return add_bias(ctx, y, call.arg("bias"), dtype)
