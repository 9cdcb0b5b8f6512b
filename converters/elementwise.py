"""Arithmetic, comparison, logic and unary math ops, with PyTorch's type promotion read off the real call.

An arithmetic op computes in the type of its real result (``call.output.dtype``): both
operands are cast to it first, as TensorRT's elementwise layers need equal types. A
comparison computes in the type PyTorch promotes its operands to (``torch.result_type``)
and yields bool. Dtype conversions, device moves, copies and eval-mode dropout live here too.
"""
from __future__ import annotations

import math

import torch

from torch2x import layout
from torch2x.context import ConversionError
from torch2x.dtypes import to_torch
from torch2x.flavour import trt
from torch2x.registry import converter

Op = trt.ElementWiseOperation
Un = trt.UnaryOperation
DT = trt.DataType
FLOATS = (DT.FLOAT, DT.HALF, DT.BF16)
# PyTorch's bool arithmetic is logic (True + True is True); TensorRT has no bool SUM/PROD/MAX/MIN.
_BOOL_OP = {Op.SUM: Op.OR, Op.PROD: Op.AND, Op.MAX: Op.OR, Op.MIN: Op.AND}


def aliases(*shorts: str, inplace: bool = True) -> list:
    """``torch.X``, ``torch.Tensor.X`` (and their in-place ``X_``) for each short name that torch has.

    Example: ``aliases("abs")`` is ``["torch.abs", "torch.abs_", "torch.Tensor.abs", "torch.Tensor.abs_"]``.
    """
    out = []
    for short in shorts:
        for owner, prefix in ((torch, "torch"), (torch.Tensor, "torch.Tensor")):
            for name in (short, short + "_") if inplace else (short,):
                if hasattr(owner, name):
                    out.append(f"{prefix}.{name}")
    return out


def _dunders(*names: str) -> list:
    return [f"torch.Tensor.{n}" for n in names if hasattr(torch.Tensor, n)]


def out_type(ctx, call) -> trt.DataType:
    """The network type of the call's (first) real result."""
    out = call.output[0] if isinstance(call.output, (tuple, list)) else call.output
    return ctx.dtype_for(out.dtype)


def binary(ctx, a, b, op, dtype) -> trt.ITensor:
    """``a op b`` computed in ``dtype`` (bool arithmetic becomes logic, as in PyTorch).

    Example: ``binary(ctx, x, 2, Op.PROD, out_type(ctx, call))`` is ``x * 2``.
    """
    if dtype == DT.BOOL:
        op = _BOOL_OP.get(op, op)
    return ctx.elementwise(a, b, op, dtype)


def select(ctx, condition, a, b, dtype) -> trt.ITensor:
    """``torch.where(condition, a, b)`` with ``a``/``b`` (tensors or scalars) in ``dtype``, broadcast.

    Example: ``select(ctx, mask, 0.0, x, x.dtype)`` is ``x.masked_fill(mask, 0.0)``.
    """
    cond, ta, tb = ctx.broadcast(ctx.trt(condition, DT.BOOL), ctx.trt(a, dtype), ctx.trt(b, dtype))
    return ctx.network.add_select(cond, ta, tb).get_output(0)


def trunc(ctx, x) -> trt.ITensor:
    """Round toward zero; TensorRT has no unary trunc (integers are returned unchanged).

    Example: ``trunc(ctx, x)`` is ``torch.trunc(x)``.
    """
    x = ctx.trt(x)
    if x.dtype not in FLOATS:
        return x
    return ctx.elementwise(ctx.unary(ctx.unary(x, Un.ABS), Un.FLOOR), ctx.unary(x, Un.SIGN), Op.PROD)


# --------------------------------------------------------------------------- add, sub, mul, div, pow, mod

def _operands(call, reflected: bool, second: str = "other") -> tuple:
    """``(input, other)``, swapped for a reflected dunder (``2 - x`` arrives as ``x.__rsub__(2)``)."""
    a, b = call.arg("input"), call.arg(second)
    return (b, a) if reflected else (a, b)


def _arith(op, reflected=False):
    def convert(ctx, call):
        a, b = _operands(call, reflected)
        dtype = out_type(ctx, call)
        alpha = call.arg("alpha", 1)
        if alpha != 1:
            b = binary(ctx, b, alpha, Op.PROD, dtype)
        else:
            kept = layout.binary(ctx, a, b, op, dtype, call.output.shape)
            if kept is not None:
                return kept
        return binary(ctx, a, b, op, dtype)

    return convert


_ARITH_SIG = "input, other, *, alpha=1, out=None"
converter(*aliases("add"), *_dunders("__add__", "__iadd__"), signature=_ARITH_SIG)(_arith(Op.SUM))
converter(*aliases("sub", "subtract"), *_dunders("__sub__", "__isub__"), signature=_ARITH_SIG)(_arith(Op.SUB))
converter("torch.Tensor.__radd__", signature="input, other")(_arith(Op.SUM, reflected=True))
converter("torch.Tensor.__rsub__", "torch.rsub", signature="input, other, *, alpha=1")(_arith(Op.SUB, reflected=True))
converter(*aliases("mul", "multiply"), *_dunders("__mul__", "__imul__"), signature="input, other, *, out=None")(
    _arith(Op.PROD))
converter("torch.Tensor.__rmul__", signature="input, other")(_arith(Op.PROD, reflected=True))


def divide(ctx, a, b, rounding_mode, dtype) -> trt.ITensor:
    """``torch.div(a, b, rounding_mode=...)`` in ``dtype`` (the result type: float for true division).

    Example: ``divide(ctx, x, y, "floor", DT.INT64)`` is ``x // y`` for int64 tensors.
    """
    if rounding_mode == "floor":
        return ctx.elementwise(a, b, Op.FLOOR_DIV, dtype)
    quotient = ctx.elementwise(a, b, Op.DIV, dtype)
    # TensorRT's integer kDIV already rounds toward zero, like rounding_mode="trunc".
    return trunc(ctx, quotient) if rounding_mode == "trunc" else quotient


def _div(reflected=False, rounding_mode=None):
    def convert(ctx, call):
        a, b = _operands(call, reflected)
        mode = call.arg("rounding_mode", rounding_mode)
        kept = layout.binary(ctx, a, b, Op.DIV, out_type(ctx, call), call.output.shape) if mode is None else None
        return kept if kept is not None else divide(ctx, a, b, mode, out_type(ctx, call))

    return convert


converter(*aliases("div", "divide"), signature="input, other, *, rounding_mode=None, out=None")(_div())
converter(*aliases("true_divide"), *_dunders("__truediv__", "__itruediv__", "__div__", "__idiv__"),
          signature="input, other, *, out=None")(_div())
converter(*_dunders("__rtruediv__", "__rdiv__"), signature="input, other")(_div(reflected=True))
converter(*aliases("floor_divide"), *_dunders("__floordiv__", "__ifloordiv__"), signature="input, other, *, out=None")(
    _div(rounding_mode="floor"))
converter(*_dunders("__rfloordiv__"), signature="input, other")(_div(reflected=True, rounding_mode="floor"))


def _modulo(python_sign, reflected=False):
    # remainder takes the divisor's sign (Python's %), fmod the dividend's (C's fmod).
    def convert(ctx, call):
        a, b = _operands(call, reflected)
        dtype = out_type(ctx, call)
        quotient = divide(ctx, a, b, "floor" if python_sign else "trunc", dtype)
        return ctx.elementwise(a, ctx.elementwise(quotient, b, Op.PROD, dtype), Op.SUB, dtype)

    return convert


converter(*aliases("remainder"), *_dunders("__mod__", "__imod__"), signature="input, other, *, out=None")(
    _modulo(True))
converter(*_dunders("__rmod__"), signature="input, other")(_modulo(True, reflected=True))
converter(*aliases("fmod"), signature="input, other, *, out=None")(_modulo(False))


def power(ctx, base, exponent, dtype) -> trt.ITensor:
    """``base ** exponent`` in ``dtype``; small constant exponents become exact products, sqrt or reciprocal.

    Example: ``power(ctx, x, 2, DT.FLOAT)`` is ``x * x``; ``power(ctx, 2.0, x, DT.FLOAT)`` is ``2 ** x``.
    """
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool) and not isinstance(base, (int, float)):
        x = ctx.trt(base, dtype)
        if exponent == 1:
            return x
        if exponent in (2, 3):
            square = ctx.elementwise(x, x, Op.PROD)
            return square if exponent == 2 else ctx.elementwise(square, x, Op.PROD)
        if dtype in FLOATS and exponent in (0.5, -0.5, -1):
            root = x if exponent == -1 else ctx.unary(x, Un.SQRT)
            return root if exponent == 0.5 else ctx.unary(root, Un.RECIP)
    return ctx.elementwise(base, exponent, Op.POW, dtype)


def _pow(reflected=False):
    def convert(ctx, call):
        a, b = _operands(call, reflected, "exponent")
        dtype = out_type(ctx, call)
        if isinstance(a, torch.Tensor) and isinstance(b, (int, float)) and not isinstance(b, bool) and dtype in FLOATS:
            return ctx.pointwise(a, lambda t: power(ctx, t, b, dtype))
        return power(ctx, a, b, dtype)

    return convert


converter(*aliases("pow", "float_power"), *_dunders("__pow__", "__ipow__"), signature="input, exponent, *, out=None",
          fp32=True)(_pow())
converter(*_dunders("__rpow__"), signature="input, exponent", fp32=True)(_pow(reflected=True))


@converter(*aliases("lerp"), signature="input, end, weight, *, out=None")
def lerp(ctx, call):
    dtype = out_type(ctx, call)
    start = call.arg("input")
    step = ctx.elementwise(ctx.elementwise(call.arg("end"), start, Op.SUB, dtype), call.arg("weight"), Op.PROD, dtype)
    return ctx.elementwise(start, step, Op.SUM, dtype)


def _addc(op):
    def convert(ctx, call):
        dtype = out_type(ctx, call)
        term = ctx.elementwise(call.arg("tensor1"), call.arg("tensor2"), op, dtype)
        if call.arg("value") != 1:
            term = ctx.elementwise(term, call.arg("value"), Op.PROD, dtype)
        return ctx.elementwise(call.arg("input"), term, Op.SUM, dtype)

    return convert


converter(*aliases("addcmul"), signature="input, tensor1, tensor2, *, value=1, out=None")(_addc(Op.PROD))
converter(*aliases("addcdiv"), signature="input, tensor1, tensor2, *, value=1, out=None")(_addc(Op.DIV))


# --------------------------------------------------------------------------- comparisons and logic

def compare(ctx, a, b, name) -> trt.ITensor:
    """``a <name> b`` (eq, ne, lt, le, gt, ge) as bool, computed in PyTorch's promoted operand type.

    Example: ``compare(ctx, x, 0.5, "le")`` is ``x <= 0.5``.
    """
    dtype = ctx.dtype_for(torch.result_type(a, b))
    if dtype == DT.BOOL and name not in ("eq", "ne"):
        dtype = DT.INT32  # TensorRT orders numbers, not bools
    if name in ("eq", "ne"):
        equal = ctx.elementwise(a, b, Op.EQUAL, dtype)
        return equal if name == "eq" else ctx.unary(equal, Un.NOT)
    strict = ctx.elementwise(a, b, Op.GREATER if name in ("gt", "ge") else Op.LESS, dtype)
    if name in ("gt", "lt"):
        return strict
    # a <= b as (a < b) or (a == b), not as not(a > b): NaN compares false both ways.
    return ctx.elementwise(strict, ctx.elementwise(a, b, Op.EQUAL, dtype), Op.OR)


def _compare(name):
    def convert(ctx, call):
        return compare(ctx, call.arg("input"), call.arg("other"), name)

    return convert


for _name, _more in (("eq", ()), ("ne", ("not_equal",)), ("lt", ("less",)), ("le", ("less_equal",)),
                     ("gt", ("greater",)), ("ge", ("greater_equal",))):
    converter(*aliases(_name, *_more), *_dunders(f"__{_name}__"), signature="input, other, *, out=None")(
        _compare(_name))


def _logic(op):
    def convert(ctx, call):
        if call.output.dtype != torch.bool and not call.op.startswith("logical"):
            raise ConversionError(f"{call.op} on {call.output.dtype} values: TensorRT has no bitwise layer")
        return ctx.elementwise(call.arg("input"), call.arg("other"), op, DT.BOOL)

    return convert


for _op, _name, _dunder in ((Op.AND, "and", "__and__"), (Op.OR, "or", "__or__"), (Op.XOR, "xor", "__xor__")):
    converter(*aliases(f"logical_{_name}", f"bitwise_{_name}"), *_dunders(_dunder, f"__i{_name}__"),
              signature="input, other, *, out=None")(_logic(_op))
    converter(*_dunders(f"__r{_name}__"), signature="input, other")(_logic(_op))


@converter(*aliases("logical_not", "bitwise_not"), *_dunders("__invert__"), signature="input, *, out=None")
def logical_not(ctx, call):
    if call.output.dtype != torch.bool and not call.op.startswith("logical"):
        raise ConversionError(f"{call.op} on {call.output.dtype} values: TensorRT has no bitwise layer")
    return ctx.unary(ctx.trt(call.arg("input"), DT.BOOL), Un.NOT)


def _extreme(op):
    def convert(ctx, call):
        return binary(ctx, call.arg("input"), call.arg("other"), op, out_type(ctx, call))

    return convert


converter(*aliases("maximum", "fmax"), signature="input, other, *, out=None")(_extreme(Op.MAX))
converter(*aliases("minimum", "fmin"), signature="input, other, *, out=None")(_extreme(Op.MIN))


@converter(*aliases("clamp", "clip"), signature="input, min=None, max=None, *, out=None")
@converter(*aliases("clamp_min"), signature="input, min, *, out=None")
@converter(*aliases("clamp_max"), signature="input, max, *, out=None")
def clamp(ctx, call):
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    # max then min: when min > max every element becomes max, as in PyTorch.
    if call.has("min"):
        x = binary(ctx, x, call.arg("min"), Op.MAX, dtype)
    if call.has("max"):
        x = binary(ctx, x, call.arg("max"), Op.MIN, dtype)
    return x


@converter("torch.where", signature="condition, input=None, other=None, *, out=None")
@converter("torch.Tensor.where", signature="input, condition, other")
def where(ctx, call):
    if call.arg("input") is None:
        raise ConversionError("torch.where(condition) returns indices whose count depends on the data")
    return select(ctx, call.arg("condition"), call.arg("input"), call.arg("other"), out_type(ctx, call))


@converter(*aliases("masked_fill"), signature="input, mask, value")
def masked_fill(ctx, call):
    return select(ctx, call.arg("mask"), call.arg("value"), call.arg("input"), out_type(ctx, call))


# --------------------------------------------------------------------------- unary math

def _unary(op):
    def convert(ctx, call):
        if call.arg("input").is_floating_point() and call.output.dtype == call.arg("input").dtype:
            return ctx.pointwise(call.arg("input"), lambda t: ctx.unary(t, op))
        x = ctx.trt(call.arg("input"), out_type(ctx, call))
        if (op in (Un.FLOOR, Un.CEIL) and x.dtype not in FLOATS) or (op == Un.SIGN and x.dtype == DT.BOOL):
            return x  # integers are whole already; sign(bool) is itself
        return ctx.unary(x, op)

    return convert


_UNARY_SIG = "input, *, out=None"
for _op, _names in (
    (Un.ABS, ("abs", "absolute")), (Un.NEG, ("neg", "negative")), (Un.SQRT, ("sqrt",)), (Un.RECIP, ("reciprocal",)),
    (Un.SIN, ("sin",)), (Un.COS, ("cos",)), (Un.TAN, ("tan",)), (Un.ASIN, ("asin", "arcsin")),
    (Un.ACOS, ("acos", "arccos")), (Un.ATAN, ("atan", "arctan")),
    (Un.ASINH, ("asinh", "arcsinh")), (Un.ACOSH, ("acosh", "arccosh")), (Un.ATANH, ("atanh", "arctanh")),
    (Un.ERF, ("erf",)), (Un.FLOOR, ("floor",)), (Un.CEIL, ("ceil",)), (Un.SIGN, ("sign", "sgn")),
):
    converter(*aliases(*_names), signature=_UNARY_SIG)(_unary(_op))
converter("torch.special.erf", signature=_UNARY_SIG)(_unary(Un.ERF))
converter(*_dunders("__abs__"), signature="input")(_unary(Un.ABS))
converter(*_dunders("__neg__"), signature="input")(_unary(Un.NEG))
for _op, _names in ((Un.EXP, ("exp",)), (Un.LOG, ("log",)), (Un.SINH, ("sinh",)), (Un.COSH, ("cosh",))):
    converter(*aliases(*_names), signature=_UNARY_SIG, fp32=True)(_unary(_op))


@converter(*aliases("rsqrt"), signature=_UNARY_SIG)
def rsqrt(ctx, call):
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    return ctx.unary(ctx.unary(x, Un.SQRT), Un.RECIP)


def _scaled_log(scale):
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"), out_type(ctx, call))
        return ctx.elementwise(ctx.unary(x, Un.LOG), scale, Op.PROD)

    return convert


converter(*aliases("log2"), signature=_UNARY_SIG, fp32=True)(_scaled_log(1.0 / math.log(2.0)))
converter(*aliases("log10"), signature=_UNARY_SIG, fp32=True)(_scaled_log(1.0 / math.log(10.0)))


@converter(*aliases("exp2"), "torch.special.exp2", signature=_UNARY_SIG, fp32=True)
def exp2(ctx, call):
    dtype = out_type(ctx, call)
    return ctx.elementwise(2.0, call.arg("input"), Op.POW, dtype)


@converter(*aliases("log1p"), "torch.special.log1p", signature=_UNARY_SIG, fp32=True)
def log1p(ctx, call):
    # log(u) * x / (u - 1) with u = 1 + x cancels the rounding of 1 + x (Goldberg 1991, thm 4),
    # so small x keep full relative precision, which log(1 + x) loses.
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    u = ctx.elementwise(x, 1.0, Op.SUM)
    d = ctx.elementwise(u, 1.0, Op.SUB)
    ratio = ctx.elementwise(ctx.elementwise(ctx.unary(u, Un.LOG), x, Op.PROD), d, Op.DIV)
    return select(ctx, ctx.elementwise(d, 0.0, Op.EQUAL), x, ratio, dtype)


@converter(*aliases("expm1"), "torch.special.expm1", signature=_UNARY_SIG, fp32=True)
def expm1(ctx, call):
    # exp(x) - 1 cancels for small x; 2t / (1 - t) with t = tanh(x / 2) does not, and is well
    # conditioned for x <= 1 (t <= 0.47, and t -> -1 gives -1 for very negative x).
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    t = ctx.activation(ctx.elementwise(x, 0.5, Op.PROD), trt.ActivationType.TANH)
    small = ctx.elementwise(ctx.elementwise(t, 2.0, Op.PROD), ctx.elementwise(1.0, t, Op.SUB, dtype), Op.DIV)
    large = ctx.elementwise(ctx.unary(x, Un.EXP), 1.0, Op.SUB)
    return select(ctx, ctx.elementwise(x, 1.0, Op.GREATER), large, small, dtype)


@converter(*aliases("round"), signature="input, *, decimals=0, out=None")
def round_(ctx, call):
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    if dtype not in FLOATS:
        return x
    decimals = int(call.arg("decimals"))
    if decimals == 0:
        return ctx.unary(x, Un.ROUND)  # half to even, like torch.round
    # PyTorch scales by 10**|decimals| with the same multiply/divide order.
    scale = 10.0 ** abs(decimals)
    up, down = (Op.PROD, Op.DIV) if decimals > 0 else (Op.DIV, Op.PROD)
    return ctx.elementwise(ctx.unary(ctx.elementwise(x, scale, up), Un.ROUND), scale, down)


@converter(*aliases("trunc", "fix"), signature=_UNARY_SIG)
def trunc_(ctx, call):
    return trunc(ctx, ctx.trt(call.arg("input"), out_type(ctx, call)))


@converter(*aliases("frac"), signature=_UNARY_SIG)
def frac(ctx, call):
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    return ctx.elementwise(x, trunc(ctx, x), Op.SUB)


@converter(*aliases("square"), signature=_UNARY_SIG)
def square(ctx, call):
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    return binary(ctx, x, x, Op.PROD, x.dtype)


def _float_class(op):
    # Integers and bools are never NaN or infinite: x == x is all true, its negation all false.
    def convert(ctx, call):
        x = ctx.trt(call.arg("input"))
        if x.dtype not in FLOATS:
            same = ctx.elementwise(x, x, Op.EQUAL)
            return same if op is None else ctx.unary(same, Un.NOT)
        if op is not None:
            return ctx.unary(x, op)
        bad = ctx.elementwise(ctx.unary(x, Un.ISNAN), ctx.unary(x, Un.ISINF), Op.OR)
        return ctx.unary(bad, Un.NOT)

    return convert


converter(*aliases("isnan", inplace=False), signature="input")(_float_class(Un.ISNAN))
converter(*aliases("isinf", inplace=False), signature="input")(_float_class(Un.ISINF))
converter(*aliases("isfinite", inplace=False), signature="input")(_float_class(None))


@converter(*aliases("erfc"), "torch.special.erfc", signature=_UNARY_SIG)
def erfc(ctx, call):
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    return ctx.elementwise(1.0, ctx.unary(x, Un.ERF), Op.SUB, x.dtype)


@converter(*aliases("logit"), "torch.special.logit", signature="input, eps=None, *, out=None", fp32=True)
def logit(ctx, call):
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    if call.has("eps"):
        eps = float(call.arg("eps"))
        x = ctx.elementwise(ctx.elementwise(x, eps, Op.MAX), 1.0 - eps, Op.MIN)
    return ctx.unary(ctx.elementwise(x, ctx.elementwise(1.0, x, Op.SUB, x.dtype), Op.DIV), Un.LOG)


@converter(*aliases("atan2", "arctan2"), signature="input, other, *, out=None")
def atan2(ctx, call):
    # atan(y / x) is right for x > 0 (and x = 0 through y / 0 = +-inf); x < 0 adds pi toward y's side.
    dtype = out_type(ctx, call)
    y, x = ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("other"), dtype)
    origin = ctx.elementwise(ctx.elementwise(x, 0.0, Op.EQUAL), ctx.elementwise(y, 0.0, Op.EQUAL), Op.AND)
    base = ctx.unary(ctx.elementwise(y, select(ctx, origin, 1.0, x, dtype), Op.DIV), Un.ATAN)
    half_turn = select(ctx, ctx.elementwise(y, 0.0, Op.LESS), -math.pi, math.pi, dtype)
    return ctx.elementwise(base, select(ctx, ctx.elementwise(x, 0.0, Op.LESS), half_turn, 0.0, dtype), Op.SUM)


@converter(*aliases("hypot"), signature="input, other, *, out=None")
def hypot(ctx, call):
    dtype = out_type(ctx, call)
    a, b = ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("other"), dtype)
    squares = ctx.elementwise(ctx.elementwise(a, a, Op.PROD), ctx.elementwise(b, b, Op.PROD), Op.SUM)
    return ctx.unary(squares, Un.SQRT)


@converter(*aliases("xlogy"), "torch.special.xlogy", signature="input, other, *, out=None", fp32=True)
def xlogy(ctx, call):
    # 0 where x == 0, even where log(y) is -inf (PyTorch keeps NaN from y only).
    dtype = out_type(ctx, call)
    x, y = ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("other"), dtype)
    product = ctx.elementwise(x, ctx.unary(y, Un.LOG), Op.PROD)
    zero = ctx.elementwise(ctx.elementwise(x, 0.0, Op.EQUAL), ctx.unary(ctx.unary(y, Un.ISNAN), Un.NOT), Op.AND)
    return select(ctx, zero, 0.0, product, dtype)


@converter(*aliases("nan_to_num"), signature="input, nan=0.0, posinf=None, neginf=None, *, out=None")
def nan_to_num(ctx, call):
    dtype = out_type(ctx, call)
    x = ctx.trt(call.arg("input"), dtype)
    if dtype not in FLOATS:
        return x
    big = torch.finfo(to_torch(dtype)).max  # PyTorch's default for +-inf, finite in the network's type
    posinf = big if call.arg("posinf") is None else call.arg("posinf")
    neginf = -big if call.arg("neginf") is None else call.arg("neginf")
    x = select(ctx, ctx.unary(x, Un.ISNAN), float(call.arg("nan")), x, dtype)
    inf = ctx.unary(x, Un.ISINF)
    negative = ctx.elementwise(inf, ctx.elementwise(x, 0.0, Op.LESS), Op.AND)
    return select(ctx, inf, select(ctx, negative, float(neginf), float(posinf), dtype), x, dtype)


# --------------------------------------------------------------------------- dtype conversions, copies, dropout

@converter("torch.Tensor.to", "torch.Tensor.type", "torch.Tensor.type_as", "torch.Tensor.float", "torch.Tensor.half",
           "torch.Tensor.bfloat16", "torch.Tensor.double", "torch.Tensor.int", "torch.Tensor.long",
           "torch.Tensor.short", "torch.Tensor.char", "torch.Tensor.byte", "torch.Tensor.bool",
           "torch.Tensor.cpu", "torch.Tensor.cuda", "torch.Tensor.contiguous", "torch.Tensor.clone", "torch.clone",
           "torch.Tensor.detach", "torch.Tensor.detach_", "torch.detach", "torch.Tensor.requires_grad_",
           "torch.positive", "torch.Tensor.positive", "torch.Tensor.__pos__", "torch.Tensor.resolve_conj",
           "torch.Tensor.resolve_neg", "torch.Tensor.pin_memory",
           signature="input, *args, **kwargs")
def to(ctx, call):
    # Device moves and copies are the identity in a network; a dtype change is a cast
    # (float -> int truncates toward zero in TensorRT, as in PyTorch).
    if call.output.dtype == call.arg("input").dtype:
        return ctx.pointwise(call.arg("input"), None)
    return ctx.trt(call.arg("input"), call.output.dtype)


def _dropout(train_arg):
    def convert(ctx, call):
        if call.arg(train_arg) and call.arg("p") > 0:
            raise ConversionError(f"{call.op} with training=True is random: convert the model in eval() mode")
        return ctx.pointwise(call.arg("input"), None)

    return convert


for _name in ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"):
    converter(f"torch.nn.functional.{_name}")(_dropout("training"))
converter(*[f"torch.{n}{s}" for n in ("dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout")
            for s in ("", "_")], signature="input, p, train")(_dropout("train"))
