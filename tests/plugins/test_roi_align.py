"""torchvision.ops.roi_align / RoIAlign against torchvision, boxes inside, across and outside the image."""
import pytest
import torch
import torchvision
from harness import check_module


def _boxes(k, batch, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 1.4, h * 1.4]) - torch.tensor([w * 0.3, h * 0.3])
    wh = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    idx = torch.randint(0, batch, (k, 1), generator=g).float()
    boxes = torch.cat([idx, xy, xy + wh], 1)
    boxes[0, 1:] = torch.tensor([-9.0, -7.0, -3.0, -2.0])  # entirely outside: reads zeros
    boxes[1, 1:] = torch.tensor([1.0, 2.0, 1.2, 2.1])  # smaller than a pixel
    return boxes


@pytest.mark.parametrize("aligned,sampling_ratio,output_size,spatial_scale", [
    (False, 2, 2, 1.0), (True, 2, 2, 1.0), (False, 1, (3, 4), 0.5), (True, 3, (3, 4), 0.5), (True, 1, (1, 2), 0.25),
])
def test_roi_align_tensor_boxes(aligned, sampling_ratio, output_size, spatial_scale):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11)
    boxes = _boxes(7, 2, 9 / spatial_scale, 11 / spatial_scale)
    check_module(lambda x, b: torchvision.ops.roi_align(x, b, output_size, spatial_scale, sampling_ratio, aligned),
                 x, boxes)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_list_boxes_module(aligned):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    b0, b1 = _boxes(3, 1, 8, 8, seed=1)[:, 1:], _boxes(4, 1, 8, 8, seed=2)[:, 1:]
    pool = torchvision.ops.RoIAlign((2, 3), spatial_scale=1.0, sampling_ratio=2, aligned=aligned)
    check_module(lambda x, b0, b1: pool(x, [b0, b1]), x, b0, b1)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_adaptive_constant_boxes(aligned):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 12)
    boxes = _boxes(6, 1, 10, 12, seed=3)
    boxes[2, 1:] = torch.tensor([2.0, 3.0, 2.0, 3.0])  # empty box: no sample point when aligned
    check_module(lambda x: torchvision.ops.roi_align(x, boxes, 3, 1.0, -1, aligned), x)


def test_roi_align_adaptive_traced_boxes_is_reported():
    import torch2x

    x, boxes = torch.randn(1, 3, 10, 12), _boxes(4, 1, 10, 12)
    report = torch2x.report(lambda x, b: torchvision.ops.roi_align(x, b, 2, 1.0, -1), [x, boxes])
    entry = report.unsupported["torchvision.ops.roi_align"]
    assert "sampling_ratio > 0" in entry.reason


def test_roi_align_fp16():
    torch.manual_seed(0)
    x, boxes = torch.randn(1, 3, 9, 11), _boxes(5, 1, 9, 11)
    check_module(lambda x, b: torchvision.ops.roi_align(x, b, 2, 1.0, 2, True), x, boxes, rtol=1e-2, fp16=True)


@pytest.mark.parametrize("levels", [1, 3])
def test_multiscale_roi_align(levels):
    """MultiScaleRoIAlign (the R-CNN box pooler): boxes of every FPN level, picked by their area."""
    from collections import OrderedDict

    torch.manual_seed(0)
    names = [f"p{i}" for i in range(levels)]
    pool = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)
    feats = [torch.randn(2, 4, 64 >> i, 64 >> i) for i in range(levels)]  # image 256x256: scales 1/4, 1/8, 1/16
    b0 = torch.tensor([[1.0, 2, 20, 25], [0, 0, 255, 255], [10, 10, 90, 140], [30, 40, 31, 41.5]])
    b1 = torch.tensor([[4.0, 4, 100, 120], [50, 60, 250, 200]])

    def fn(*args):
        return pool(OrderedDict(zip(names, args[:levels])), list(args[levels:]), [(256, 256)] * 2)

    fn(*feats, b0, b1)  # torchvision infers the scales on the first call
    check_module(fn, *feats, b0, b1)


def test_roi_align_bound_before_conversion():
    """``from torchvision.ops import roi_align`` binds the unpatched function: its torch.ops call converts."""
    from torchvision.ops import roi_align as bound

    torch.manual_seed(0)
    x, boxes = torch.randn(2, 3, 9, 11), _boxes(5, 2, 9, 11)
    check_module(lambda x, b: bound(x, b, (2, 3), 1.0, 2, True), x, boxes)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_dynamic_number_of_boxes(aligned):
    """Boxes from a data-dependent step (NMS) have a dynamic count K: [K, 5] tensors and a list of [K, 4]."""
    from harness import check_sizes

    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11)
    check_sizes(lambda x, b: torchvision.ops.roi_align(x, b, (2, 3), 1.0, 2, aligned),
                lambda k: [x, _boxes(max(k, 2), 2, 9, 11, seed=k)[:k]], [5, 1, 12, 0], {"input_1": {0: (0, 5, 16)}})
    check_sizes(lambda x, b0, b1: torchvision.ops.roi_align(x, [b0, b1], 2, 0.5, 2, aligned),
                lambda k: [x, _boxes(max(k, 2), 1, 18, 22, seed=k)[:k, 1:], _boxes(3, 1, 18, 22, seed=7)[:, 1:]],
                [4, 1, 0], {"input_1": {0: (0, 4, 8)}})


def test_multiscale_roi_align_dynamic_number_of_boxes():
    from collections import OrderedDict

    from harness import check_sizes

    torch.manual_seed(0)
    names = ["p0", "p1", "p2"]
    pool = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)
    feats = [torch.randn(1, 4, 64 >> i, 64 >> i) for i in range(3)]
    big = torch.tensor([[1.0, 2, 20, 25], [0, 0, 255, 255], [10, 10, 90, 140], [30, 40, 31, 41.5], [4, 4, 100, 120],
                        [50, 60, 250, 200]])

    def fn(*args):
        return pool(OrderedDict(zip(names, args[:3], strict=True)), [args[3]], [(256, 256)])

    fn(*feats, big)
    check_sizes(fn, lambda k: feats + [big[:k]], [6, 1, 3, 0], {"input_3": {0: (0, 6, 6)}})
