"""Interpreter fidelity on networks we did not build: torchvision models exported to ONNX and
parsed by NVIDIA's own ``trt.OnnxParser``, interpreted, and compared with PyTorch eager.

The parser chooses the layers and settings (padding modes, resize modes, normalization forms,
shape-tensor arithmetic), so these tests check the rules against TensorRT's own op mapping,
not against our converters' habits.
"""
import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

from onnx_util import onnx_network, parse_onnx_file
from torch2x.flavour import trt
from torch2x.interpreter import Interpreter

REL_TOL = 1e-4


def _vit_b_16():
    model = torchvision.models.vit_b_16()
    # torchvision zero-initialises the classification head, which would make the logits all zero.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def _encoder_layer():
    return torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)


# (name, model factory, input shape, exporter): the legacy exporter where it works; the dynamo
# exporter for vit_b_16 (aten::_native_multi_head_attention) and the encoder layer
# (aten::_transformer_encoder_layer_fwd), whose eval fast paths the legacy exporter cannot export.
CASES = [
    ("resnet18", torchvision.models.resnet18, (1, 3, 64, 64), False),
    ("mobilenet_v3_small", torchvision.models.mobilenet_v3_small, (1, 3, 64, 64), False),
    ("efficientnet_b0", torchvision.models.efficientnet_b0, (1, 3, 64, 64), False),
    ("convnext_tiny", torchvision.models.convnext_tiny, (1, 3, 64, 64), False),
    ("swin_t", torchvision.models.swin_t, (1, 3, 224, 224), False),
    ("vit_b_16", _vit_b_16, (1, 3, 224, 224), True),
    ("transformer_encoder_layer", _encoder_layer, (1, 10, 64), True),
]


@pytest.mark.parametrize("name,factory,shape,dynamo", CASES, ids=[c[0] for c in CASES])
def test_onnx_parsed_network_matches_pytorch(name, factory, shape, dynamo):
    model = factory().eval()
    x = torch.randn(shape)
    start = time.perf_counter()
    parsed = onnx_network(model, x, dynamo=dynamo, opset=18 if dynamo else 17)
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    out = Interpreter(parsed.network)({parsed.input_name: x})[parsed.output_name]
    run_s = time.perf_counter() - start
    with torch.no_grad():
        ref = model(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert ref.norm() > 0
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"{name}: {parsed.network.num_layers} layers, export+parse {parse_s:.1f} s, "
          f"interpret {run_s:.2f} s, relative error {rel:.2e}")
    assert rel <= REL_TOL, f"{name}: relative error {rel:.3e} > {REL_TOL}"


class _Fn(torch.nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.fn = fn
        self.mods = torch.nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x, *self.mods)


class _GridSample(torch.nn.Module):
    def __init__(self, mode, padding_mode):
        super().__init__()
        theta = torch.tensor([[0.9, 0.2, 0.1], [-0.3, 1.1, -0.05]]).expand(2, 2, 3)
        self.register_buffer("grid", F.affine_grid(theta, (2, 1, 9, 8), align_corners=False) * 1.2)
        self.mode, self.padding_mode = mode, padding_mode

    def forward(self, x):
        return F.grid_sample(x, self.grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=False)


# Single ops whose ONNX form the parser maps onto the layers in rules_nn.py, to check those rules
# against NVIDIA's own mapping (resize modes and scales, padding modes, norm forms, ...).
OPS = [
    ("resize_nearest_x2", lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    ("resize_nearest_size", lambda x: F.interpolate(x, size=(7, 15), mode="nearest")),
    ("resize_bilinear_x1.5", lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=False)),
    ("resize_bilinear_align", lambda x: F.interpolate(x, size=(13, 6), mode="bilinear", align_corners=True)),
    ("resize_bicubic", lambda x: F.interpolate(x, size=(12, 17), mode="bicubic", align_corners=False)),
    ("conv_transpose_output_padding", torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)),
    ("conv_transpose_groups_dilation", torch.nn.ConvTranspose2d(4, 6, 3, stride=1, padding=2, dilation=2, groups=2)),
    ("conv_same", torch.nn.Conv2d(4, 5, (4, 3), padding="same", dilation=(1, 2))),
    ("group_norm", torch.nn.GroupNorm(2, 4)),
    ("instance_norm", torch.nn.InstanceNorm2d(4, affine=True)),
    ("lrn", torch.nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0)),
    ("avg_pool_ceil_exclude", torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("avg_pool_include", torch.nn.AvgPool2d(3, 2, 1, count_include_pad=True)),
    ("max_pool_ceil", torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
    ("pad_constant_crop", lambda x: F.pad(x, (2, -1, -2, 3), value=0.5)),
    ("grid_sample_bilinear_zeros", _GridSample("bilinear", "zeros")),
    ("grid_sample_nearest_border", _GridSample("nearest", "border")),
    ("grid_sample_bicubic_reflection", _GridSample("bicubic", "reflection")),
]


@pytest.mark.parametrize("name,op", OPS, ids=[o[0] for o in OPS])
def test_onnx_parsed_op_matches_pytorch(name, op):
    model = op if isinstance(op, torch.nn.Module) else _Fn(op)
    for p in model.parameters():
        torch.nn.init.normal_(p)  # affine params away from their identity defaults
    model = model.eval()
    x = torch.randn(2, 4, 7, 9)
    parsed = onnx_network(model, x, opset=17)
    out = Interpreter(parsed.network)({parsed.input_name: x})[parsed.output_name]
    with torch.no_grad():
        ref = model(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def _single_node_model(path, op_type, x_shape, **attrs):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, ["input"], ["output"], **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 0.1, 0.75, 2.0), (5, 1e-4, 0.5, 1.0)])
def test_onnx_lrn_node_maps_onto_trt_lrn(tmp_path, size, alpha, beta, bias):
    # torch.onnx decomposes LocalResponseNorm; a hand-made ONNX LRN node reaches TensorRT's LRN layer.
    path = str(tmp_path / "lrn.onnx")
    _single_node_model(path, "LRN", (2, 7, 4, 5), size=size, alpha=alpha, beta=beta, bias=bias)
    parsed = parse_onnx_file(path)
    assert [parsed.network.get_layer(i).type for i in range(parsed.network.num_layers)] == [trt.LayerType.LRN]
    x = torch.randn(2, 7, 4, 5)
    out = Interpreter(parsed.network)({parsed.input_name: x})[parsed.output_name]
    torch.testing.assert_close(out, F.local_response_norm(x, size, alpha, beta, bias), rtol=1e-5, atol=1e-5)
