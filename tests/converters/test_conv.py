import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import check_module

import torch2x  # noqa: F401 (registers the converters)



def fn(name):
    """F.<name>; a reference taken before tracing is converted too (the tracer's bypass watch)."""
    return getattr(F, name)


check = check_module  # asserts that calls were converted, so a constant output cannot pass


CONV = {n: fn(f"conv{n}d") for n in (1, 2, 3)}
CONV_T = {n: fn(f"conv_transpose{n}d") for n in (1, 2, 3)}
SIZE = {1: (11,), 2: (9, 8), 3: (5, 6, 7)}


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kwargs, bias", [
    ({}, True),
    ({"stride": 2, "padding": 1}, False),
    ({"padding": "same", "dilation": 2}, True),
    ({"padding": "valid", "groups": 2}, False),
    ({"stride": 2, "padding": 2, "dilation": 2, "groups": 4}, True),
])
def test_conv(n, kwargs, bias):
    groups = kwargs.get("groups", 1)
    w = torch.randn((6 if groups < 4 else 8, 4 // groups) + (3,) * n)
    b = torch.randn(w.shape[0]) if bias else None
    check(lambda x: CONV[n](x, w, b, **kwargs), torch.randn((2, 4) + SIZE[n]))


def test_conv_same_even_kernel_asymmetric():
    w = torch.randn(5, 3, 4, 2)
    check(lambda x: F.conv2d(x, w, padding="same"), torch.randn(1, 3, 7, 6))


def test_conv_tuple_args_unbatched():
    w, b = torch.randn(6, 3, 3, 2), torch.randn(6)
    check(lambda x: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), dilation=(1, 2)), torch.randn(3, 9, 8))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kwargs, bias", [
    ({}, False),
    ({"stride": 2, "padding": 1}, True),
    ({"stride": 2, "padding": 1, "output_padding": 1}, True),
    ({"stride": 3, "output_padding": 2, "dilation": 2}, True),  # output padding beyond the padding: zeros + bias
    ({"stride": 3, "output_padding": 2}, False),
    ({"stride": 2, "groups": 2, "padding": 2, "dilation": 2}, False),
])
def test_conv_transpose(n, kwargs, bias):
    groups = kwargs.get("groups", 1)
    w = torch.randn((4, 6 // groups) + (3,) * n)
    b = torch.randn(6) if bias else None
    check(lambda x: CONV_T[n](x, w, b, **kwargs), torch.randn((2, 4) + SIZE[n]))


def test_conv_computed_weight():
    w = torch.randn(6, 4, 3, 3)
    check(lambda x, s: F.conv2d(x, w * s), torch.randn(1, 4, 8, 8), torch.randn(6, 1, 1, 1))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_nn_conv2d(mode):
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode=mode), nn.Conv2d(8, 4, 1, bias=False))
    check(m, torch.randn(2, 3, 10, 9))


def test_nn_conv_transpose2d():
    m = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1, output_padding=1)
    check(m, torch.randn(1, 4, 6, 5))


@pytest.mark.parametrize("transposed", [False, True])
def test_conv_fp16(transposed):
    m = (nn.ConvTranspose2d(4, 6, 3, stride=2) if transposed else nn.Conv2d(4, 6, 3, padding=1, groups=2))
    check(m, torch.randn(2, 4, 8, 8), rtol=1e-2, fp16=True)


def test_conv1d_fp16():
    check(nn.Conv1d(4, 6, 5, padding=2), torch.randn(2, 4, 16), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("module", [nn.Conv2d(4, 6, 3, padding=1), nn.ConvTranspose2d(4, 6, 3, stride=2),
                                    nn.ConvTranspose1d(4, 6, 3, stride=2, dilation=2)])
def test_conv_bf16(module):
    check(module, torch.randn(2, 4, 8, 8) if not isinstance(module, nn.ConvTranspose1d) else torch.randn(2, 4, 8),
          rtol=3e-2, bf16=True)
