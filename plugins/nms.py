"""Non-maximum suppression through TensorRT's NMS layer.

``torchvision.ops.nms`` / ``batched_nms`` return as many indices as boxes survive: a length
read from the values. TensorRT's NMS layer gives the same indices as a ``[-1, 3]`` tensor of
data-dependent length plus a count, which a fixed-shape engine cannot return as a tensor of
the example's length. Those calls are reported with that reason; :func:`nms_padded` and
:func:`batched_nms_padded` are the fixed-shape equivalents that convert (the first
``max_output`` kept indices padded with -1, and how many were kept).
"""
from __future__ import annotations

import numpy as np
import torch

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.tracer import register_target, traceable

F32, I32 = trt.DataType.FLOAT, trt.DataType.INT32
# INMSLayer considers at most this many boxes per batch item (5000; 2000 on SM 5.3/6.2 GPUs)
TOPK_LIMIT = 5000
_DATA_DEPENDENT = ("{op} returns as many indices as boxes survive, a length read from the box values; "
                   "TensorRT's NMS layer gives them as a tensor of data-dependent length, which a fixed-shape "
                   "engine cannot return. Use torch2x.plugins.{padded}(..., max_output=N): the first N kept "
                   "indices padded with -1 and the count")


@traceable("torch2x.plugins.nms_padded")
def nms_padded(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
               max_output: int) -> tuple:
    """``torchvision.ops.nms`` with a fixed-size result: ``(keep, count)``.

    ``keep`` is int64 ``[max_output]``: the indices of the kept boxes in decreasing score order,
    then -1; ``count`` is the int64 number of kept boxes (at most ``max_output``). Converts to
    TensorRT's NMS layer. Example::

        keep, count = torch2x.plugins.nms_padded(boxes, scores, 0.5, max_output=100)
        boxes = boxes[keep.clamp(min=0)]  # rows past `count` repeat box 0
    """
    import torchvision

    return _pad(torchvision.ops.nms(boxes, scores, iou_threshold), max_output)


@traceable("torch2x.plugins.batched_nms_padded")
def batched_nms_padded(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                       max_output: int) -> tuple:
    """``torchvision.ops.batched_nms`` (boxes of different ``idxs`` never suppress each other) with a
    fixed-size result ``(keep, count)`` as :func:`nms_padded`."""
    import torchvision

    return _pad(torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold), max_output)


def _pad(keep: torch.Tensor, max_output: int) -> tuple:
    out = torch.full((int(max_output),), -1, dtype=torch.int64, device=keep.device)
    n = min(keep.numel(), int(max_output))
    out[:n] = keep[:n]
    return out, torch.tensor(n, dtype=torch.int64, device=keep.device)


def nms_layer(ctx, boxes, scores, iou_threshold: float, max_output: int):
    """TensorRT's NMS over ``[B, 4]`` corner boxes and ``[B]`` scores (one batch item, one class).

    Returns the layer's ``[-1, 3]`` int32 selected (batch, class, box) rows, in decreasing score
    order, and the int32 count. torchvision has no score threshold: the layer keeps scores above
    -inf, and -inf scores are raised to the lowest float32 so they are kept too."""
    b = boxes.shape[0]
    if b > TOPK_LIMIT:
        raise ConversionError(f"TensorRT's NMS layer considers at most {TOPK_LIMIT} boxes, got {b}")
    if b == 0:
        raise ConversionError("no boxes: TensorRT's NMS layer takes at least one")
    scores = ctx.elementwise(scores, float(np.finfo(np.float32).min), trt.ElementWiseOperation.MAX)
    layer = ctx.network.add_nms(ctx.reshape(boxes, (1, b, 4)), ctx.reshape(scores, (1, b, 1)),
                                ctx.scalar(int(max_output), I32))
    layer.bounding_box_format = trt.BoundingBoxFormat.CORNER_PAIRS
    layer.topk_box_limit = min(b, TOPK_LIMIT)
    layer.set_input(3, ctx.scalar(float(iou_threshold), F32))
    layer.set_input(4, ctx.scalar(float("-inf"), F32))
    return layer.get_output(0), layer.get_output(1)


def _padded_keep(ctx, selected, max_output: int):
    """The box column of ``selected`` as int64 ``[max_output]``, padded with -1 past the kept rows."""
    pad = ctx.constant(np.full((int(max_output), 3), -1, np.int32), I32)
    layer = ctx.network.add_concatenation([selected, pad])
    layer.axis = 0
    # a static slice of the data-dependent rows: there are always at least max_output of them
    column = ctx.slice(layer.get_output(0), (0, 2), (int(max_output), 1))
    return ctx.cast(ctx.reshape(column, (int(max_output),)), trt.DataType.INT64)


def _convert_padded(ctx, call, boxes):
    max_output = int(call.arg("max_output"))
    selected, count = nms_layer(ctx, boxes, ctx.trt(call.arg("scores"), F32), call.arg("iou_threshold"), max_output)
    return _padded_keep(ctx, selected, max_output), ctx.cast(count, trt.DataType.INT64)


@converter("torch2x.plugins.nms_padded", fp32=True)
def convert_nms_padded(ctx, call):
    return _convert_padded(ctx, call, ctx.trt(call.arg("boxes"), F32))


@converter("torch2x.plugins.batched_nms_padded", fp32=True)
def convert_batched_nms_padded(ctx, call):
    # torchvision's coordinate trick: shift each class by (its index) * (largest coordinate + 1),
    # so boxes of different classes never overlap
    boxes = ctx.trt(call.arg("boxes"), F32)
    b = boxes.shape[0]
    top = ctx.network.add_reduce(boxes, trt.ReduceOperation.MAX, 0b11, True).get_output(0)  # [1, 1]
    step = ctx.elementwise(top, 1.0, trt.ElementWiseOperation.SUM)
    shift = ctx.elementwise(ctx.reshape(ctx.trt(call.arg("idxs"), F32), (b, 1)), step, trt.ElementWiseOperation.PROD)
    return _convert_padded(ctx, call, ctx.elementwise(boxes, shift, trt.ElementWiseOperation.SUM))


@converter("torchvision.ops.nms", "torchvision.ops.batched_nms", "torch.ops.torchvision.nms",
           signature="boxes, scores, *args")
def nms(ctx, call):
    padded = "batched_nms_padded" if call.name.endswith("batched_nms") else "nms_padded"
    raise ConversionError(_DATA_DEPENDENT.format(op=call.name, padded=padded))


# torchvision's detection code calls them through torchvision.ops.boxes (box_ops.batched_nms)
for _module in ("torchvision.ops.boxes", "torchvision.ops"):
    register_target(_module, "nms", "torchvision.ops.nms")
    register_target(_module, "batched_nms", "torchvision.ops.batched_nms")
register_target(torch.ops.torchvision, "nms", "torch.ops.torchvision.nms")
