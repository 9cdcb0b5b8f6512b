"""NMS: the fixed-shape nms_padded/batched_nms_padded through TensorRT's NMS layer against torchvision;
torchvision's own nms/batched_nms are reported (data-dependent output length)."""
import pytest
import torch
import torchvision

import torch2x
from harness import check_module as _check_module
from torch2x import flavour


def check_module(*args, **kwargs):
    # TensorRT-RTX 1.7's builder has no runner for data-dependent-shape layers (NMS, NonZero) on these
    # machines: the network is checked by the interpreter; test_engine_build_on_rtx pins the limitation
    return _check_module(*args, build=not flavour.IS_RTX, **kwargs)


def _boxes(n, seed=0, classes=None):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 8], 1)
    scores = torch.rand(n, generator=g)
    return boxes, scores


@pytest.mark.parametrize("iou", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("max_output", [3, 40])
def test_nms_padded(iou, max_output):
    boxes, scores = _boxes(30)
    check_module(lambda b, s: torch2x.plugins.nms_padded(b, s, iou, max_output), boxes, scores)


def test_nms_padded_ties_and_negative_infinite_scores():
    boxes, _ = _boxes(12, seed=1)
    scores = torch.tensor([0.5, 0.5, -0.2, 0.5, 0.9, 0.9, -0.2, 0.1, 0.5, -float("inf"), -3.0, 0.9])
    boxes[1] = boxes[0]  # equal scores and identical boxes: the lower index survives, as in torchvision
    check_module(lambda b, s: torch2x.plugins.nms_padded(b, s, 0.5, 12), boxes, scores)


def test_nms_padded_nothing_overlaps_and_empty_padding():
    boxes = torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]])
    scores = torch.tensor([0.1, 0.3, 0.2])
    net = check_module(lambda b, s: torch2x.plugins.nms_padded(b, s, 0.5, 5), boxes, scores)
    keep, count = net.interpret(boxes, scores)
    assert keep.tolist() == [1, 2, 0, -1, -1] and count.item() == 3


def test_batched_nms_padded():
    boxes, scores = _boxes(25, seed=2)
    idxs = torch.randint(0, 3, (25,), generator=torch.Generator().manual_seed(3))
    check_module(lambda b, s, i: torch2x.plugins.batched_nms_padded(b, s, i, 0.4, 25), boxes, scores, idxs)


def test_nms_padded_in_a_module():
    class Head(torch.nn.Module):
        def forward(self, boxes, logits):
            scores = logits.sigmoid()
            keep, count = torch2x.plugins.nms_padded(boxes, scores, 0.5, 8)
            return keep, count, boxes[keep.clamp(min=0)] * (keep >= 0).unsqueeze(1)

    boxes, scores = _boxes(16, seed=4)
    check_module(Head(), boxes, scores)
    check_module(Head(), boxes, scores, rtol=1e-2, fp16=True)


@pytest.mark.parametrize("fn,padded", [
    (lambda b, s: torchvision.ops.nms(b, s, 0.5), "nms_padded"),
    (lambda b, s: torchvision.ops.batched_nms(b, s, torch.zeros(s.shape, dtype=torch.int64), 0.5),
     "batched_nms_padded"),
    (lambda b, s: torchvision.ops.boxes.batched_nms(b, s, torch.zeros(s.shape, dtype=torch.int64), 0.5),
     "batched_nms_padded"),
])
def test_torchvision_nms_is_reported(fn, padded):
    boxes, scores = _boxes(10)
    report = torch2x.report(fn, [boxes, scores])
    (entry,) = report.unsupported.values()
    assert entry.op.startswith("torchvision.ops.") and "data-dependent" in entry.reason and padded in entry.reason


@pytest.mark.skipif(not flavour.IS_RTX, reason="pins a TensorRT-RTX builder limitation; full TensorRT builds NMS")
def test_engine_build_on_rtx():
    boxes, scores = _boxes(10)
    net = check_module(lambda b, s: torch2x.plugins.nms_padded(b, s, 0.5, 4), boxes, scores)
    with pytest.raises(torch2x.EngineBuildError, match="no runners"):
        net.build_engine()


def test_bound_nms_is_reported():
    from torchvision.ops import nms as bound

    boxes, scores = _boxes(10)
    report = torch2x.report(lambda b, s: bound(b, s, 0.5), [boxes, scores])
    assert "nms_padded" in report.unsupported["torch.ops.torchvision.nms"].reason


def test_nms_padded_without_boxes_is_reported():
    boxes, scores = torch.zeros(0, 4), torch.zeros(0)
    report = torch2x.report(lambda b, s: torch2x.plugins.nms_padded(b, s, 0.5, 4), [boxes, scores])
    assert "no boxes" in report.unsupported["torch2x.plugins.nms_padded"].reason
