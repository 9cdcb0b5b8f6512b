"""Interpreter fidelity on networks we did not build: torchvision models exported to ONNX and
parsed by NVIDIA's own ``trt.OnnxParser``, interpreted, and compared with PyTorch eager.

The parser chooses the layers and settings (padding modes, resize modes, normalization forms,
shape-tensor arithmetic), so these tests check the rules against TensorRT's own op mapping,
not against our converters' habits.
"""
import time

import pytest
import torch
import torchvision

from onnx_util import onnx_network
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
