"""torchvision's roi_align from gathers and elementwise layers, with no plugin.

Every box is cut into ``output_size`` bins, each bin is sampled on a regular grid of
points, each point reads the feature map bilinearly (torchvision's ``bilinear_interpolate``:
points within one pixel outside the map read the border, farther ones read 0), and the bin
averages its points. The corners of all points are fetched with one gather from the feature
map laid out as ``[N*H*W, C]`` rows, so the box's batch index is part of the row.
"""
from __future__ import annotations

import numpy as np
import torch

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import TracedInt
from torch2x.tracer import register_target

EW = trt.ElementWiseOperation
F32 = trt.DataType.FLOAT


def _rois(ctx, boxes):
    """Boxes as one ``[K, 5]`` (batch index, x1, y1, x2, y2) float network tensor, as torch values, whether
    they come from the traced inputs (else they are constants), and K (an int, or a traced size when the
    number of boxes is dynamic: boxes from a data-dependent step)."""
    if isinstance(boxes, torch.Tensor):
        return ctx.trt(boxes, F32), boxes, ctx.is_traced(boxes), ctx.dims(boxes)[0]
    traced = any(ctx.is_traced(b) for b in boxes)
    parts, values, counts = [], [], []
    for i, b in enumerate(boxes):  # torchvision's convert_boxes_to_roi_format: list position is the batch index
        count = ctx.dims(b)[0]
        if count == 0 and not isinstance(count, TracedInt):
            continue
        column = ctx.expand(ctx.constant(np.full((1, 1), i, np.float32), F32), (count, 1))
        parts.append(ctx.network.add_concatenation([column, ctx.trt(b, F32)]))
        parts[-1].axis = 1
        parts[-1] = parts[-1].get_output(0)
        values.append(torch.cat([torch.full((b.shape[0], 1), float(i)), b.float()], 1))
        counts.append(count)
    if not parts:
        raise ConversionError("roi_align got no boxes")
    if len(parts) == 1:
        return ctx._noted(parts[0], tuple(values[0].shape)), values[0], traced, counts[0]
    layer = ctx.network.add_concatenation(parts)
    layer.axis = 0
    rois = torch.cat(values)
    return ctx._noted(layer.get_output(0), tuple(rois.shape)), rois, traced, sum(counts[1:], counts[0])


def _sample_fractions(rois_value, traced: bool, ratio: int, bins: int, axis: int, scale: float, aligned: bool):
    """Where the points of a bin sit (in bins, [K or 1, S]) and the weight of each point ([K or 1, S]).

    sampling_ratio > 0 puts that many points per bin on every box. Adaptive sampling (<= 0) puts
    ceil(box size / bins) points, a count read from the box values: expressible with fixed shapes only
    for constant boxes (the largest count, with the extra points weighted 0)."""
    if ratio > 0:
        counts = np.array([ratio])
    else:
        if traced:
            raise ConversionError(
                "adaptive sampling (sampling_ratio <= 0) takes ceil(box size / output size) points per bin, a "
                "number read from the box values; pass sampling_ratio > 0 (torchvision's detection models use 2)")
        lo, hi = rois_value[:, 1 + axis].double() * scale, rois_value[:, 3 + axis].double() * scale
        size = (hi - lo) if aligned else (hi - lo).clamp(min=1.0)
        counts = np.ceil((size / bins).numpy()).astype(np.int64)
    s = max(int(counts.max()), 1)
    j = np.arange(s)[None, :]
    per = np.maximum(counts, 1)[:, None]
    frac = ((j + 0.5) / per).astype(np.float32)
    weight = np.where(j < counts[:, None], 1.0 / per, 0.0).astype(np.float32)
    return frac, weight


def _axis_points(ctx, lo, hi, k_boxes, bins, frac, weight, size: int, aligned: bool):
    """Per box, along one axis: the low and high corner rows (int32) of every point and their weights.

    ``lo``/``hi`` are [K, 1] box edges in feature-map pixels (K = ``k_boxes``, an int or a traced size);
    the results are [K, bins * S * 2] (each point's low then high corner)."""
    length = ctx.elementwise(hi, lo, EW.SUB)
    if not aligned:  # legacy roi_align: boxes are at least one pixel
        length = ctx.elementwise(length, 1.0, EW.MAX)
    k, s = frac.shape
    offsets = (np.arange(bins)[None, :, None] + frac[:, None, :]).reshape(k, bins * s) / bins
    pos = ctx.elementwise(lo, ctx.elementwise(length, ctx.constant(offsets.astype(np.float32), F32), EW.PROD), EW.SUM)
    # torchvision: points beyond one pixel outside the map read 0, the others are clamped into it
    inside = ctx.elementwise(ctx.cast(ctx.elementwise(pos, -1.0, EW.LESS), F32),
                             ctx.cast(ctx.elementwise(pos, float(size), EW.GREATER), F32), EW.MAX)
    keep = ctx.elementwise(1.0, inside, EW.SUB, F32)
    pos = ctx.elementwise(ctx.elementwise(pos, 0.0, EW.MAX), float(size - 1), EW.MIN)
    low = ctx.unary(pos, trt.UnaryOperation.FLOOR)
    frac_high = ctx.elementwise(pos, low, EW.SUB)
    frac_low = ctx.elementwise(1.0, frac_high, EW.SUB, F32)
    w = ctx.elementwise(keep, ctx.constant(np.repeat(weight[:, None, :], bins, 1).reshape(k, bins * s), F32), EW.PROD)
    low_i = ctx.cast(low, trt.DataType.INT32)
    high_i = ctx.elementwise(ctx.elementwise(low_i, 1, EW.SUM, trt.DataType.INT32), size - 1, EW.MIN,
                             trt.DataType.INT32)
    a = bins * s
    return (_pairs(ctx, low_i, high_i, (k_boxes, a)),
            _pairs(ctx, ctx.elementwise(frac_low, w, EW.PROD), ctx.elementwise(frac_high, w, EW.PROD), (k_boxes, a)))


def _pairs(ctx, low, high, shape):
    """[K, A] low and high corner values interleaved into [K, 2A]: one gather reads both corners."""
    layer = ctx.network.add_concatenation([ctx.reshape(low, shape + (1,)), ctx.reshape(high, shape + (1,))])
    layer.axis = 2
    return ctx.reshape(layer.get_output(0), (shape[0], 2 * shape[1]))


@converter("torchvision.ops.roi_align", fp32=True)
def roi_align(ctx, call):
    size = call.arg("output_size")
    return _roi_align(ctx, call.arg("input"), _rois(ctx, call.arg("boxes")), (size, size) if isinstance(size, int)
                      else tuple(size), float(call.arg("spatial_scale")), int(call.arg("sampling_ratio")),
                      bool(call.arg("aligned")))


# The op torchvision's Python function calls: reached when the function itself was not intercepted
# (``from torchvision.ops import roi_align`` done before the conversion binds the unpatched function).
@converter("torch.ops.torchvision.roi_align", fp32=True,
           signature="input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned")
def roi_align_op(ctx, call):
    return _roi_align(ctx, call.arg("input"), _rois(ctx, call.arg("rois")),
                      (int(call.arg("pooled_height")), int(call.arg("pooled_width"))), float(call.arg("spatial_scale")),
                      int(call.arg("sampling_ratio")), bool(call.arg("aligned")))


def _roi_align(ctx, x_t, rois, output_size, scale: float, ratio: int, aligned: bool):
    """roi_align of feature map ``x_t`` (a torch tensor) over ``rois`` (what ``_rois`` returns): [K, C, ph, pw]."""
    n, c, h, w = x_t.shape
    ph, pw = output_size
    rois, rois_value, traced, k = rois
    col = [ctx.slice(rois, (0, j), (k, 1)) for j in range(5)]
    shift = 0.5 if aligned else 0.0  # aligned=True moves box corners onto pixel centers

    def edge(j):
        return ctx.elementwise(ctx.elementwise(col[j], scale, EW.PROD), shift, EW.SUB)

    frac_y, weight_y = _sample_fractions(rois_value, traced, ratio, ph, 1, scale, aligned)
    frac_x, weight_x = _sample_fractions(rois_value, traced, ratio, pw, 0, scale, aligned)
    ys, wys = _axis_points(ctx, edge(2), edge(4), k, ph, frac_y, weight_y, h, aligned)  # [K, 2 * ph * points per bin]
    xs, wxs = _axis_points(ctx, edge(1), edge(3), k, pw, frac_x, weight_x, w, aligned)
    ay, ax = ys.shape[1], xs.shape[1]  # 2 corners per point
    batch_row = ctx.elementwise(ctx.cast(col[0], trt.DataType.INT32), h * w, EW.PROD, trt.DataType.INT32)
    rows = ctx.permute(ctx.trt(x_t, F32), (0, 2, 3, 1))
    rows = ctx.reshape(rows, (n * h * w, c))
    index = ctx.elementwise(batch_row, ctx.elementwise(ys, w, EW.PROD, trt.DataType.INT32), EW.SUM)
    index = ctx.elementwise(ctx.reshape(index, (k, ay, 1)), ctx.reshape(xs, (k, 1, ax)), EW.SUM)
    values = ctx.network.add_gather(rows, index, 0).get_output(0)  # [K, Ay, Ax, C]
    weight = ctx.elementwise(ctx.reshape(wys, (k, ay, 1, 1)), ctx.reshape(wxs, (k, 1, ax, 1)), EW.PROD)
    total = ctx.reshape(ctx.elementwise(values, weight, EW.PROD), (k, ph, ay // ph, pw, ax // pw, c))
    pooled = ctx.network.add_reduce(total, trt.ReduceOperation.SUM, (1 << 2) | (1 << 4), False).get_output(0)
    return ctx.permute(ctx._noted(pooled, (int(k), ph, pw, c)), (0, 3, 1, 2))



@converter("torchvision.ops.poolers._multiscale_roi_align", fp32=True)
def multiscale_roi_align(ctx, call):
    """MultiScaleRoIAlign (Faster/Mask R-CNN's box pooler): torchvision picks each box's FPN level from its
    area and pools only there, with data-dependent index lists. Fixed shapes: pool every box on every
    level and keep each box's own level through a 0/1 mask."""
    features, boxes, mapper = call.arg("x_filtered"), call.arg("boxes"), call.arg("mapper")
    scales, ratio = call.arg("scales"), int(call.arg("sampling_ratio"))
    if scales is None or mapper is None:
        raise ConversionError("MultiScaleRoIAlign has no scales yet (torchvision sets them on the first call)")
    size = tuple(call.arg("output_size"))
    rois = _rois(ctx, boxes)
    if len(features) == 1:
        return _roi_align(ctx, features[0], rois, size, float(scales[0]), ratio, False)
    k = rois[3]
    # LevelMapper: floor(lvl0 + log2(sqrt(area) / s0) + eps), clamped to [k_min, k_max]
    x1, y1, x2, y2 = (ctx.slice(rois[0], (0, j), (k, 1)) for j in range(1, 5))
    area = ctx.elementwise(ctx.elementwise(x2, x1, EW.SUB), ctx.elementwise(y2, y1, EW.SUB), EW.PROD)
    root = ctx.unary(area, trt.UnaryOperation.SQRT)
    log2 = ctx.elementwise(ctx.unary(ctx.elementwise(root, float(mapper.s0), EW.DIV), trt.UnaryOperation.LOG),
                           float(np.log(2.0)), EW.DIV)
    level = ctx.unary(ctx.elementwise(log2, float(mapper.lvl0) + float(mapper.eps), EW.SUM), trt.UnaryOperation.FLOOR)
    level = ctx.elementwise(ctx.elementwise(level, float(mapper.k_min), EW.MAX), float(mapper.k_max), EW.MIN)
    out = None
    for index, (feature, scale) in enumerate(zip(features, scales, strict=True)):
        here = ctx.cast(ctx.elementwise(level, float(mapper.k_min + index), EW.EQUAL), F32)
        pooled = ctx.elementwise(_roi_align(ctx, feature, rois, size, float(scale), ratio, False),
                                 ctx.reshape(here, (k, 1, 1, 1)), EW.PROD)
        out = pooled if out is None else ctx.elementwise(out, pooled, EW.SUM)
    return out

# RoIAlign.forward looks roi_align up in torchvision.ops.roi_align (the module, which the
# torchvision.ops attribute of the same name hides), MultiScaleRoIAlign in torchvision.ops.poolers.
register_target("torchvision.ops.roi_align", "roi_align", "torchvision.ops.roi_align")
register_target("torchvision.ops.poolers", "roi_align", "torchvision.ops.roi_align")
register_target("torchvision.ops", "roi_align", "torchvision.ops.roi_align")
register_target(torch.ops.torchvision, "roi_align", "torch.ops.torchvision.roi_align")
register_target("torchvision.ops.poolers", "_multiscale_roi_align", "torchvision.ops.poolers._multiscale_roi_align")
