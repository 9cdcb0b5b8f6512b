"""Resizing: F.interpolate and its aliases (F.upsample*, nn.Upsample) as one TensorRT resize layer
(mode="area" is adaptive average pooling, as in torch).

torch's kernels map output index ``i`` to a source coordinate with a ratio that is
``1 / scale_factor`` when a scale factor is given (and not recomputed), else ``in / out``;
TensorRT's resize does the same with ``scales`` versus ``shape``, so the converter sets
whichever torch used.
"""
from __future__ import annotations

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import is_traced

from .pooling import _adaptive

_RCT = trt.ResizeCoordinateTransformation
_RRM = trt.ResizeRoundMode
_IM = trt.InterpolationMode

# torch mode -> (interpolation, spatial rank or None for any)
_MODES = {
    "nearest": (_IM.NEAREST, None),
    "nearest-exact": (_IM.NEAREST, None),
    "linear": (_IM.LINEAR, 1),
    "bilinear": (_IM.LINEAR, 2),
    "bicubic": (_IM.CUBIC, 2),
    "trilinear": (_IM.LINEAR, 3),
}


def resize(ctx, x, out_shape, mode, align_corners, scales=None):
    """A resize layer computing torch's ``mode`` to the static ``out_shape``.

    ``scales`` (per spatial dim) are torch's scale factors when its kernels map
    coordinates with them; None maps with input/output sizes.
    """
    x = ctx.trt(x)
    if mode == "area":  # torch's 'area' is adaptive average pooling to the output size
        return _adaptive(ctx, x, trt.PoolingType.AVERAGE, len(x.shape) - 2, tuple(out_shape[2:]))
    if mode not in _MODES:
        raise ConversionError(f"interpolate mode {mode!r} has no TensorRT resize equivalent")
    kind, spatial = _MODES[mode]
    if x.dtype not in (trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.BF16):
        if kind != _IM.NEAREST:
            raise ConversionError(f"{mode} interpolation of integers (torch rounds them its own way)")
        x = ctx.cast(x, trt.DataType.FLOAT)  # TensorRT resizes floats only; nearest copies values exactly
    rank = len(x.shape)
    if spatial is not None and rank != spatial + 2:
        raise ConversionError(f"mode {mode!r} expects a {spatial + 2}-D input, got {rank}-D")
    layer = ctx.network.add_resize(x)
    layer.resize_mode = kind
    layer.selector_for_single_pixel = trt.ResizeSelector.FORMULA
    if kind == _IM.NEAREST:
        # nearest: src = floor(i * ratio); nearest-exact: floor((i + 0.5) * ratio), which is
        # HALF_PIXEL's (i + 0.5) * ratio - 0.5 rounded half up.
        exact = mode == "nearest-exact"
        layer.coordinate_transformation = _RCT.HALF_PIXEL if exact else _RCT.ASYMMETRIC
        layer.nearest_rounding = _RRM.HALF_UP if exact else _RRM.FLOOR
    else:
        layer.coordinate_transformation = _RCT.ALIGN_CORNERS if align_corners else _RCT.HALF_PIXEL
        if kind == _IM.CUBIC:
            layer.cubic_coeff = -0.75  # torch's bicubic uses A = -0.75, taps clamped at the border
            layer.exclude_outside = False
    if scales is not None and not (kind != _IM.NEAREST and align_corners):
        layer.scales = [1.0, 1.0] + [float(s) for s in scales]
    elif any(is_traced(s) for s in out_shape):  # sizes read from dynamic dims
        layer.set_input(1, ctx.shape_tensor(out_shape))
    else:
        layer.shape = tuple(out_shape)
    out = layer.get_output(0)
    if any(a >= 0 and a != int(b) for a, b in zip(out.shape, out_shape)):  # TensorRT rounded in*scale unlike torch
        raise ConversionError(f"resize by scales {scales} gives shape {tuple(out.shape)}, torch {tuple(out_shape)}")
    return out


def _scales(call, spatial):
    """torch's scale factors per spatial dim when its kernel maps coordinates with them, else None."""
    factor = call.arg("scale_factor", None)
    if factor is None or call.arg("recompute_scale_factor", None):
        return None
    if isinstance(factor, (list, tuple)):
        return [float(f) for f in factor]
    return [float(factor)] * spatial


@converter("torch.nn.functional.interpolate", "torch.nn.functional.upsample")
def interpolate(ctx, call):
    if call.arg("antialias", False):
        raise ConversionError("interpolate with antialias=True: TensorRT's resize has no antialiasing filter")
    x = call.arg("input")
    return resize(ctx, x, _out_shape(ctx, call, x), call.arg("mode"), bool(call.arg("align_corners")),
                  _scales(call, x.dim() - 2))


def _out_shape(ctx, call, x):
    """The output sizes: the input's batch and channels, then ``size`` as given (traced sizes follow
    dynamic dims), or the example's when a scale factor decides them."""
    size = call.arg("size", None)
    if size is None:
        return tuple(call.output.shape)
    spatial = x.dim() - 2
    return ctx.dims(x)[:2] + (tuple(size) if isinstance(size, (tuple, list)) else (size,) * spatial)


@converter("torch.nn.functional.upsample_nearest")
def upsample_nearest(ctx, call):
    x = call.arg("input")
    return resize(ctx, x, call.output.shape, "nearest", False, _scales(call, x.dim() - 2))


@converter("torch.nn.functional.upsample_bilinear")
def upsample_bilinear(ctx, call):
    return resize(ctx, call.arg("input"), call.output.shape, "bilinear", True)
