"""Rules for the NMS layer and for plugin layers made by ``torch2x.plugins.plugin_op``.

NMS follows ``INMSLayer``'s documented semantics: per batch item and class, boxes whose score
exceeds the score threshold are visited in decreasing score order and kept when their IoU with
every box kept before is at most the IoU threshold, up to MaxOutputBoxesPerClass; the rows
(batch, class, box) are sorted by batch, then by decreasing score. TensorRT leaves the order of
equal scores unspecified; this rule keeps the lower box index first (a stable sort, as
torchvision's nms does), so it is one valid reading.

A plugin layer made by ``plugin_op`` carries ``{"torch2x_plugin": "ns::name", "tensors": [...], "attrs": {...}}``
as JSON in its ``metadata``; the rule runs the op's registered PyTorch implementation. On a TensorRT
without plugin layers the op's outputs are placeholder constants whose metadata adds
``"placeholder": true``, the op's input tensor names (``"inputs"``) and which output the constant
stands for (``"output"``); the placeholder rule runs the same implementation on those tensors.
"""
from __future__ import annotations

import json

import torch

from ..flavour import trt
from .core import PLACEHOLDER, UnsupportedLayerError, placeholder_meta, rule

LT = trt.LayerType


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """IoU of one [4] box with [M, 4] boxes, both as (x1, y1, x2, y2) corners in any diagonal order."""
    lo_b, hi_b = torch.minimum(box[:2], box[2:]), torch.maximum(box[:2], box[2:])
    lo_o, hi_o = torch.minimum(others[:, :2], others[:, 2:]), torch.maximum(others[:, :2], others[:, 2:])
    wh = (torch.minimum(hi_b, hi_o) - torch.maximum(lo_b, lo_o)).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_b = (hi_b - lo_b).prod()
    area_o = (hi_o - lo_o).prod(dim=1)
    return inter / (area_b + area_o - inter)


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
            limit: int, max_out: int) -> list:
    """Indices kept by greedy NMS of [B, 4] boxes, in decreasing score order."""
    candidates = torch.nonzero(scores > score_threshold).flatten()
    order = candidates[torch.sort(scores[candidates], descending=True, stable=True).indices][:limit]
    kept: list = []
    for i in order.tolist():
        if len(kept) >= max_out:
            break
        if not kept or bool((_iou(boxes[i], boxes[kept]) <= iou_threshold).all()):
            kept.append(i)
    return kept


@rule(LT.NMS)
def nms(layer, inputs, env):
    boxes, scores, max_out = inputs[0], inputs[1], inputs[2]
    iou_threshold = float(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else 0.0
    score_threshold = float(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else 0.0
    if layer.bounding_box_format != trt.BoundingBoxFormat.CORNER_PAIRS:
        raise UnsupportedLayerError(layer, f"bounding box format {layer.bounding_box_format}")
    boxes, scores = boxes.double(), scores.double()
    batch, _, classes = scores.shape
    rows = []
    for b in range(batch):
        picked = []
        for c in range(classes):
            per_class = boxes[b, :, c] if boxes.dim() == 4 else boxes[b]
            for i in _greedy(per_class, scores[b, :, c], iou_threshold, score_threshold,
                             int(layer.topk_box_limit), int(max_out)):
                picked.append(((b, c, i), float(scores[b, i, c])))
        picked.sort(key=lambda p: -p[1])  # stable: class order, then box order, for equal scores
        rows += [p[0] for p in picked]
    selected = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
    return [selected, torch.tensor(len(rows), dtype=torch.int32)]


def _plugin(layer, inputs, env):
    from torch2x.plugins.custom import run_plugin_layer

    try:
        meta = json.loads(layer.metadata or "")
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or "torch2x_plugin" not in meta:
        raise UnsupportedLayerError(layer, "a plugin layer not made by torch2x.plugins.plugin_op")
    return run_plugin_layer(meta["torch2x_plugin"], inputs, meta)


for _name in ("PLUGIN_V3", "PLUGIN_V2"):
    if hasattr(LT, _name):
        rule(getattr(LT, _name))(_plugin)


@rule(PLACEHOLDER)
def placeholder(layer, inputs, env):
    """A placeholder constant made by ``plugin_op`` on a TensorRT without plugin layers: the op's output."""
    meta = placeholder_meta(layer)
    if "torch2x_plugin" not in meta:
        raise UnsupportedLayerError(layer, "a placeholder not made by torch2x.plugins.plugin_op")
    from torch2x.plugins.custom import run_plugin_layer

    # one constant per output, so a multi-output op runs once per output: placeholders are for checks
    return run_plugin_layer(meta["torch2x_plugin"], inputs, meta)[int(meta.get("output", 0))]
