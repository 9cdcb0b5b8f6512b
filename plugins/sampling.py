"""Sampling ops built from TensorRT's grid sample layer: ``F.grid_sample``, ``F.affine_grid`` and
torchvision's ``deform_conv2d`` (DCNv1 / DCNv2), with no plugin.

``deform_conv2d`` samples the input bilinearly at every kernel tap moved by its learned
offset (one grid sample over all taps, per offset group), multiplies by the modulation
mask (DCNv2), and contracts the samples with the weights in one matrix multiply.
"""
from __future__ import annotations

import numpy as np
import torch

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.tracer import register_target

_MODES = {"bilinear": trt.InterpolationMode.LINEAR, "nearest": trt.InterpolationMode.NEAREST,
          "bicubic": trt.InterpolationMode.CUBIC}
_PADDING = {"zeros": trt.SampleMode.FILL, "border": trt.SampleMode.CLAMP, "reflection": trt.SampleMode.REFLECT}


def _grid_sample_layer(ctx, x, grid, mode: str, padding_mode: str, align_corners: bool):
    layer = ctx.network.add_grid_sample(x, grid)
    layer.interpolation_mode = _MODES[mode]
    layer.sample_mode = _PADDING[padding_mode]
    layer.align_corners = bool(align_corners)
    return layer.get_output(0)


# float32 under fp16 as in torch.autocast: half-precision grid coordinates are off by ~W/4000 pixels
@converter("torch.nn.functional.grid_sample", fp32=True)
def grid_sample(ctx, call):
    mode, padding_mode = call.arg("mode"), call.arg("padding_mode")
    if mode not in _MODES:
        raise ConversionError(f"grid_sample mode {mode!r} has no TensorRT interpolation mode")
    if padding_mode not in _PADDING:
        raise ConversionError(f"grid_sample padding_mode {padding_mode!r} has no TensorRT sample mode")
    dtype = ctx.dtype_for(call.output.dtype)
    x, grid = ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("grid"), dtype)
    # torch's default align_corners (None) means False
    return _grid_sample_layer(ctx, x, grid, mode, padding_mode, bool(call.arg("align_corners")))


# the aten ops behind F.grid_sample, with the modes as integers (torch's GridSamplerInterpolation/Padding enums)
@converter("torch.grid_sampler", "torch.grid_sampler_2d", "torch.grid_sampler_3d", fp32=True,
           signature="input, grid, interpolation_mode, padding_mode, align_corners")
def grid_sampler(ctx, call):
    mode = ("bilinear", "nearest", "bicubic")[int(call.arg("interpolation_mode"))]
    padding_mode = ("zeros", "border", "reflection")[int(call.arg("padding_mode"))]
    dtype = ctx.dtype_for(call.output.dtype)
    x, grid = ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("grid"), dtype)
    return _grid_sample_layer(ctx, x, grid, mode, padding_mode, bool(call.arg("align_corners")))


def _linspace(steps: int, align_corners: bool) -> np.ndarray:
    """torch's normalized pixel centers (align_corners=False) or corners (True) along one axis."""
    if steps == 1 and align_corners:
        return np.zeros(1)
    return (2.0 * np.arange(steps) + 1.0) / steps - 1.0 if not align_corners else np.linspace(-1.0, 1.0, steps)


@converter("torch.nn.functional.affine_grid", fp32=True)
def affine_grid(ctx, call):
    size, align = tuple(call.arg("size")), bool(call.arg("align_corners"))
    n, spatial = size[0], size[2:]
    if len(spatial) not in (2, 3):
        raise ConversionError(f"affine_grid of size {size}: torch takes 4-D or 5-D sizes")
    # homogeneous base grid (x, y[, z], 1) with x along the last axis, as torch builds it
    axes = [_linspace(s, align) for s in reversed(spatial)]  # x, y[, z]
    mesh = np.meshgrid(*axes[::-1], indexing="ij")[::-1]  # arrays over (D,) H, W
    base = np.stack([*mesh, np.ones(spatial)], -1).reshape(1, -1, len(spatial) + 1).astype(np.float32)
    theta = ctx.trt(call.arg("theta"), trt.DataType.FLOAT)
    out = ctx.network.add_matrix_multiply(ctx.constant(base, trt.DataType.FLOAT), trt.MatrixOperation.NONE,
                                          theta, trt.MatrixOperation.TRANSPOSE).get_output(0)
    return ctx.reshape(out, (n, *spatial, len(spatial)))


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(e) for e in v)


def _tap_grid(size_in, size_out, kernel, stride, pad, dilation) -> np.ndarray:
    """Normalized (align_corners=False) coordinate of every undeformed tap: [kernel, size_out].

    A pixel coordinate p is (2p + 1) / size - 1 in grid units; align_corners=False keeps this
    well defined for a size of 1 (align_corners=True would divide by size - 1 = 0)."""
    pos = (np.arange(size_out) * stride - pad)[None, :] + (np.arange(kernel) * dilation)[:, None]
    return (2.0 * pos + 1.0) / size_in - 1.0


@converter("torchvision.ops.deform_conv2d", fp32=True)
def deform_conv2d(ctx, call):
    return _deform_conv2d(ctx, call.arg("input"), call.arg("offset"), call.arg("weight"), call.arg("bias"),
                          call.arg("mask"), _pair(call.arg("stride")), _pair(call.arg("padding")),
                          _pair(call.arg("dilation")), call.output.shape[-2:])


# The op torchvision's Python function calls: reached when the function itself was not intercepted
# (``from torchvision.ops import deform_conv2d`` done before the conversion binds the unpatched function).
@converter("torch.ops.torchvision.deform_conv2d", fp32=True,
           signature="input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, "
                     "n_weight_grps, n_offset_grps, use_mask")
def deform_conv2d_op(ctx, call):
    mask = call.arg("mask") if call.arg("use_mask") else None
    return _deform_conv2d(ctx, call.arg("input"), call.arg("offset"), call.arg("weight"), call.arg("bias"), mask,
                          (call.arg("stride_h"), call.arg("stride_w")), (call.arg("pad_h"), call.arg("pad_w")),
                          (call.arg("dil_h"), call.arg("dil_w")), call.output.shape[-2:])


def _deform_conv2d(ctx, x_t, off_t, w_t, bias_t, mask_t, stride, padding, dilation, out_hw):
    n, c, h, w = x_t.shape
    c_out, c_per_wg, kh, kw = w_t.shape
    ho, wo = out_hw
    k, p = kh * kw, ho * wo
    groups = off_t.shape[1] // (2 * k)  # offset groups
    wgroups = c // c_per_wg  # weight groups
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    f32 = trt.DataType.FLOAT
    # Offsets are laid out [N, G, kh*kw, (dy, dx), Ho, Wo]; sample positions are
    # (oy*sh - ph + i*dh + dy, ox*sw - pw + j*dw + dx), scaled to grid units (2/size per pixel).
    off = ctx.permute(ctx.reshape(ctx.trt(off_t, f32), (n, groups, k, 2, ho, wo)), (0, 1, 2, 4, 5, 3))
    gy = _tap_grid(h, ho, kh, sh, ph, dh)  # [kh, Ho]
    gx = _tap_grid(w, wo, kw, sw, pw, dw)  # [kw, Wo]
    base = np.empty((1, 1, kh, kw, ho, wo, 2), np.float32)
    base[..., 0] = gy[None, None, :, None, :, None]
    base[..., 1] = gx[None, None, None, :, None, :]
    scale = np.array([2.0 / h, 2.0 / w], np.float32).reshape((1,) * 5 + (2,))
    grid = ctx.elementwise(off, ctx.constant(scale, f32), trt.ElementWiseOperation.PROD)
    grid = ctx.elementwise(grid, ctx.constant(base.reshape(1, 1, k, ho, wo, 2), f32), trt.ElementWiseOperation.SUM)
    # grid sample reads (x, y) pairs, torchvision's offsets are (y, x)
    grid = ctx.slice(grid, (0, 0, 0, 0, 0, 1), (n, groups, k, ho, wo, 2), (1, 1, 1, 1, 1, -1))
    grid = ctx.reshape(grid, (n * groups, k * ho, wo, 2))
    # Each offset group samples its own contiguous slice of channels. Zero padding per corner is
    # torchvision's bilinear_interpolate: a corner outside the image reads 0.
    x = ctx.reshape(ctx.trt(x_t, f32), (n * groups, c // groups, h, w))
    cols = _grid_sample_layer(ctx, x, grid, "bilinear", "zeros", False)  # [N*G, C/G, K*Ho, Wo]
    if mask_t is not None:
        cols = ctx.reshape(cols, (n, groups, c // groups, k, p))
        mask = ctx.reshape(ctx.trt(mask_t, f32), (n, groups, 1, k, p))
        cols = ctx.elementwise(cols, mask, trt.ElementWiseOperation.PROD)
    cols = ctx.reshape(cols, (n, wgroups, c_per_wg * k, p))
    weights = ctx.reshape(ctx.trt(w_t, f32), (1, wgroups, c_out // wgroups, c_per_wg * k))
    out = ctx.network.add_matrix_multiply(weights, trt.MatrixOperation.NONE, cols, trt.MatrixOperation.NONE)
    out = ctx.reshape(out.get_output(0), (n, c_out, ho, wo))
    if bias_t is not None:
        out = ctx.elementwise(out, ctx.reshape(ctx.trt(bias_t, f32), (1, c_out, 1, 1)),
                              trt.ElementWiseOperation.SUM)
    return out


# torchvision.ops.deform_conv2d is a Python function: DeformConv2d.forward looks it up in
# torchvision.ops.deform_conv, user code usually in torchvision.ops.
register_target("torchvision.ops.deform_conv", "deform_conv2d", "torchvision.ops.deform_conv2d")
register_target("torchvision.ops", "deform_conv2d", "torchvision.ops.deform_conv2d")
register_target(torch.ops.torchvision, "deform_conv2d", "torch.ops.torchvision.deform_conv2d")
