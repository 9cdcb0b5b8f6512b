import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import check_module

import torch2x


def check(model, *inputs, **options):
    net = check_module(model, *inputs, **options)
    assert net.report.converted_calls > 0, "nothing was converted: the output is a constant"
    return net


def stats(c):
    return torch.randn(c), torch.rand(c) + 0.5


SHAPES = [(4, 3), (2, 3, 7), (2, 3, 5, 4), (1, 3, 4, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_running_stats(shape, affine):
    mean, var = stats(3)
    w, b = (torch.randn(3), torch.randn(3)) if affine else (None, None)
    check(lambda x: F.batch_norm(x, mean, var, w, b, eps=1e-3), torch.randn(shape))


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 5, 4)])
def test_batch_norm_batch_statistics(shape):
    w, b = torch.randn(3), torch.randn(3)
    check(lambda x: F.batch_norm(x, None, None, w, b, training=True), torch.randn(shape))


def test_torch_batch_norm_alias():
    mean, var = stats(3)
    w, b = torch.randn(3), torch.randn(3)
    check(lambda x: torch.batch_norm(x, w, b, mean, var, False, 0.1, 1e-5, False), torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("shape, normalized", [((2, 5, 6), (6,)), ((2, 5, 6), (5, 6)), ((3, 8), (8,)),
                                               ((2, 3, 4, 5), (3, 4, 5))])
@pytest.mark.parametrize("affine", ["both", "none"])
def test_layer_norm(shape, normalized, affine):
    w = torch.randn(normalized) if affine != "none" else None
    b = torch.randn(normalized) if affine == "both" else None
    check(lambda x: F.layer_norm(x, normalized, w, b, eps=1e-4), torch.randn(shape) * 3 + 1)


@pytest.mark.parametrize("shape", [(2, 6), (2, 6, 5), (2, 6, 4, 3), (1, 6, 3, 2, 2)])
@pytest.mark.parametrize("groups, affine", [(1, True), (2, False), (6, True)])
def test_group_norm(shape, groups, affine):
    w, b = (torch.randn(6), torch.randn(6)) if affine else (None, None)
    check(lambda x: F.group_norm(x, groups, w, b), torch.randn(shape) * 2 + 1)


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 4), (1, 3, 4, 3, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm(shape, affine):
    w, b = (torch.randn(3), torch.randn(3)) if affine else (None, None)
    check(lambda x: F.instance_norm(x, weight=w, bias=b), torch.randn(shape) + 2)


def test_instance_norm_running_stats():
    mean, var = stats(3)
    w, b = torch.randn(3), torch.randn(3)
    check(lambda x: F.instance_norm(x, mean, var, w, b, use_input_stats=False), torch.randn(2, 3, 5, 4))


@pytest.mark.parametrize("shape", [(2, 5, 6), (2, 7, 4, 3), (1, 6, 2, 3, 2)])
@pytest.mark.parametrize("size", [3, 4, 17])  # even and > 15: composed like torch; odd <= 15: TensorRT's LRN
def test_local_response_norm(shape, size):
    check(lambda x: F.local_response_norm(x, size, alpha=0.5, beta=0.75, k=2.0), torch.randn(shape) * 2)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("dim", [-1, (1, 2)])
def test_normalize(p, dim):
    check(lambda x: F.normalize(x, p=p, dim=dim), torch.randn(2, 4, 5))


def test_normalize_eps_floor():
    x = torch.randn(3, 4)
    x[1] = 0
    check(lambda x: F.normalize(x, eps=1e-3), x)


@pytest.mark.parametrize("normalized, weight, eps", [((6,), True, None), ((5, 6), False, 1e-3), ((5, 6), True, 1e-3)])
def test_rms_norm(normalized, weight, eps):
    w = torch.randn(normalized) if weight else None
    check(lambda x: F.rms_norm(x, normalized, w, eps), torch.randn(2, 5, 6))


@pytest.mark.parametrize("module, shape", [
    (nn.BatchNorm2d(4), (2, 4, 5, 5)),
    (nn.BatchNorm1d(4), (3, 4)),
    (nn.BatchNorm1d(4, affine=False), (3, 4, 6)),
    (nn.BatchNorm2d(4, track_running_stats=False), (3, 4, 5, 5)),
    (nn.BatchNorm3d(4), (1, 4, 3, 3, 3)),
    (nn.GroupNorm(2, 4), (2, 4, 5, 5)),
    (nn.LayerNorm(5), (2, 4, 5)),
    (nn.LayerNorm((4, 5), elementwise_affine=False), (2, 4, 5)),
    (nn.InstanceNorm2d(4, affine=True), (2, 4, 5, 5)),
    (nn.InstanceNorm1d(4), (4, 7)),  # unbatched
    (nn.InstanceNorm2d(4, track_running_stats=True), (2, 4, 5, 5)),
    (nn.LocalResponseNorm(3), (2, 6, 4, 4)),
    (nn.RMSNorm(5), (2, 4, 5)),
])
def test_nn_modules(module, shape):
    for name, buf in module.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape))
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape) + 0.5)
    for param in module.parameters():
        param.data.copy_(torch.randn(param.shape))
    check(module, torch.randn(shape) * 2 + 1)


@pytest.mark.parametrize("module, shape", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (2, 3, 7, 7)),
    (nn.GroupNorm(2, 4), (2, 4, 5, 5)),
    (nn.LayerNorm(16), (2, 4, 16)),
    (nn.InstanceNorm2d(4, affine=True), (2, 4, 5, 5)),
    (nn.BatchNorm2d(4, track_running_stats=False), (3, 4, 5, 5)),
])
def test_fp16(module, shape):
    net = check(module, torch.randn(shape) * 2 + 1, rtol=1e-2, fp16=True)
    norms = [net.network.get_layer(i) for i in range(net.network.num_layers)
             if net.network.get_layer(i).type == torch2x.flavour.trt.LayerType.NORMALIZATION]
    assert all(layer.get_output(0).dtype == torch2x.flavour.trt.DataType.FLOAT for layer in norms), \
        "normalization statistics must be computed in float32"


def test_computed_running_stats_are_reported():
    mean, var = stats(3)
    report = torch2x.report(lambda x: F.batch_norm(x, mean * 2, var), [torch.randn(2, 3, 4, 4)])
    assert report.ok  # constant-folded by PyTorch: mean * 2 is not traced
    report = torch2x.report(lambda x: F.batch_norm(x, x.mean((0, 2, 3)), var), [torch.randn(2, 3, 4, 4)])
    assert not report.ok
