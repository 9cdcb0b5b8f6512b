"""The precision policy in strongly typed networks: reduced types where asked, float32 where it matters,
and never a cast straight back."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import check_module
from torch2x import flavour
from torch2x.flavour import trt


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)
        self.keep = nn.Linear(5, 5)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))           # conv (bn folded), relu: reduced precision
        y = y.mean(dim=(2, 3))                       # a reduction: float32
        y = self.norm(y)                             # normalization statistics: float32
        y = torch.softmax(self.head(y), dim=-1)     # linear reduced, softmax float32
        return self.keep(y).exp()                    # keep: float32 by keep_fp32; exp float32


def _layers(net):
    return [net.network.get_layer(i) for i in range(net.network.num_layers)]


def _producers(net):
    out = {}
    for layer in _layers(net):
        for k in range(layer.num_outputs):
            out[layer.get_output(k).name] = layer
    return out


def _no_cast_pairs(net):
    producers = _producers(net)
    for layer in _layers(net):
        if layer.type == trt.LayerType.CAST:
            source = producers.get(layer.get_input(0).name)
            assert source is None or source.type != trt.LayerType.CAST, f"cast pair at {layer.name}"


def _types_by_name(net):
    return {layer.name: layer.get_output(0).dtype for layer in _layers(net)}


def _typed(net, call: str, layer_type):
    """The layer of ``layer_type`` that converting ``call`` (``module/op``) added, with its concrete class."""
    found = [layer for layer in _layers(net) if layer.type == layer_type and layer.name.split(".")[0] == call]
    assert len(found) == 1, f"{call}: {len(found)} {layer_type} layers"
    return flavour.concrete_layer(found[0])


def test_fp16_policy_types_and_casts():
    torch.manual_seed(0)
    net = check_module(Mixed(), torch.randn(2, 3, 8, 8), rtol=1e-2, fp16=True, keep_fp32=["keep"])
    types = _types_by_name(net)
    assert types["conv/conv2d"] == trt.DataType.HALF
    assert types["relu"] == trt.DataType.HALF
    conv = next(layer for layer in _layers(net) if layer.type == trt.LayerType.CONVOLUTION)
    conv.__class__ = trt.IConvolutionLayer
    assert conv.kernel.dtype.name == "float16"  # fp16 weights
    # linear layers over rows [N, C] are a matrix multiply with the weights in a constant of the layer's type
    producers = _producers(net)
    head = _typed(net, "head/linear", trt.LayerType.MATRIX_MULTIPLY)
    assert head.get_output(0).dtype == trt.DataType.HALF and head.get_input(1).dtype == trt.DataType.HALF
    assert producers[head.get_input(1).name].type == trt.LayerType.CONSTANT  # stored in float16, no cast
    assert _typed(net, "norm/layer_norm", trt.LayerType.NORMALIZATION).get_output(0).dtype == trt.DataType.FLOAT
    assert _typed(net, "softmax", trt.LayerType.SOFTMAX).get_output(0).dtype == trt.DataType.FLOAT
    keep = _typed(net, "keep/linear", trt.LayerType.MATRIX_MULTIPLY)
    assert keep.get_output(0).dtype == trt.DataType.FLOAT and keep.get_input(1).dtype == trt.DataType.FLOAT
    assert _typed(net, "exp", trt.LayerType.UNARY).get_output(0).dtype == trt.DataType.FLOAT
    assert net.network.get_input(0).dtype == trt.DataType.FLOAT  # the module's dtype at the boundary
    assert net.network.get_output(0).dtype == trt.DataType.FLOAT
    _no_cast_pairs(net)


def test_bf16_policy():
    torch.manual_seed(0)
    net = check_module(Mixed(), torch.randn(2, 3, 8, 8), rtol=3e-2, bf16=True)
    types = _types_by_name(net)
    assert types["relu"] == trt.DataType.BF16 and types["softmax"] == trt.DataType.FLOAT
    _no_cast_pairs(net)


def test_fp32_network_has_no_casts():
    torch.manual_seed(0)
    net = check_module(Mixed(), torch.randn(2, 3, 8, 8))
    assert not [layer for layer in _layers(net) if layer.type == trt.LayerType.CAST]
