"""converters/elementwise.py: arithmetic with type promotion, comparisons, logic, unary math, casts, dropout."""
import operator

import pytest
import torch
import torch.nn.functional as F
from harness import _Wrap, check_module

import torch2x


def late(path):
    """``torch.<path>`` looked up at call time: the tracer patches torch's attributes, which
    references taken while collecting tests would bypass."""
    return lambda *args: operator.attrgetter(path)(torch)(*args)


X = (2, 3, 4)


def several(*fns):
    """One module computing every ``fn``: one conversion checks many ops (conversions are the slow part)."""
    return lambda *xs: tuple(fn(*xs) for fn in fns)


def grouped(fns, ids, size=5):
    """``several`` over chunks of ``fns``, as pytest params named after the ops they hold."""
    return [pytest.param(several(*fns[i:i + size]), id=",".join(ids[i:i + size])) for i in range(0, len(fns), size)]


def _ints(shape, lo=-9, hi=10, dtype=torch.int64):
    return torch.randint(lo, hi, shape, dtype=dtype)


def _nonzero_ints(shape, dtype=torch.int64):
    x = _ints(shape, dtype=dtype)
    return torch.where(x == 0, torch.ones_like(x), x)


_BINARY_FLOAT = [
    lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
    lambda x, y: torch.add(x, y, alpha=2), lambda x, y: torch.sub(x, y, alpha=0.5), lambda x, y: x.mul(y),
    lambda x, y: torch.rsub(x, y, alpha=3), lambda x, y: torch.maximum(x, y), lambda x, y: torch.minimum(x, y),
    lambda x, y: torch.lerp(x, y, 0.3), lambda x, y: torch.addcmul(x, x, y, value=0.5),
    lambda x, y: torch.addcdiv(x, x, y.abs() + 1, value=2), lambda x, y: torch.fmax(x, y),
]
_BINARY_FLOAT_IDS = ["add", "sub", "mul", "truediv", "add_alpha", "sub_alpha", "mul_method", "rsub", "maximum",
                     "minimum", "lerp", "addcmul", "addcdiv", "fmax"]


@pytest.mark.parametrize("fn", _BINARY_FLOAT, ids=_BINARY_FLOAT_IDS)
def test_binary_float(fn):
    check_module(fn, torch.randn(X), torch.randn(X))


@pytest.mark.parametrize("shapes", [(X, (4,)), ((3, 1), (1, 5)), ((), X)], ids=str)
def test_binary_broadcast(shapes):
    check_module(several(*_BINARY_FLOAT), torch.randn(shapes[0]), torch.randn(shapes[1]))


@pytest.mark.parametrize("fn", [
    lambda x: 2 + x, lambda x: 2 - x, lambda x: 3 * x, lambda x: 2 / x, lambda x: x + 1, lambda x: x - 0.5,
    lambda x: x * 2, lambda x: x / 4, lambda x: 2 ** x, lambda x: x ** 2, lambda x: x ** 3, lambda x: x.abs() ** 0.5,
    lambda x: x.abs() ** -0.5, lambda x: x ** -1, lambda x: x.abs() ** 1.7, lambda x: torch.pow(x, 1),
    lambda x: torch.pow(2.5, x), lambda x: torch.float_power(x.abs(), 2.5).float(),
], ids=["radd", "rsub", "rmul", "rtruediv", "add", "sub", "mul", "div", "rpow", "sq", "cube", "sqrt", "rsqrt",
        "recip", "pow", "pow1", "scalar_base", "float_power"])
def test_scalar_operands(fn):
    check_module(fn, torch.randn(X) + 0.1)


_BINARY_INT = [
    lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y, lambda x, y: x // y,
    lambda x, y: x % y, lambda x, y: torch.fmod(x, y), lambda x, y: torch.div(x, y, rounding_mode="trunc"),
    lambda x, y: torch.div(x, y, rounding_mode="floor"), lambda x, y: torch.remainder(x, y),
    lambda x, y: torch.maximum(x, y), lambda x, y: x + 0.5, lambda x, y: x * 1.5, lambda x, y: x / 2,
    lambda x, y: 7 // y, lambda x, y: 7 % y, lambda x, y: x ** 2, lambda x, y: x.abs() ** 3,
    lambda x, y: x.clamp(-3, 4), lambda x, y: x.clamp(min=y), lambda x, y: x.clamp(max=2.5),
]
_BINARY_INT_IDS = ["add", "sub", "mul", "truediv", "floordiv", "mod", "fmod", "trunc", "floor", "remainder", "maximum",
        "add_float", "mul_float", "div_int", "rfloordiv", "rmod", "sq", "cube", "clamp", "clamp_tensor",
        "clamp_float"]


@pytest.mark.parametrize("fn", _BINARY_INT, ids=_BINARY_INT_IDS)
def test_binary_int(fn):
    check_module(fn, _ints(X), _nonzero_ints(X))


def test_binary_int32():
    check_module(several(*_BINARY_INT), _ints(X, dtype=torch.int32), _nonzero_ints(X, dtype=torch.int32))


@pytest.mark.parametrize("fn", [
    lambda x, y: x // y, lambda x, y: x % y, lambda x, y: torch.fmod(x, y),
    lambda x, y: torch.div(x, y, rounding_mode="trunc"), lambda x, y: torch.div(x, y, rounding_mode="floor"),
    lambda x, y: 5.0 % y, lambda x, y: 5.5 // y,
], ids=["floordiv", "mod", "fmod", "trunc", "floor", "rmod", "rfloordiv"])
def test_rounding_division_float(fn):
    # Signs differ on purpose: remainder follows the divisor, fmod the dividend.
    x = torch.tensor([7.5, -7.5, 7.5, -7.5, 3.0, -0.25])
    y = torch.tensor([2.0, 2.0, -2.0, -2.0, 1.5, 4.0])
    check_module(fn, x, y)


@pytest.mark.parametrize("fn", [
    lambda x, y: x + y, lambda x, y: x * y, lambda x, y: y / x, lambda x, y: x - y, lambda x, y: x > y,
    lambda x, y: torch.where(x > 0, x, y),
], ids=["add", "mul", "div", "sub", "gt", "where"])
def test_mixed_int_float(fn):
    check_module(fn, _nonzero_ints(X, dtype=torch.int32), torch.randn(X))


_COMPARE = [
    lambda x, y: x == y, lambda x, y: x != y, lambda x, y: x < y, lambda x, y: x <= y, lambda x, y: x > y,
    lambda x, y: x >= y, lambda x, y: torch.eq(x, y), lambda x, y: x.ne(y), lambda x, y: torch.less_equal(x, y),
    lambda x, y: x.greater_equal(y), lambda x, y: x > 0.5, lambda x, y: x == 0, lambda x, y: x.le(0),
]
_COMPARE_IDS = ["eq", "ne", "lt", "le", "gt", "ge", "torch_eq", "ne_method", "less_equal", "greater_equal",
        "gt_scalar", "eq_scalar", "le_scalar"]
_CMP_X = torch.tensor([[0.0, 1.0, 2.0, -1.0], [0.5, 0.5, 3.0, 0.0]])
_CMP_Y = torch.tensor([[0.0, 2.0, 1.0, -1.0], [0.5, 1.0, 3.0, 4.0]])


@pytest.mark.parametrize("fn", _COMPARE, ids=_COMPARE_IDS)
def test_compare(fn):
    check_module(fn, _CMP_X, _CMP_Y)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16])
def test_compare_dtypes(dtype):
    check_module(several(*_COMPARE), _CMP_X.to(dtype), _CMP_Y.to(dtype))


def test_compare_nan():
    # NaN compares false both ways, so x <= 1 is not "not (x > 1)".
    check_module(lambda x: ((x <= 1.0) | (x >= 1.0)) ^ (x != x), torch.tensor([float("nan"), 1.0, 2.0]))


@pytest.mark.parametrize("fn", grouped([
    lambda a, b: a & b, lambda a, b: a | b, lambda a, b: a ^ b, lambda a, b: ~a, lambda a, b: torch.logical_not(a),
    lambda a, b: torch.logical_and(a, b), lambda a, b: torch.logical_or(a, b), lambda a, b: torch.logical_xor(a, b),
    lambda a, b: torch.bitwise_and(a, b), lambda a, b: a.logical_not() | b, lambda a, b: a == b,
    lambda a, b: a + b, lambda a, b: a * b, lambda a, b: torch.where(a, b, False),
], ["and", "or", "xor", "invert", "logical_not", "logical_and", "logical_or", "logical_xor", "bitwise_and",
        "not_or", "eq", "add", "mul", "where_scalar"]))
def test_bool_logic(fn):
    check_module(fn, torch.rand(X) > 0.5, torch.rand(X) > 0.5)


@pytest.mark.parametrize("fn", [
    lambda x: torch.logical_and(x, x - 1), lambda x: torch.logical_not(x), lambda x: torch.logical_or(x, x * 0),
    lambda x: (x * 1).logical_xor_(x - 1), lambda x: (x * 1).logical_not_(),
], ids=["and", "not", "or", "xor_inplace", "not_inplace"])
def test_logic_on_numbers(fn):
    check_module(fn, torch.tensor([0.0, 1.0, -2.0, 0.5, 0.0]))


@pytest.mark.parametrize("fn", grouped([
    lambda x: torch.clamp(x, -0.5, 0.5), lambda x: x.clamp(min=0), lambda x: x.clamp(max=0.2), lambda x: x.clip(-1, 1),
    lambda x: torch.clamp_min(x, 0.1), lambda x: x.clamp_max(0.3), lambda x: x.clamp(1.0, -1.0),
    lambda x: x.clamp(torch.zeros(4), torch.ones(4)),
], ["both", "min", "max", "clip", "clamp_min", "clamp_max", "min_gt_max", "tensor_bounds"]))
def test_clamp(fn):
    check_module(fn, torch.randn(X))


@pytest.mark.parametrize("fn", [
    lambda x, y: torch.where(x > 0, x, y), lambda x, y: torch.where(x > 0, x, 0.0),
    lambda x, y: torch.where(x > 0, 1.0, y),
    lambda x, y: x.where(x > y, y), lambda x, y: x.masked_fill(x > 0.5, -1.0), lambda x, y: x.masked_fill(y < 0, 0),
    lambda x, y: x.masked_fill(x > 0, torch.tensor(2.5)), lambda x, y: torch.where(x > 0, 1, 0),
], ids=["where", "where_scalar_other", "where_scalar_input", "method", "masked_fill", "masked_fill_int_value",
        "masked_fill_0d", "where_ints"])
def test_where(fn):
    check_module(fn, torch.randn(X), torch.randn(4))


_UNARY = {
    "abs": late("abs"), "neg": late("neg"), "dunder_neg": operator.neg, "dunder_abs": operator.abs, "exp": late("exp"),
    "sin": late("sin"), "cos": late("cos"), "tan": late("tan"), "atan": late("atan"), "sinh": late("sinh"),
    "cosh": late("cosh"),
    "tanh": late("tanh"), "erf": late("erf"), "floor": late("floor"), "ceil": late("ceil"), "round": late("round"),
    "trunc": late("trunc"), "fix": late("fix"), "frac": late("frac"), "sign": late("sign"), "sgn": late("sgn"),
    "sigmoid": late("sigmoid"), "square": late("square"), "expm1": late("expm1"), "exp2": late("exp2"),
    "asinh": late("asinh"), "round_decimals": lambda x: torch.round(x, decimals=2),
    "round_neg_decimals": lambda x: torch.round(x * 100, decimals=-1), "positive": late("positive"),
    "method_exp": lambda x: x.exp(), "inplace_abs": lambda x: (x * 1).abs_(),
}


@pytest.mark.parametrize("fn", grouped(list(_UNARY.values()), list(_UNARY)))
def test_unary(fn):
    check_module(fn, torch.randn(X) * 2)


_POSITIVE = {
    "sqrt": late("sqrt"), "rsqrt": late("rsqrt"), "log": late("log"), "log2": late("log2"), "log10": late("log10"),
    "log1p": late("log1p"), "reciprocal": late("reciprocal"), "acosh": lambda x: torch.acosh(x + 1),
    "asin": lambda x: torch.asin(x / 4), "acos": lambda x: torch.acos(x / 4), "atanh": lambda x: torch.atanh(x / 4),
}


@pytest.mark.parametrize("fn", grouped(list(_POSITIVE.values()), list(_POSITIVE)))
def test_unary_positive(fn):
    check_module(fn, torch.rand(X) * 3 + 0.01)


@pytest.mark.parametrize("fn", [
    lambda x, y: torch.atan2(x, y), lambda x, y: torch.arctan2(y, x), lambda x, y: torch.hypot(x, y),
    lambda x, y: torch.xlogy(x, y.abs()), lambda x, y: torch.erfc(x), lambda x, y: torch.logit(x.sigmoid()),
    lambda x, y: torch.logit(x.sigmoid(), eps=0.2),
], ids=["atan2", "arctan2", "hypot", "xlogy", "erfc", "logit", "logit_eps"])
def test_binary_math(fn):
    x = torch.tensor([1.0, -1.0, 0.0, 0.0, -2.0, 3.0, -0.5, 0.0, 2.0])
    y = torch.tensor([1.0, 1.0, 2.0, -2.0, -1.0, -3.0, 0.0, 0.0, 0.0])
    check_module(fn, x, y)


def test_nan_to_num():
    x = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0])
    check_module(lambda x: (torch.nan_to_num(x * 1), x.nan_to_num(1.0, 5.0, -5.0)), x, rtol=0)


def test_round_half_to_even():
    check_module(late("round"), torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6]))


@pytest.mark.parametrize("fn", [late("log1p"), late("expm1")], ids=["log1p", "expm1"])
def test_small_arguments_keep_precision(fn):
    check_module(fn, torch.tensor([1e-7, -3e-6, 2e-4, 0.3, -0.9, 5.0, -30.0]), rtol=1e-5)


@pytest.mark.parametrize("names", [["abs", "neg", "sign", "square", "floor", "round"], ["sqrt", "exp", "reciprocal"]],
                         ids=",".join)
def test_unary_int(names):
    check_module(several(*map(late, names)), torch.randint(0 if "exp" in names else -9, 6, X))


@pytest.mark.parametrize("x", [torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0]), torch.arange(5)],
                         ids=["float", "int"])
def test_float_classes(x):
    check_module(lambda x: (torch.isnan(x * 1), torch.isinf(x * 1), torch.isfinite(x * 1)), x)


@pytest.mark.parametrize("fn", grouped([
    lambda x: x.float(), lambda x: x.half(), lambda x: x.int(), lambda x: x.long(), lambda x: x.bool(),
    lambda x: x.to(torch.int32), lambda x: x.to("cpu", torch.float16), lambda x: x.to(dtype=torch.int64),
    lambda x: x.type(torch.int32), lambda x: x.type_as(torch.zeros(1, dtype=torch.int64)),
    lambda x: (x.double() * 2).float(),
    lambda x: x.to(torch.zeros(1, dtype=torch.bool)), lambda x: x.to("cpu"), lambda x: x.contiguous() + 1,
    lambda x: x.clone() * 2, lambda x: x.detach() - 1, lambda x: torch.clone(x) / 2, lambda x: x.cpu() + 0,
], ["float", "half", "int", "long", "bool", "to_dtype", "to_device_dtype", "to_kw", "type", "type_as",
        "double", "to_tensor", "to_device", "contiguous", "clone", "detach", "torch_clone", "cpu"]))
def test_conversions(fn):
    check_module(fn, torch.randn(X) * 5)


def test_int_to_float_and_back():
    check_module(lambda x: (x.float() / 3).long() + x.to(torch.bool).int(), _ints(X))


@pytest.mark.parametrize("fn", grouped([
    lambda x: (x * 1).add_(1), lambda x: (x * 1).mul_(x), lambda x: (x * 1).sub_(0.5, alpha=2),
    lambda x: (x * 1).div_(2), lambda x: (x * 1).clamp_(0, 1), lambda x: (x * 1).masked_fill_(x > 0, 0.0),
    lambda x: (x * 1).pow_(2), lambda x: (x * 1).neg_(),
], ["add_", "mul_", "sub_", "div_", "clamp_", "masked_fill_", "pow_", "neg_"]))
def test_inplace(fn):
    check_module(fn, torch.randn(X))


def test_inplace_dunders():
    def f(x):
        y = x * 1
        y += 1
        y *= x
        y -= 2
        y /= 3
        y **= 2
        return y

    check_module(f, torch.randn(X))


@pytest.mark.parametrize("drop", [
    torch.nn.Dropout(0.3), torch.nn.Dropout2d(0.3), torch.nn.AlphaDropout(0.3), torch.nn.Dropout1d(0.2),
    torch.nn.FeatureAlphaDropout(0.1), torch.nn.Identity(),
], ids=["dropout", "dropout2d", "alpha", "dropout1d", "feature_alpha", "identity"])
def test_dropout_eval(drop):
    check_module(torch.nn.Sequential(torch.nn.ReLU(), drop), torch.randn(2, 3, 4))


def test_stochastic_depth_eval():
    from torchvision.ops import StochasticDepth

    check_module(torch.nn.Sequential(torch.nn.ReLU(), StochasticDepth(0.5, "row")), torch.randn(2, 3, 4))


@pytest.mark.parametrize("fn", [
    lambda x: F.dropout(x.relu(), 0.5, training=True), lambda x: torch.rand_like(x.relu()),
    lambda x: torch.bitwise_and(x.relu().long(), 3),
], ids=["dropout_training", "rand_like", "bitwise_int"])
def test_unsupported_is_reported(fn):
    report = torch2x.report(_Wrap(fn), [torch.randn(4)])
    assert not report.ok, str(report)


@pytest.mark.parametrize("fn", [
    lambda x, y: x * y + x / y, lambda x, y: torch.maximum(x, y) - x ** 2, lambda x, y: (x > y).float() * x,
    lambda x, y: torch.exp(x) + torch.log(y.abs() + 1),
], ids=["arith", "max_pow", "mask", "exp_log"])
def test_fp16(fn):
    check_module(fn, torch.randn(X), torch.randn(X), rtol=1e-2, fp16=True)


def test_fp16_mask_bias_saturates():
    # (1 - mask) * finfo(float32).min: in half the constant must saturate, or 0 * -inf gives NaN.
    def f(x, mask):
        bias = (1.0 - mask[:, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return torch.softmax(x + bias, -1)

    def g(x, mask):
        big = torch.tensor(torch.finfo(torch.float32).min)
        return torch.softmax(x.masked_fill(mask[:, None, :] == 0, big) * (mask[:, None, :] + 1), -1)

    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[:, 4:] = 0
    check_module(f, torch.randn(2, 4, 6), mask, rtol=1e-2, fp16=True)
    check_module(g, torch.randn(2, 4, 6), mask, rtol=1e-2, fp16=True)
