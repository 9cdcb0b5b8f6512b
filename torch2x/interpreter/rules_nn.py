"""Rules for neural-network layers (convolution, pooling, normalization, resize, ...).

Each rule follows TensorRT's documented semantics, not PyTorch's: padding modes,
resize coordinate transformations and rounding, pooling denominators and the
quantization rounding are computed explicitly, so a network built by any producer
(our converters, NVIDIA's ONNX parser) is executed the way TensorRT defines it.
Static per-layer configuration is read back once and kept in ``env.cached``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..dtypes import to_torch
from ..flavour import trt
from .core import UnsupportedLayerError, rule

LT = trt.LayerType
PM = trt.PaddingMode


# ----------------------------------------------------------------------------- helpers


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for reduced-precision floats on CPU (many CPU kernels lack them), else the input's dtype."""
    if x.dtype in (torch.float16, torch.bfloat16) and x.device.type == "cpu":
        return torch.float32
    if not x.dtype.is_floating_point:
        return torch.float32
    return x.dtype


def _axes(mask: int, rank: int) -> list:
    return [a for a in range(rank) if mask & (1 << a)]


def _pad_arg(pre, post) -> list:
    """F.pad's argument (last dim first) from per-spatial-dim pre/post paddings."""
    out = []
    for b, a in zip(reversed(list(pre)), reversed(list(post))):
        out += [int(b), int(a)]
    return out


def _forward_padding(mode, in_sizes, kernel, stride, dilation, pre, post):
    """Pre/post padding per spatial dim for convolution and pooling, as ``PaddingMode`` defines it.

    EXPLICIT_ROUND_UP's last partial window is expressed as extra post padding, returned
    separately because pooling must not count it (it lies outside the padded input).
    """
    pres, posts, extras = [], [], []
    for i, size in enumerate(in_sizes):
        dk = 1 + dilation[i] * (kernel[i] - 1)
        s = stride[i]
        if mode in (PM.SAME_UPPER, PM.SAME_LOWER):
            p = ((size - 1) // s) * s + dk - size
            small = p // 2
            b, a = (small, p - small) if mode == PM.SAME_UPPER else (p - small, small)
            extra = 0
        else:
            b, a = int(pre[i]), int(post[i])
            m = size + b + a
            if mode == PM.EXPLICIT_ROUND_UP:
                out = -(-(m - dk) // s) + 1
            else:
                out = (m - dk) // s + 1
            extra = max(0, (out - 1) * s + dk - m)
        pres.append(b)
        posts.append(a)
        extras.append(extra)
    return pres, posts, extras


def _to_batched(x: torch.Tensor, spatial: int):
    """(leading..., C, *spatial) -> (N, C, *spatial) with the leading dims folded into N."""
    lead = x.shape[: x.dim() - spatial - 1]
    return x.reshape((-1,) + tuple(x.shape[x.dim() - spatial - 1:])), tuple(lead)


def _from_batched(y: torch.Tensor, lead: tuple):
    return y.reshape(lead + tuple(y.shape[1:]))


# ----------------------------------------------------------------------------- convolution


def _conv_config(layer):
    k = list(layer.kernel_size_nd)
    n = len(k)
    return dict(
        kernel=k,
        stride=list(layer.stride_nd)[:n],
        dilation=list(layer.dilation_nd)[:n],
        pre=list(layer.pre_padding)[:n],
        post=list(layer.post_padding)[:n],
        mode=layer.padding_mode,
        groups=int(layer.num_groups),
        maps=int(layer.num_output_maps),
    )


def _kernel_and_bias(layer, inputs, env, cfg, in_channels, deconv):
    kernel = env.weights(layer, "kernel")
    if kernel is None:
        if len(inputs) < 2 or inputs[1] is None:
            raise UnsupportedLayerError(layer, "no kernel weights and no kernel input tensor")
        kernel = inputs[1]
    bias = env.weights(layer, "bias")
    if bias is None and len(inputs) > 2 and inputs[2] is not None:
        bias = inputs[2]
    g = cfg["groups"]
    # TensorRT stores convolution kernels as [K, C/g, *k] and deconvolution kernels as [C, K/g, *k].
    shape = (in_channels, cfg["maps"] // g) if deconv else (cfg["maps"], in_channels // g)
    kernel = kernel.reshape(shape + tuple(cfg["kernel"]))
    if bias is not None:
        bias = bias.reshape(-1)
    return kernel, bias


def _conv_operands(layer, inputs, env, deconv: bool):
    """(config, spatial rank, batched input, leading dims, kernel, bias), all in the compute dtype."""
    cfg = env.cached(layer, "cfg", lambda: _conv_config(layer))
    x = inputs[0]
    n = len(cfg["kernel"])
    xb, lead = _to_batched(x, n)
    dtype = _compute_dtype(x)
    kernel, bias = _kernel_and_bias(layer, inputs, env, cfg, xb.shape[1], deconv=deconv)
    return cfg, n, xb.to(dtype), lead, kernel.to(dtype), None if bias is None else bias.to(dtype)


@rule(LT.CONVOLUTION)
def convolution(layer, inputs, env):
    cfg, n, xb, lead, kernel, bias = _conv_operands(layer, inputs, env, deconv=False)
    pre, post, extra = _forward_padding(
        cfg["mode"], xb.shape[2:], cfg["kernel"], cfg["stride"], cfg["dilation"], cfg["pre"], cfg["post"]
    )
    post = [a + e for a, e in zip(post, extra)]
    if pre == post and min(pre) >= 0:
        padding = pre
    else:
        xb = F.pad(xb, _pad_arg(pre, post))
        padding = [0] * n
    y = torch.convolution(xb, kernel, bias, cfg["stride"], padding, cfg["dilation"], False, [0] * n, cfg["groups"])
    return _from_batched(y, lead)


@rule(LT.DECONVOLUTION)
def deconvolution(layer, inputs, env):
    cfg, n, xb, lead, kernel, bias = _conv_operands(layer, inputs, env, deconv=True)
    pre, post = [], []
    for i in range(n):
        dk = 1 + cfg["dilation"][i] * (cfg["kernel"][i] - 1)
        if cfg["mode"] in (PM.SAME_UPPER, PM.SAME_LOWER):
            p = max(dk - cfg["stride"][i], 0)
            small = p // 2
            b, a = (small, p - small) if cfg["mode"] == PM.SAME_UPPER else (p - small, small)
        else:
            b, a = int(cfg["pre"][i]), int(cfg["post"][i])
        pre.append(b)
        post.append(a)
    if pre == post and min(pre) >= 0:
        return _from_batched(
            torch.convolution(xb, kernel, bias, cfg["stride"], pre, cfg["dilation"], True, [0] * n, cfg["groups"]), lead
        )
    # Asymmetric padding: the full transposed convolution, then crop (negative F.pad) the padding away.
    y = torch.convolution(xb, kernel, bias, cfg["stride"], [0] * n, cfg["dilation"], True, [0] * n, cfg["groups"])
    y = F.pad(y, [-v for v in _pad_arg(pre, post)])
    return _from_batched(y, lead)


# ----------------------------------------------------------------------------- pooling

_POOL_FNS = {1: (F.max_pool1d, F.avg_pool1d), 2: (F.max_pool2d, F.avg_pool2d), 3: (F.max_pool3d, F.avg_pool3d)}


def _pool_config(layer):
    w = list(layer.window_size_nd)
    n = len(w)
    return dict(
        window=w,
        stride=list(layer.stride_nd)[:n],
        pre=list(layer.pre_padding)[:n],
        post=list(layer.post_padding)[:n],
        mode=layer.padding_mode,
        type=layer.type,
        blend=float(layer.blend_factor),
        exclude=bool(layer.average_count_excludes_padding),
    )


@rule(LT.POOLING)
def pooling(layer, inputs, env):
    cfg = env.cached(layer, "cfg", lambda: _pool_config(layer))
    x = inputs[0]
    n = len(cfg["window"])
    if n not in _POOL_FNS:
        raise UnsupportedLayerError(layer, f"{n}-d pooling window")
    max_fn, avg_fn = _POOL_FNS[n]
    xb, lead = _to_batched(x, n)
    xb = xb.to(_compute_dtype(x))
    spatial = tuple(xb.shape[2:])
    ones = [1] * n
    pre, post, extra = _forward_padding(cfg["mode"], spatial, cfg["window"], cfg["stride"], ones,
                                        cfg["pre"], cfg["post"])
    full_post = [a + e for a, e in zip(post, extra)]
    pad = _pad_arg(pre, full_post)
    kind = cfg["type"]
    result_max = result_avg = None
    if kind in (trt.PoolingType.MAX, trt.PoolingType.MAX_AVERAGE_BLEND):
        padded = F.pad(xb, pad, value=float("-inf")) if any(pad) else xb
        result_max = max_fn(padded, cfg["window"], cfg["stride"])
    if kind in (trt.PoolingType.AVERAGE, trt.PoolingType.MAX_AVERAGE_BLEND):
        padded = F.pad(xb, pad) if any(pad) else xb
        volume = math.prod(cfg["window"])
        sums = avg_fn(padded, cfg["window"], cfg["stride"]) * volume
        if not any(pad):
            result_avg = sums / volume
        else:
            def make_count():
                # The denominator is the window's overlap with the unpadded input (excludes padding)
                # or with the padded input; never the part a round-up window hangs past the padding.
                inner = torch.ones((1, 1) + spatial, dtype=xb.dtype, device=xb.device)
                if cfg["exclude"]:
                    mask = F.pad(inner, pad)
                else:
                    mask = F.pad(F.pad(inner, _pad_arg(pre, post), value=1.0), _pad_arg([0] * n, extra))
                return avg_fn(mask, cfg["window"], cfg["stride"]) * volume

            count = env.cached(layer, ("count", spatial, xb.dtype), make_count)
            result_avg = sums / count
    if kind == trt.PoolingType.MAX:
        y = result_max
    elif kind == trt.PoolingType.AVERAGE:
        y = result_avg
    else:
        b = cfg["blend"]
        y = (1.0 - b) * result_max + b * result_avg
    return _from_batched(y, lead)


# ----------------------------------------------------------------------------- normalization


@rule(LT.NORMALIZATION)
def normalization(layer, inputs, env):
    cfg = env.cached(layer, "cfg", lambda: dict(axes=int(layer.axes), eps=float(layer.epsilon),
                                                groups=int(layer.num_groups)))
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    dtype = _compute_dtype(x)
    xf = x.to(dtype)
    axes = _axes(cfg["axes"], x.dim())
    groups = cfg["groups"]
    rank = x.dim()
    trailing = axes == list(range(rank - len(axes), rank)) and len(axes) > 0
    if trailing and groups == 1:
        # Layer (or instance) normalization over trailing axes: the fused kernel, same statistics;
        # it also applies scale and bias when they have the normalized shape.
        normalized = tuple(xf.shape[axes[0]:])
        fits = [t is not None and tuple(t.shape[t.dim() - len(normalized):]) == normalized
                and t.numel() == math.prod(normalized) for t in (scale, bias)]
        if all(fits):
            return F.layer_norm(xf, normalized, scale.to(dtype).reshape(normalized), bias.to(dtype).reshape(normalized),
                                eps=cfg["eps"])
        y = F.layer_norm(xf, normalized, eps=cfg["eps"])
    elif trailing and axes[0] == 2:
        # Group normalization over all spatial axes: PyTorch's fused kernel, same statistics.
        y = F.group_norm(xf, groups, eps=cfg["eps"])
    elif groups > 1:
        # The channel axis (1) is split into groups; statistics cover a group's channels and the axes.
        n, c = xf.shape[0], xf.shape[1]
        xg = xf.reshape((n, groups, c // groups) + tuple(xf.shape[2:]))
        dims = sorted({2} | {a + 1 for a in axes if a >= 2})
        var, mean = torch.var_mean(xg, dim=dims, keepdim=True, unbiased=False)
        y = ((xg - mean) * torch.rsqrt(var + cfg["eps"])).reshape(xf.shape)
    else:
        var, mean = torch.var_mean(xf, dim=axes, keepdim=True, unbiased=False)
        y = (xf - mean) * torch.rsqrt(var + cfg["eps"])

    def per_channel(t):
        t = t.to(dtype)
        # Group normalization's scale/bias may be per group ([1, G, 1, ...]) rather than per channel.
        if groups > 1 and t.dim() == x.dim() and t.shape[1] == groups and x.shape[1] != groups:
            t = t.repeat_interleave(x.shape[1] // groups, dim=1)
        return t

    if scale is not None:
        y = y * per_channel(scale)
    if bias is not None:
        y = y + per_channel(bias)
    return y


# ----------------------------------------------------------------------------- resize

_RCT = trt.ResizeCoordinateTransformation
_RRM = trt.ResizeRoundMode


def _resize_config(layer):
    scales = list(layer.scales or [])
    shape = layer.shape
    return dict(
        mode=layer.resize_mode,
        coord=layer.coordinate_transformation,
        rounding=layer.nearest_rounding,
        selector=layer.selector_for_single_pixel,
        cubic=float(layer.cubic_coeff),
        exclude=bool(layer.exclude_outside),
        scales=scales,
        shape=None if shape is None or len(shape) == 0 else list(shape),
    )


def _source_coords(cfg, out_len, in_len, scale, device):
    """x_original for every output index along one axis (float64), per the coordinate transformation."""
    i = torch.arange(out_len, dtype=torch.float64, device=device)
    if out_len == 1 and cfg["selector"] == trt.ResizeSelector.UPPER:
        return torch.zeros(1, dtype=torch.float64, device=device)
    coord = cfg["coord"]
    if coord == _RCT.ALIGN_CORNERS:
        if out_len == 1:
            return torch.zeros(1, dtype=torch.float64, device=device)
        return i * ((in_len - 1) / (out_len - 1))
    # With scales given, TensorRT (like ONNX Resize, which its parser maps onto this layer)
    # maps coordinates with 1/scale; with an output shape, with in/out.
    ratio = (1.0 / scale) if scale is not None else (in_len / out_len)
    if coord == _RCT.ASYMMETRIC:
        return i * ratio
    return (i + 0.5) * ratio - 0.5  # HALF_PIXEL


def _cubic_weights(t, a):
    """Keys cubic convolution weights for the four taps at offsets -1, 0, 1, 2 from floor(x)."""
    def near(d):
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(1 + t), near(t), near(1 - t), far(2 - t)]


def _resize_axis(x, axis, out_len, scale, cfg):
    in_len = x.shape[axis]
    device = x.device
    src = _source_coords(cfg, out_len, in_len, scale, device)
    mode = cfg["mode"]
    shape = [1] * x.dim()
    shape[axis] = out_len
    if mode == trt.InterpolationMode.NEAREST:
        r = cfg["rounding"]
        if r == _RRM.FLOOR:
            idx = torch.floor(src)
        elif r == _RRM.CEIL:
            idx = torch.ceil(src)
        elif r == _RRM.HALF_UP:
            idx = torch.floor(src + 0.5)
        else:  # HALF_DOWN
            idx = torch.ceil(src - 0.5)
        idx = idx.clamp(0, in_len - 1).long()
        return x.index_select(axis, idx)
    base = torch.floor(src)
    t = src - base
    base = base.long()
    if mode == trt.InterpolationMode.LINEAR:
        i0 = base.clamp(0, in_len - 1)
        i1 = (base + 1).clamp(0, in_len - 1)
        w = t.to(x.dtype).reshape(shape)
        return x.index_select(axis, i0) * (1 - w) + x.index_select(axis, i1) * w
    # CUBIC
    weights = _cubic_weights(t, cfg["cubic"])
    taps = [base + k for k in (-1, 0, 1, 2)]
    if cfg["exclude"]:
        weights = [w * ((tap >= 0) & (tap < in_len)).to(w.dtype) for w, tap in zip(weights, taps)]
        total = sum(weights)
        weights = [w / total for w in weights]
    out = None
    for w, tap in zip(weights, taps):
        term = x.index_select(axis, tap.clamp(0, in_len - 1)) * w.to(x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


@rule(LT.RESIZE)
def resize(layer, inputs, env):
    cfg = env.cached(layer, "cfg", lambda: _resize_config(layer))
    x = inputs[0]
    rank = x.dim()
    scales = cfg["scales"] or None
    out_shape = None
    dynamic = inputs[1] if len(inputs) > 1 else None
    if dynamic is not None:
        if dynamic.dtype.is_floating_point:
            # Scales as a tensor: TensorRT-RTX 1.7's builder only accepts an int shape here.
            scales = [float(v) for v in dynamic.tolist()]
        else:
            out_shape = [int(v) for v in dynamic.tolist()]
    if out_shape is None:
        if scales is not None:
            out_shape = [int(math.floor(s * scale)) for s, scale in zip(x.shape, scales)]
        elif cfg["shape"] is not None:
            out_shape = cfg["shape"]
        else:
            out_shape = list(layer.get_output(0).shape)
    y = x.to(_compute_dtype(x)) if cfg["mode"] != trt.InterpolationMode.NEAREST else x
    for axis in range(rank):
        scale = scales[axis] if scales is not None else None
        if out_shape[axis] == x.shape[axis] and (scale is None or scale == 1.0):
            continue
        y = _resize_axis(y, axis, out_shape[axis], scale, cfg)
    return y


# ----------------------------------------------------------------------------- padding, scale, LRN


@rule(LT.PADDING)
def padding(layer, inputs, env):
    pad = env.cached(layer, "pad", lambda: _pad_arg(layer.pre_padding_nd, layer.post_padding_nd))
    # Negative padding crops; F.pad does both.
    return F.pad(inputs[0], pad)


@rule(LT.SCALE)
def scale(layer, inputs, env):
    x = inputs[0]
    mode = env.cached(layer, "mode", lambda: layer.mode)
    axis = env.cached(layer, "axis", lambda: int(layer.channel_axis))
    dtype = _compute_dtype(x)
    y = x.to(dtype)

    def coeff(attr):
        w = env.weights(layer, attr)
        if w is None:
            return None
        w = w.to(dtype)
        if mode == trt.ScaleMode.UNIFORM:
            return w.reshape(())
        if mode == trt.ScaleMode.CHANNEL:
            shape = [1] * x.dim()
            shape[axis] = -1
            return w.reshape(shape)
        return w.reshape(x.shape[axis:])  # ELEMENTWISE: one coefficient per element from the channel axis on

    s, sh, p = coeff("scale"), coeff("shift"), coeff("power")
    if s is not None:
        y = y * s
    if sh is not None:
        y = y + sh
    if p is not None:
        y = torch.pow(y, p)
    return y


@rule(LT.LRN)
def lrn(layer, inputs, env):
    cfg = env.cached(layer, "cfg",
                     lambda: (int(layer.window_size), float(layer.alpha), float(layer.beta), float(layer.k)))
    window, alpha, beta, k = cfg
    x = inputs[0]
    dtype = _compute_dtype(x)
    xf = x.to(dtype)
    # Cross-channel over the third-from-last axis (C of NCHW), window centred on the channel;
    # alpha is divided by the window size (the Caffe/PyTorch LocalResponseNorm convention).
    axis = x.dim() - 3
    sq = xf.pow(2).movedim(axis, -1)
    sq = F.pad(sq, (window // 2, (window - 1) // 2))
    sums = sq.unfold(-1, window, 1).sum(-1).movedim(-1, axis)
    return xf / torch.pow(k + (alpha / window) * sums, beta)


# ----------------------------------------------------------------------------- grid sample

_GS_MODES = {
    trt.InterpolationMode.NEAREST: "nearest",
    trt.InterpolationMode.LINEAR: "bilinear",
    trt.InterpolationMode.CUBIC: "bicubic",
}
_GS_PADDING = {trt.SampleMode.FILL: "zeros", trt.SampleMode.CLAMP: "border", trt.SampleMode.REFLECT: "reflection"}


@rule(LT.GRID_SAMPLE)
def grid_sample(layer, inputs, env):
    cfg = env.cached(layer, "cfg", lambda: (layer.interpolation_mode, bool(layer.align_corners), layer.sample_mode))
    mode, align, sample = cfg
    if sample not in _GS_PADDING:
        raise UnsupportedLayerError(layer, f"sample mode {sample}")
    x, grid = inputs[0], inputs[1]
    dtype = _compute_dtype(x)
    return F.grid_sample(
        x.to(dtype), grid.to(dtype), mode=_GS_MODES[mode], padding_mode=_GS_PADDING[sample], align_corners=align
    )


# ----------------------------------------------------------------------------- quantization

_QRANGE = {
    trt.DataType.INT8: (-128.0, 127.0),
    trt.DataType.UINT8: (0.0, 255.0),
}
if hasattr(trt.DataType, "FP8"):
    _QRANGE[trt.DataType.FP8] = (-448.0, 448.0)


def _broadcast_qparam(t, x, axis):
    """A scale/zero point shaped to broadcast against x: scalar, per-channel along axis, or per block."""
    if t is None:
        return None
    t = t.to(torch.float32)
    if t.dim() == 0 or t.numel() == 1 and t.dim() <= 1:
        return t.reshape(())
    if t.dim() == 1:
        shape = [1] * x.dim()
        shape[axis % x.dim()] = -1
        return t.reshape(shape)
    for d in range(t.dim()):  # block quantization: one coefficient per block
        if t.shape[d] != x.shape[d]:
            t = t.repeat_interleave(x.shape[d] // t.shape[d], dim=d)
    return t


@rule(LT.QUANTIZE)
def quantize(layer, inputs, env):
    cfg = env.cached(layer, "cfg", lambda: (int(layer.axis), layer.to_type))
    axis, to_type = cfg
    x = inputs[0]
    if to_type not in _QRANGE:
        raise UnsupportedLayerError(layer, f"quantize to {to_type}")
    s = _broadcast_qparam(inputs[1], x, axis)
    zp = _broadcast_qparam(inputs[2] if len(inputs) > 2 else None, x, axis)
    q = x.to(torch.float32) / s
    if to_type != getattr(trt.DataType, "FP8", None):
        q = torch.round(q)  # round half to even, as TensorRT documents
    if zp is not None:
        q = q + zp
    lo, hi = _QRANGE[to_type]
    q = q.clamp(lo, hi)
    return q.to(to_torch(to_type))


@rule(LT.DEQUANTIZE)
def dequantize(layer, inputs, env):
    axis = env.cached(layer, "axis", lambda: int(layer.axis))
    x = inputs[0]
    s = _broadcast_qparam(inputs[1], x, axis)
    zp = _broadcast_qparam(inputs[2] if len(inputs) > 2 else None, x, axis)
    y = x.to(torch.float32)
    if zp is not None:
        y = y - zp
    return y * s
