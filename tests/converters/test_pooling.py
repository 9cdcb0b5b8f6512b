import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import check_module

import torch2x



def fn(name):
    """F.<name>; a reference taken before tracing is converted too (the tracer's bypass watch)."""
    return getattr(F, name)


check = check_module  # asserts that calls were converted, so a constant output cannot pass


MAX = {n: fn(f"max_pool{n}d") for n in (1, 2, 3)}
AVG = {n: fn(f"avg_pool{n}d") for n in (1, 2, 3)}
ADAPTIVE_AVG = {n: fn(f"adaptive_avg_pool{n}d") for n in (1, 2, 3)}
ADAPTIVE_MAX = {n: fn(f"adaptive_max_pool{n}d") for n in (1, 2, 3)}
SIZE = {1: (13,), 2: (11, 10), 3: (7, 6, 5)}

WINDOWS = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},  # the last window hangs past the end
    {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},  # ceil window starting in the padding is dropped
    {"kernel_size": 3, "stride": 1, "padding": 1},
]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kwargs", WINDOWS)
def test_max_pool(n, kwargs):
    check(lambda x: MAX[n](x, **kwargs), torch.randn((2, 3) + SIZE[n]))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kwargs", WINDOWS + [dict(w, count_include_pad=False) for w in WINDOWS if w.get("padding")])
def test_avg_pool(n, kwargs):
    check(lambda x: AVG[n](x, **kwargs), torch.randn((2, 3) + SIZE[n]))


def test_pool_tuple_args_unbatched():
    x = torch.randn(3, 11, 10)
    check(lambda x: F.max_pool2d(x, (3, 2), (2, 1), (1, 0)), x)
    check(lambda x: F.avg_pool2d(x, (3, 2), (1, 2), (0, 1), ceil_mode=True), x)


@pytest.mark.parametrize("kwargs", [{}, {"padding": 1}])
def test_avg_pool_divisor_override(kwargs):
    check(lambda x: F.avg_pool2d(x, 3, 2, divisor_override=4, **kwargs), torch.randn(1, 2, 9, 9))


def test_avg_pool_divisor_override_uneven_counts_is_reported():
    report = torch2x.report(lambda x: F.avg_pool2d(x, 2, 2, 1, count_include_pad=False, divisor_override=3),
                            [torch.randn(1, 2, 6, 6)])
    assert not report.ok and "divisor_override" in str(report)


@pytest.mark.parametrize("call, reason", [
    (lambda x: F.max_pool2d(x, 2, dilation=2), "dilation"),
    (lambda x: F.max_pool2d(x, 2, return_indices=True)[0], "indices"),
    (lambda x: F.adaptive_max_pool2d(x, 3, return_indices=True)[0], "indices"),
])
def test_max_pool_unsupported_is_reported(call, reason):
    report = torch2x.report(call, [torch.randn(1, 2, 8, 8)])
    assert not report.ok and reason in str(report)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("out", ["one", "divisible", "uneven"])
def test_adaptive_pool(n, kind, out):
    size = SIZE[n]
    target = {"one": (1,) * n, "divisible": tuple(s // 2 if s % 2 == 0 else s for s in size),
              "uneven": tuple(s // 2 + 1 for s in size)}[out]
    pool = (ADAPTIVE_AVG if kind == "avg" else ADAPTIVE_MAX)[n]
    check(lambda x: pool(x, target if n > 1 else target[0]), torch.randn((2, 3) + size))


def test_adaptive_pool_none_and_larger_output():
    x = torch.randn(1, 2, 5, 6)
    check(lambda x: F.adaptive_avg_pool2d(x, (None, 4)), x)
    check(lambda x: F.adaptive_max_pool2d(x, (7, 9)), x)
    # one axis divides (a pooling window of 2), the other does not (per-cell reduces)
    check(lambda x: F.adaptive_avg_pool2d(x, (4, 3)), torch.randn(1, 2, 8, 7))
    check(lambda x: F.adaptive_max_pool3d(x, (2, 3, 2)), torch.randn(1, 2, 4, 7, 5))


@pytest.mark.parametrize("n, p, ceil_mode",
                         [(1, 2.0, False), (1, 3, True), (2, 2.0, True), (2, 3, False), (3, 2.0, False)])
def test_lp_pool(n, p, ceil_mode):
    pool = fn(f"lp_pool{n}d")
    check(lambda x: pool(x, p, 3, 2, ceil_mode=ceil_mode), torch.rand((2, 3) + SIZE[n]) + 0.1)


@pytest.mark.parametrize("module, shape", [
    (nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 10, 9)),
    (nn.MaxPool1d(2), (2, 3, 9)),
    (nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 10, 9)),
    (nn.AdaptiveAvgPool2d((5, 7)), (2, 3, 13, 11)),
    (nn.AdaptiveAvgPool2d(1), (2, 3, 7, 7)),
    (nn.AdaptiveMaxPool2d((5, 7)), (2, 3, 13, 11)),
    (nn.AdaptiveAvgPool3d((2, 3, 2)), (1, 2, 5, 6, 4)),
    (nn.LPPool2d(2, 2), (1, 3, 8, 8)),
])
def test_nn_pool_modules(module, shape):
    check(module, torch.randn(shape) if not isinstance(module, nn.LPPool2d) else torch.rand(shape))


def test_traced_names():
    net = torch2x.build_network(nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(3)), [torch.randn(1, 2, 8, 8)])
    names = {net_layer.split("/")[-1].split(".")[0] for net_layer in
             (net.network.get_layer(i).name for i in range(net.network.num_layers))}
    assert {"max_pool2d", "adaptive_max_pool2d"} <= names


@pytest.mark.parametrize("module",
                         [nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d((5, 7))])
def test_pool_fp16(module):
    check(module, torch.randn(2, 3, 13, 11), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("after_conv", [False, True])  # (a convolution's output takes the pooling-layer path)
@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_global_adaptive_pooling_of_a_dynamic_height_and_width_keeps_size_1(name, after_conv):
    """A classifier's pooling to (1, 1) after an image of dynamic size (torch.compile after a new resolution):
    one reduction, whose output stays 1 x 1, so the flatten after it sees static dims."""
    conv = nn.Conv2d(4, 4, 1) if after_conv else nn.Identity()
    net = torch2x.build_network(lambda x: fn(name)(conv(x), 1).flatten(1), [torch.randn(2, 4, 9, 12)],
                                dynamic_shapes={"input_0": {2: (3, 9, 20), 3: (3, 12, 20)}})
    assert tuple(net.network.get_output(0).shape) == (2, 4)
    for shape in ((2, 4, 3, 20), (2, 4, 17, 5)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = fn(name)(conv(x), 1).flatten(1)
        torch.testing.assert_close(net.interpret(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d], ids=["avg", "max"])
def test_global_pooling_is_a_pooling_layer_after_a_convolution_and_a_reduce_after_other_layers(pool):
    """TensorRT fuses the pointwise layers after a convolution into the convolution's kernel, and a pooling
    layer reads that kernel's output (squeeze-and-excitation); after other layers (DenseNet's last
    concatenation, batch norm and ReLU) a reduce layer fuses into their kernel, a pooling layer would not."""
    LT = torch2x.flavour.trt.LayerType
    conv, size = nn.Conv2d(3, 8, 3), (9, 9)

    def types(net):
        return [net.network.get_layer(i).type for i in range(net.network.num_layers)]

    after_conv = check(lambda x: pool(F.silu(conv(x)) + 1, 1), torch.randn((2, 3) + size), rtol=1e-5)
    assert LT.POOLING in types(after_conv) and LT.REDUCE not in types(after_conv)
    after_concat = check(lambda x, y: pool(F.relu(torch.cat([x, y], 1)), 1), torch.randn((2, 3) + size),
                         torch.randn((2, 4) + size), rtol=1e-5)
    assert LT.REDUCE in types(after_concat) and LT.POOLING not in types(after_concat)
