"""Ops written as compositions of ops that have converters (``@composite``, see torch2x.registry).

Each function takes the op's own arguments and computes its result with torch calls; the tracer runs it
under tracing when the op has no converter, so its torch calls become layers, and it checks the result
against PyTorch's on the example before using it (a composite that disagrees is reported, never bound).
Arguments a composite does not handle raise :class:`ConversionError`, which reports the op.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn import _reduction

from torch2x.context import ConversionError
from torch2x.registry import composite

# --------------------------------------------------------------------------- no-ops on real tensors


@composite("torch.resolve_conj", "torch.resolve_neg", "torch.conj", "torch.Tensor.conj", "torch.conj_physical",
           "torch.Tensor.conj_physical", "torch.real", "torch.Tensor.real", "torch.alias_copy")
def real_identity(input):
    if input.is_complex():
        raise ConversionError("complex tensors: TensorRT has no complex type")
    return input.clone()


@composite("torch.isreal", "torch.Tensor.isreal")
def isreal(input):
    if input.is_complex():
        raise ConversionError("complex tensors: TensorRT has no complex type")
    return torch.ones_like(input, dtype=torch.bool)


# --------------------------------------------------------------------------- views as copies


def _copy_of(view: str):
    def copy(input, *args, **kwargs):
        # looked up at call time, so the view goes through the tracer's patch
        out = getattr(torch.Tensor, view)(input, *args, **kwargs)
        return [t.clone() for t in out] if isinstance(out, (tuple, list)) else out.clone()

    copy.__name__ = f"{view}_copy"
    return copy


for _view in ("permute", "t", "unbind", "split_with_sizes", "diagonal", "expand", "view", "unfold", "transpose",
              "squeeze", "unsqueeze", "select", "narrow", "detach"):
    if hasattr(torch, f"{_view}_copy"):
        composite(f"torch.{_view}_copy")(_copy_of(_view))


@composite("torch.unsafe_chunk", "torch.Tensor.unsafe_chunk")
def unsafe_chunk(input, chunks, dim=0):
    return torch.chunk(input, chunks, dim)


@composite("torch.unsafe_split", "torch.Tensor.unsafe_split")
def unsafe_split(input, split_size, dim=0):
    return torch.split(input, split_size, dim)


@composite("torch.Tensor.sum_to_size")
def sum_to_size(input, *size):
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
    lead = input.dim() - len(size)
    dims = list(range(lead)) + [lead + i for i, s in enumerate(size) if s == 1 and input.shape[lead + i] != 1]
    out = input.sum(dims, keepdim=True) if dims else input
    return out.reshape(size)


# --------------------------------------------------------------------------- elementwise


@composite("torch.deg2rad", "torch.Tensor.deg2rad")
def deg2rad(input):
    return _floating(input) * (math.pi / 180.0)


@composite("torch.rad2deg", "torch.Tensor.rad2deg")
def rad2deg(input):
    return _floating(input) * (180.0 / math.pi)


def _floating(x):
    """Integer and bool tensors as PyTorch's default float type, as unary float ops promote them."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


@composite("torch.sinc", "torch.Tensor.sinc", "torch.special.sinc")
def sinc(input):
    x = _floating(input) * math.pi
    return torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)


@composite("torch.heaviside", "torch.Tensor.heaviside")
def heaviside(input, values):
    dtype = torch.result_type(input, values)
    return torch.where(input == 0, values.to(dtype), (input > 0).to(dtype))


@composite("torch.logaddexp", "torch.Tensor.logaddexp")
def logaddexp(input, other):
    # max + log1p(exp(-|a - b|)), exact at equal infinities where a - b is NaN
    m = torch.maximum(input, other)
    return torch.where(input == other, input + math.log(2.0), m + torch.log1p(torch.exp(-torch.abs(input - other))))


@composite("torch.logaddexp2", "torch.Tensor.logaddexp2")
def logaddexp2(input, other):
    m = torch.maximum(input, other)
    rest = torch.log1p(torch.exp(-torch.abs(input - other) * math.log(2.0))) / math.log(2.0)
    return torch.where(input == other, input + 1.0, m + rest)


@composite("torch.isclose", "torch.Tensor.isclose")
def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    if input.dtype == torch.bool or other.dtype == torch.bool:
        return input == other
    close = input == other
    if not (input.is_floating_point() or other.is_floating_point()):
        if rtol == 0 and atol == 0:
            return close
        input, other = input.to(torch.get_default_dtype()), other.to(torch.get_default_dtype())
    if equal_nan:
        close = close | (torch.isnan(input) & torch.isnan(other))
    error = torch.abs(input - other)
    return close | (torch.isfinite(error) & (error <= atol + torch.abs(other * rtol)))


@composite("torch.isposinf", "torch.Tensor.isposinf")
def isposinf(input):
    return input == math.inf if input.is_floating_point() else torch.zeros_like(input, dtype=torch.bool)


@composite("torch.isneginf", "torch.Tensor.isneginf")
def isneginf(input):
    return input == -math.inf if input.is_floating_point() else torch.zeros_like(input, dtype=torch.bool)


@composite("torch.signbit", "torch.Tensor.signbit")
def signbit(input):
    if not input.is_floating_point():
        return input < 0
    # -0.0 has its sign bit set: 1 / -0.0 is -inf
    return (input < 0) | ((input == 0) & (1.0 / input < 0))


@composite("torch.copysign", "torch.Tensor.copysign")
def copysign(input, other):
    magnitude = torch.abs(_floating(input))
    negative = signbit(other) if isinstance(other, torch.Tensor) else torch.tensor(math.copysign(1.0, other) < 0)
    return torch.where(negative, -magnitude, magnitude)


@composite("torch.ldexp", "torch.Tensor.ldexp")
def ldexp(input, other):
    return _floating(input) * torch.pow(2.0, other)


@composite("torch.angle", "torch.Tensor.angle")
def angle(input):
    if input.is_complex():
        raise ConversionError("complex tensors: TensorRT has no complex type")
    x = _floating(input)
    return torch.where(torch.isnan(x), x, torch.where(x < 0, math.pi, 0.0).to(x.dtype))


@composite("torch.special.entr")
def entr(input):
    x = _floating(input)
    inner = torch.where(x == 0, torch.zeros_like(x), torch.full_like(x, -math.inf))
    return torch.where(torch.isnan(x), x, torch.where(x > 0, -x * torch.log(x), inner))


@composite("torch.special.ndtr")
def ndtr(input):
    return 0.5 * torch.erfc(-_floating(input) * math.sqrt(0.5))


@composite("torch.special.xlog1py")
def xlog1py(input, other):
    x, y = (v if isinstance(v, torch.Tensor) else torch.tensor(v) for v in (input, other))
    dtype = torch.result_type(input, other)
    dtype = dtype if dtype.is_floating_point else torch.get_default_dtype()
    x, y = x.to(dtype), y.to(dtype)
    return torch.where(torch.isnan(y), y, torch.where(x == 0, torch.zeros_like(x * y), x * torch.log1p(y)))


# Lanczos approximation (g = 7, 9 terms): float32-exact to ~1e-7 relative for x >= 0.5
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7)


@composite("torch.lgamma", "torch.Tensor.lgamma", "torch.special.gammaln")
def lgamma(input):
    x = _floating(input)
    reflect = x < 0.5
    z = torch.where(reflect, 1 - x, x) - 1  # both branches evaluate: keep the series' argument >= -0.5
    series = torch.full_like(z, _LANCZOS[0])
    for k, c in enumerate(_LANCZOS[1:]):
        series = series + c / (z + (k + 1))
    t = z + 7.5
    positive = 0.5 * math.log(2 * math.pi) + (z + 0.5) * torch.log(t) - t + torch.log(series)
    # lgamma(x) = log(pi / |sin(pi x)|) - lgamma(1 - x): infinite at the poles x = 0, -1, -2...
    # (sin(pi x) of x reduced to [-0.5, 0.5] first: pi * x itself loses the digits that matter near a pole)
    sine = torch.abs(torch.sin(math.pi * (x - torch.round(x))))
    return torch.where(reflect, math.log(math.pi) - torch.log(sine) - positive, positive)


@composite("torch.mvlgamma", "torch.Tensor.mvlgamma", "torch.special.multigammaln")
def mvlgamma(input, p):
    out = lgamma(input)
    for i in range(1, p):
        out = out + lgamma(input - i / 2)
    return out + p * (p - 1) / 4 * math.log(math.pi)


@composite("torch.digamma", "torch.Tensor.digamma", "torch.special.digamma", "torch.special.psi")
def digamma(input):
    x = _floating(input)
    reflect = x < 0.5
    z = torch.where(reflect, 1 - x, x)
    shift = torch.zeros_like(z)
    for _ in range(6):  # psi(z) = psi(z + 1) - 1 / z, up to where the asymptotic series is exact
        shift = shift + torch.where(z < 6, 1 / z, torch.zeros_like(z))
        z = torch.where(z < 6, z + 1, z)
    inv2 = 1 / (z * z)
    series = torch.log(z) - 0.5 / z - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240))))
    positive = series - shift
    # psi(x) = psi(1 - x) - pi / tan(pi x); PyTorch gives nan at the poles (and -inf at 0)
    out = torch.where(reflect, positive - math.pi / torch.tan(math.pi * (x - torch.round(x))), positive)
    pole = (x <= 0) & (x == torch.floor(x))
    return torch.where(pole, torch.where(x == 0, -math.inf, math.nan), out)


@composite("torch.polygamma", "torch.Tensor.polygamma", "torch.special.polygamma")
def polygamma(n, input):
    if isinstance(n, torch.Tensor):  # (Tensor.polygamma(n) passes the tensor first)
        n, input = input, n
    if n != 0:
        raise ConversionError("polygamma with n > 0: only n = 0 (digamma) is composed")
    return digamma(input)


@composite("torch.logcumsumexp", "torch.Tensor.logcumsumexp")
def logcumsumexp(input, dim):
    m = torch.amax(input, dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.log(torch.cumsum(torch.exp(input - m), dim)) + m


# --------------------------------------------------------------------------- reductions, search


@composite("torch.trace", "torch.Tensor.trace")
def trace(input):
    rows, cols = input.shape
    return (input * torch.eye(rows, cols, dtype=input.dtype)).sum()


@composite("torch.dist", "torch.Tensor.dist")
def dist(input, other, p=2):
    return torch.linalg.vector_norm(input - other, p)


@composite("torch.msort", "torch.Tensor.msort")
def msort(input):
    return torch.sort(input, dim=0).values


@composite("torch.isin")
def isin(elements, test_elements, *, assume_unique=False, invert=False):
    if not isinstance(elements, torch.Tensor):
        elements = torch.tensor(elements)
    if not isinstance(test_elements, torch.Tensor):
        test_elements = torch.tensor(test_elements)
    found = (elements.unsqueeze(-1) == test_elements.reshape(-1)).any(-1)
    return ~found if invert else found


def _count_below(boundaries, values, right):
    """How many ``boundaries`` (last dim) lie below each value (``right``: below or equal)."""
    below = boundaries <= values.unsqueeze(-1) if right else boundaries < values.unsqueeze(-1)
    return below.sum(-1)


@composite("torch.bucketize")
def bucketize(input, boundaries, *, out_int32=False, right=False):
    if not isinstance(input, torch.Tensor):
        raise ConversionError("bucketize of a Python number")
    out = _count_below(boundaries, input, right)
    return out.to(torch.int32 if out_int32 else torch.int64)


@composite("torch.searchsorted")
def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None):
    if sorter is not None or not isinstance(input, torch.Tensor):
        raise ConversionError("searchsorted with sorter= or a Python number")
    right = right or side == "right"
    if sorted_sequence.dim() == 1:
        out = _count_below(sorted_sequence, input, right)
    else:
        out = _count_below(sorted_sequence.unsqueeze(-2), input, right)
    return out.to(torch.int32 if out_int32 else torch.int64)


@composite("torch.cov", "torch.Tensor.cov")
def cov(input, *, correction=1, fweights=None, aweights=None):
    if fweights is not None or aweights is not None:
        raise ConversionError("cov with fweights/aweights")
    x = input.reshape(1, -1) if input.dim() < 2 else input
    x = _floating(x)
    xm = x - x.mean(1, keepdim=True)
    c = torch.matmul(xm, xm.t()) / (x.shape[1] - correction)
    return c.reshape(()) if input.dim() < 2 else c


@composite("torch.corrcoef", "torch.Tensor.corrcoef")
def corrcoef(input):
    c = cov(input)
    if c.dim() == 0:
        return c / c
    d = (c * torch.eye(c.shape[0], dtype=c.dtype)).sum(1)
    stddev = torch.sqrt(d)
    return torch.clamp(c / stddev.unsqueeze(1) / stddev.unsqueeze(0), -1, 1)


@composite("torch.linalg.vander")
def vander(x, *, N=None):
    x = x.reshape(1) if x.dim() == 0 else x
    n = x.shape[-1] if N is None else N
    powers = torch.arange(n, dtype=torch.int64)
    return torch.pow(x.unsqueeze(-1), powers.to(x.dtype)) if n else x.unsqueeze(-1)[..., :0]


@composite("torch.block_diag")
def block_diag(*tensors):
    mats = [t.reshape(1, -1) if t.dim() < 2 else t for t in tensors]
    mats = [t.reshape(1, 1) if t.dim() == 2 and t.numel() == 1 and t.shape == (1,) else t for t in mats]
    dtype = mats[0].dtype
    for t in mats[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    width = sum(t.shape[1] for t in mats)
    rows, left = [], 0
    for t in mats:
        right = width - left - t.shape[1]
        parts = [torch.zeros(t.shape[0], left, dtype=dtype), t.to(dtype), torch.zeros(t.shape[0], right, dtype=dtype)]
        rows.append(torch.cat([p for p in parts if p.shape[1]], 1))  # (TensorRT refuses empty constants)
        left += t.shape[1]
    return torch.cat(rows, 0)


# --------------------------------------------------------------------------- nn.functional


@composite("torch.nn.functional.cosine_similarity", "torch.cosine_similarity")
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    x1, x2 = torch.broadcast_tensors(x1, x2)
    n1 = torch.clamp_min(torch.linalg.vector_norm(x1, 2, dim, keepdim=True), eps)
    n2 = torch.clamp_min(torch.linalg.vector_norm(x2, 2, dim, keepdim=True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


@composite("torch.nn.functional.pairwise_distance", "torch.pairwise_distance")
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    rank = max(x1.dim(), x2.dim())
    return torch.linalg.vector_norm(x1 - x2 + eps, p, rank - 1 if rank else None, keepdim=keepdim)


@composite("torch.nn.functional.pdist", "torch.pdist")
def pdist(input, p=2):
    n = input.shape[0]
    if n < 2:
        raise ConversionError("pdist of fewer than 2 rows is empty, which a network cannot hold")
    i, j = torch.triu_indices(n, n, 1)
    return torch.linalg.vector_norm(input[i] - input[j], p, -1)


@composite("torch.nn.functional.unfold")
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    pair = torch.nn.modules.utils._pair
    kh, kw = pair(kernel_size)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    channels = x.shape[1]
    # one convolution per channel whose kernels pick one tap each: channel c, tap k -> output c * kh * kw + k
    weight = torch.eye(kh * kw, dtype=x.dtype).reshape(kh * kw, 1, kh, kw).repeat(channels, 1, 1, 1)
    out = F.conv2d(x, weight, None, pair(stride), pair(padding), pair(dilation), channels)
    out = out.reshape(out.shape[0], out.shape[1], out.shape[2] * out.shape[3])
    return out if batched else out.squeeze(0)


@composite("torch.native_layer_norm")
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    dims = list(range(input.dim() - len(normalized_shape), input.dim()))
    mean = input.mean(dims, keepdim=True)
    rstd = torch.rsqrt(((input - mean) ** 2).mean(dims, keepdim=True) + eps)
    out = (input - mean) * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


@composite("torch.native_group_norm")
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    x = input.reshape(N, group, -1)
    mean = x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(-1, keepdim=True) + eps)
    out = ((x - mean) * rstd).reshape(input.shape)
    shape = (1, C) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out, mean.reshape(N, group), rstd.reshape(N, group)


# --------------------------------------------------------------------------- losses


def _reduce(loss, reduction, size_average=None, reduce=None):
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ConversionError(f"reduction={reduction!r} is not one of 'none', 'mean', 'sum'")


def _weighted(loss, weight, reduction, size_average, reduce, mean_by_weight):
    """PyTorch's weighted regression losses: ``mean`` divides by the weights' sum (mse, l1) or the count."""
    if weight is None:
        return _reduce(loss, reduction, size_average, reduce)
    loss = loss * weight
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if reduction == "mean" and mean_by_weight:
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


@composite("torch.nn.functional.mse_loss")
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    a, b = torch.broadcast_tensors(input, target)
    return _weighted((a - b) ** 2, weight, reduction, size_average, reduce, True)


@composite("torch.nn.functional.l1_loss")
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    a, b = torch.broadcast_tensors(input, target)
    return _weighted(torch.abs(a - b), weight, reduction, size_average, reduce, True)


@composite("torch.nn.functional.smooth_l1_loss")
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    a, b = torch.broadcast_tensors(input, target)
    z = torch.abs(a - b)
    loss = z if beta == 0 else torch.where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta)
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.huber_loss")
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    a, b = torch.broadcast_tensors(input, target)
    z = torch.abs(a - b)
    loss = torch.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta))
    return _weighted(loss, weight, reduction, None, None, False)


@composite("torch.nn.functional.soft_margin_loss")
def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    return _reduce(torch.log1p(torch.exp(-input * target)), reduction, size_average, reduce)


@composite("torch.nn.functional.margin_ranking_loss")
def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    loss = torch.clamp_min(-target * (input1 - input2) + margin, 0)
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.hinge_embedding_loss")
def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    zeros = torch.zeros_like(input)
    loss = (torch.where(target != 1, torch.clamp_min(margin - input, 0), zeros)
            + torch.where(target != -1, input, zeros))
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.cosine_embedding_loss")
def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    dim = input1.dim() - 1
    eps = 1e-12  # PyTorch's EPSILON
    prod = (input1 * input2).sum(dim)
    cos = prod / torch.sqrt(((input1 * input1).sum(dim) + eps) * ((input2 * input2).sum(dim) + eps))
    zeros = torch.zeros_like(cos)
    loss = torch.where(target == 1, 1 - cos, zeros) + torch.where(target == -1, torch.clamp_min(cos - margin, 0), zeros)
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.triplet_margin_loss")
def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-06, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = torch.minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce(torch.clamp_min(margin + d_pos - d_neg, 0), reduction, size_average, reduce)


@composite("torch.nn.functional.triplet_margin_with_distance_loss")
def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0, swap=False,
                                      reduction="mean"):
    distance = distance_function if distance_function is not None else F.pairwise_distance
    d_pos, d_neg = distance(anchor, positive), distance(anchor, negative)
    if swap:
        d_neg = torch.minimum(d_neg, distance(positive, negative))
    return _reduce(torch.clamp_min(margin + d_pos - d_neg, 0), reduction)


@composite("torch.nn.functional.poisson_nll_loss")
def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-08, reduce=None,
                     reduction="mean"):
    loss = torch.exp(input) - target * input if log_input else input - target * torch.log(input + eps)
    if full:
        stirling = target * torch.log(target) - target + 0.5 * torch.log(2 * math.pi * target)
        loss = loss + torch.where(target > 1, stirling, torch.zeros_like(stirling))
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.gaussian_nll_loss")
def gaussian_nll_loss(input, target, var, full=False, eps=1e-06, reduction="mean"):
    if not isinstance(var, torch.Tensor):
        var = torch.full_like(input, float(var))
    elif var.shape != input.shape and input.shape[:-1] == var.shape:
        var = var.unsqueeze(-1)
    var = torch.clamp_min(var, eps)
    loss = 0.5 * (torch.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


@composite("torch.nn.functional.kl_div")
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    loss = torch.exp(target) * (target - input) if log_target else torch.xlogy(target, target) - target * input
    if size_average is None and reduce is None and reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.dim() else loss.sum()
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.binary_cross_entropy")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    # PyTorch clamps the logs at -100 so that 0 * log(0) stays finite
    loss = -(target * torch.clamp_min(torch.log(input), -100)
             + (1 - target) * torch.clamp_min(torch.log(1 - input), -100))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    softplus_neg = torch.log1p(torch.exp(-torch.abs(input))) + torch.clamp_min(-input, 0)  # log(1 + exp(-x))
    scale = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + scale * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.multilabel_soft_margin_loss")
def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    loss = -(target * F.logsigmoid(input) + (1 - target) * F.logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    loss = loss.sum(dim=input.dim() - 1) / input.shape[-1]
    return _reduce(loss, reduction, size_average, reduce)


@composite("torch.nn.functional.multi_margin_loss")
def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
    if p not in (1, 2):
        raise ConversionError("multi_margin_loss takes p=1 or p=2")
    x = input if input.dim() == 2 else input.reshape(1, -1)
    t = target.reshape(-1, 1)
    z = torch.clamp_min(margin - torch.gather(x, 1, t) + x, 0)
    if p == 2:
        z = z * z
    if weight is not None:
        z = z * weight[t]
    others = torch.arange(x.shape[1]).reshape(1, -1) != t  # the target's own class is left out
    loss = torch.where(others, z, torch.zeros_like(z)).sum(1) / x.shape[1]
    loss = loss if input.dim() == 2 else loss.reshape(())
    return _reduce(loss, reduction, size_average, reduce)


def _class_dim(input):
    return 1 if input.dim() >= 2 else 0


def _nll(logp, target, weight, ignore_index):
    """Per-element negative log-likelihood of ``target`` classes and each element's weight (0 if ignored)."""
    dim = _class_dim(logp)
    keep = target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    picked = -torch.gather(logp, dim, safe.unsqueeze(dim)).squeeze(dim)
    w = keep.to(logp.dtype) if weight is None else weight[safe] * keep.to(logp.dtype)
    return picked * w, w


def _nll_reduce(loss, w, reduction):
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction)


def _class_weight(weight, logp):
    """``weight`` shaped to broadcast along the class dim of ``logp``."""
    shape = [1] * logp.dim()
    shape[_class_dim(logp)] = -1
    return weight.reshape(shape)


@composite("torch.nn.functional.nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    loss, w = _nll(input, target, weight, ignore_index)
    return _nll_reduce(loss, w, reduction)


@composite("torch.nn.functional.cross_entropy")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    dim = _class_dim(input)
    classes = input.shape[dim]
    logp = F.log_softmax(input, dim)
    if target.is_floating_point():  # class probabilities
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / classes
        if weight is not None:
            logp = logp * _class_weight(weight, logp)
        loss = -(logp * target)
        if reduction == "mean":
            return loss.sum() / (input.numel() / classes)
        return loss.sum(dim) if reduction == "none" else _reduce(loss, reduction)
    loss, w = _nll(logp, target, weight, ignore_index)
    nll = _nll_reduce(loss, w, reduction)
    if label_smoothing <= 0:
        return nll
    smooth = -(logp if weight is None else logp * _class_weight(weight, logp)).sum(dim)
    smooth = torch.where(target != ignore_index, smooth, torch.zeros_like(smooth))
    smooth = smooth.sum() / w.sum() if reduction == "mean" else _reduce(smooth, reduction)
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / classes)


@composite("torch.nn.functional.linear_cross_entropy")
def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, options=None):
    logits = F.linear(input, linear_weight, linear_bias)
    return cross_entropy(logits, target, weight, ignore_index=-100 if ignore_index is None else ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing)
