"""Channel layout (torch2x.layout): linear layers as 1x1 convolutions, values kept as [N, C, ...] across
the ops that understand the layout, canonical tensors made only where another op reads them.

Every case converts with the real builder, interprets, compares with PyTorch (float32 <= 1e-5 unless
stated, float16 <= 2e-3) and builds the engine; layer counts pin down that the layout is really kept.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import torch2x
from harness import _Wrap, check_module
from torch2x import flavour

LT = flavour.trt.LayerType


def _types(net) -> list:
    return [net.network.get_layer(i).type for i in range(net.network.num_layers)]


def _affine_layer_norm(width: int) -> torch.nn.LayerNorm:
    ln = torch.nn.LayerNorm(width)
    with torch.no_grad():  # non-trivial affine parameters, so folding them is really checked
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1.0, 1.0)
    return ln


class Mlp(torch.nn.Module):
    def __init__(self, width: int = 8, hidden: int = 16):
        super().__init__()
        self.norm = _affine_layer_norm(width)
        self.fc1, self.fc2 = torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


@pytest.mark.parametrize("shape", [(2, 5, 8), (2, 3, 5, 8), (2, 3, 4, 5, 8)])
@pytest.mark.parametrize("fp16", [False, True])
def test_linear_chain_is_convolutions_between_one_shuffle_in_and_one_out(shape, fp16):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    net = check_module(model, torch.randn(*shape), rtol=2e-3 if fp16 else 1e-5, fp16=fp16)
    types = [t for t in _types(net) if t != LT.CAST]
    assert types == [LT.SHUFFLE, LT.CONVOLUTION, LT.ACTIVATION, LT.CONVOLUTION, LT.SHUFFLE]


@pytest.mark.parametrize("fp16", [False, True])
def test_linear_on_rows_is_a_matrix_multiply_and_a_bias_add(fp16):
    """[N, C] rows (a classifier head): TensorRT fuses the product and its bias add into one kernel writing
    [N, out], where a 1x1 convolution's [N, out, 1, 1] result would need a copy kernel to become [N, out]."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    net = check_module(model, torch.randn(4, 8), rtol=2e-3 if fp16 else 1e-5, fp16=fp16)
    types = [t for t in _types(net) if t not in (LT.CAST, LT.CONSTANT)]
    assert types == [LT.MATRIX_MULTIPLY, LT.ELEMENTWISE, LT.ACTIVATION, LT.MATRIX_MULTIPLY, LT.ELEMENTWISE]


class SeparateProjections(torch.nn.Module):
    """BERT-style attention: a layer norm, then separate query, key and value linear layers."""

    def __init__(self, width: int = 8, heads: int = 2):
        super().__init__()
        self.norm = _affine_layer_norm(width)
        self.query, self.key, self.value = (torch.nn.Linear(width, width) for _ in range(3))
        self.heads = heads

    def forward(self, x):
        h = self.norm(x)
        split = [t(h).unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (self.query, self.key, self.value)]
        return x + F.scaled_dot_product_attention(*split).transpose(1, 2).flatten(2)


def test_separate_query_key_value_projections_stay_matrix_multiplies():
    """Token sequences of a model with sibling projections stay out of the channel layout: TensorRT merges
    sibling matrix multiplies into one GEMM (not sibling convolutions); an MLP elsewhere in a vision model
    still enters it."""
    net = check_module(SeparateProjections(), torch.randn(2, 5, 8))
    types = _types(net)
    assert LT.CONVOLUTION not in types and types.count(LT.MATRIX_MULTIPLY) == 3
    assert _types(check_module(Mlp(), torch.randn(2, 5, 8))).count(LT.CONVOLUTION) == 2


@pytest.mark.parametrize("fp16", [False, True])
def test_a_pending_layer_norm_affine_folds_into_a_linear_on_rows(fp16):
    """A ViT head: the class token of the final layer norm's output, then a linear layer."""
    fc, ln, head = torch.nn.Linear(8, 8), _affine_layer_norm(8), torch.nn.Linear(8, 6)
    net = check_module(lambda x: head(ln(fc(x))[:, 0]), torch.randn(2, 5, 8), rtol=2e-3 if fp16 else 1e-5,
                       fp16=fp16)
    types = _types(net)
    assert types.count(LT.SCALE) == 0 and types.count(LT.MATRIX_MULTIPLY) == 1


@pytest.mark.parametrize("fp16", [False, True])
def test_layer_norm_affine_folds_into_the_next_linear_and_residuals_stay_in_layout(fp16):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Mlp(), Mlp())
    net = check_module(model, torch.randn(2, 7, 8), rtol=2e-3 if fp16 else 1e-5, fp16=fp16)
    types = _types(net)
    assert types.count(LT.SCALE) == 0 and types.count(LT.MATRIX_MULTIPLY) == 0
    assert types.count(LT.SHUFFLE) == 2  # into the layout once, out of it once
    assert types.count(LT.CONSTANT) == 2  # the shared ones/zeros of both normalizations


def test_a_pending_layer_norm_affine_is_applied_for_other_readers():
    ln = _affine_layer_norm(8)
    fc = torch.nn.Linear(8, 8)
    net = check_module(lambda x: torch.softmax(ln(fc(x)), -1) + ln(fc(x)) * 2, torch.randn(2, 5, 8))
    assert _types(net).count(LT.SCALE) == 2  # one per layer-norm value, read by the softmax and the mul


def test_layer_norm_without_affine_and_traced_weights_fall_back_or_stay_exact():
    fc = torch.nn.Linear(8, 8)
    plain = torch.nn.LayerNorm(8, elementwise_affine=False)
    check_module(lambda x: fc(plain(fc(x))), torch.randn(3, 4, 8), rtol=1e-5)
    check_module(lambda x, w: F.layer_norm(fc(x), (8,), w * 2), torch.randn(3, 4, 8), torch.rand(8) + 0.5,
                 rtol=1e-5)


def test_elementwise_ops_with_constants_scalars_and_plain_tensors():
    fc = torch.nn.Linear(8, 8)
    gamma = torch.nn.Parameter(torch.rand(8) + 0.5)
    table = torch.randn(5, 8)
    check_module(lambda x, y: (fc(x) * gamma + table) / 3 - y + 2 ** fc(x).tanh(), torch.randn(2, 5, 8),
                 torch.randn(2, 5, 8), rtol=1e-5)
    # a plain operand of lower rank broadcasts on the canonical tensor instead
    check_module(lambda x, b: fc(x) + b, torch.randn(2, 5, 8), torch.randn(8), rtol=1e-5)


def test_channels_last_block_between_convolutions_keeps_the_layout():
    """A ConvNeXt-style block: NCHW -> NHWC, layer norm and MLP per pixel, layer scale, back to NCHW."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.norm, self.mlp = _affine_layer_norm(8), torch.nn.Sequential(
                torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
            self.scale = torch.nn.Parameter(torch.rand(8))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.mlp(self.norm(y)) * self.scale
            return x + y.permute(0, 3, 1, 2)

    net = check_module(torch.nn.Sequential(Block(), Block()), torch.randn(2, 8, 6, 5), rtol=1e-5)
    assert _types(net).count(LT.SHUFFLE) == 0


def test_transposes_that_keep_the_channels_last_add_no_layer():
    fc1, fc2 = torch.nn.Linear(8, 8), torch.nn.Linear(8, 6)
    net = check_module(lambda x: fc2(fc1(x).transpose(0, 1)).permute(1, 0, 2), torch.randn(2, 5, 8), rtol=1e-5)
    assert _types(net).count(LT.SHUFFLE) == 2
    check_module(lambda x: fc1(x).transpose(1, 2), torch.randn(2, 5, 8), rtol=1e-5)  # the channels move


def test_concatenation_along_tokens_with_a_class_token():
    fc = torch.nn.Linear(8, 8)
    token = torch.nn.Parameter(torch.randn(1, 1, 8))
    pos = torch.nn.Parameter(torch.randn(1, 6, 8))
    net = check_module(lambda x: fc(torch.cat([token.expand(x.shape[0], -1, -1), x.permute(0, 2, 1)], 1) + pos),
                       torch.randn(1, 8, 5), rtol=1e-5)
    assert _types(net).count(LT.CONCATENATION) == 1
    check_module(lambda x, y: torch.cat([fc(x), y], -1), torch.randn(2, 5, 8), torch.randn(2, 5, 3), rtol=1e-5)


@pytest.mark.parametrize("index", [
    (slice(None), 0), (1,), (slice(None), slice(1, 4)), (Ellipsis, slice(None)), (0, 0),
])
def test_indexing_rank3(index):
    ln, fc = _affine_layer_norm(8), torch.nn.Linear(8, 4)
    check_module(lambda x: fc(ln(x)[index]), torch.randn(2, 5, 8), rtol=1e-5)


@pytest.mark.parametrize("shape,index", [
    ((2, 3, 5, 8), (slice(None), 1, slice(None, None, 2))), ((2, 3, 5, 8), (0, 1)),
    ((2, 3, 4, 5, 8), (slice(None), 2)), ((2, 3, 4, 5, 8), (0, slice(None), 1)),
])
def test_indexing_higher_ranks(shape, index):
    ln, fc = _affine_layer_norm(8), torch.nn.Linear(8, 4)
    check_module(lambda x: fc(ln(x)[index]), torch.randn(*shape), rtol=1e-5)


def test_class_token_read_is_one_slice():
    ln, fc, head = _affine_layer_norm(8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
    net = check_module(lambda x: head(ln(fc(x))[:, 0]), torch.randn(2, 5, 8), rtol=1e-5)
    assert _types(net).count(LT.SLICE) == 1 and _types(net).count(LT.GATHER) == 0


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("fp16", [False, True])
def test_self_attention_block(batch_first, fp16):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = _affine_layer_norm(16)
            self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first)
            self.mlp = Mlp(16, 32)

        def forward(self, x):
            y = self.ln(x)
            return self.mlp(x + self.attn(y, y, y, need_weights=False)[0])

    x = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)
    net = check_module(torch.nn.Sequential(Block(), Block()), x, rtol=3e-3 if fp16 else 1e-5, fp16=fp16)
    types = _types(net)
    assert types.count(LT.MATRIX_MULTIPLY) == 0 and types.count(LT.SHUFFLE) == 2 + 2 * 2
    if flavour.HAS_ATTENTION_LAYER:
        assert types.count(LT.ATTENTION_INPUT) == 2


def test_causal_self_attention():
    attn = torch.nn.MultiheadAttention(16, 2)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(6)
    check_module(lambda x: attn(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0],
                 torch.randn(6, 3, 16), rtol=1e-5)


def test_dynamic_batch_and_sequence_in_layout():
    model = torch.nn.Sequential(Mlp(), Mlp())
    x = torch.randn(2, 5, 8)
    net = torch2x.build_network(model.eval(), [x], dynamic_shapes={"input_0": {0: (1, 2, 4), 1: (1, 5, 9)}})
    for shape in [(1, 1, 8), (4, 9, 8), (3, 6, 8)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
        err = ((net.interpret(x) - ref).norm() / ref.norm()).item()
        assert err <= 1e-5, f"{shape}: relative error {err:.3g}"
    assert net.build_engine()


def test_int8_and_bfloat16_keep_matrix_multiplies():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)).eval()
    x = torch.randn(4, 3, 8)
    net = torch2x.build_network(model, [x], bf16=True)
    assert _types(net).count(LT.MATRIX_MULTIPLY) == 2 and LT.CONVOLUTION not in _types(net)
    net = torch2x.build_network(model, [x], int8=True, calibration_data=[torch.randn(4, 3, 8) for _ in range(2)])
    assert _types(net).count(LT.MATRIX_MULTIPLY) == 2 and LT.CONVOLUTION not in _types(net)


def test_self_attention_without_tensorrts_attention_layer(monkeypatch):
    """TensorRT 10.x before the attention layer: matrix multiply, softmax, matrix multiply instead."""
    monkeypatch.setattr(flavour, "HAS_ATTENTION_LAYER", False)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    ln = _affine_layer_norm(16)

    def block(x, mask, causal):
        y = ln(x)
        return attn(y, y, y, attn_mask=mask, is_causal=causal, need_weights=False)[0]

    for causal in (False, True):
        mask = torch.nn.Transformer.generate_square_subsequent_mask(7) if causal else None
        net = check_module(functools.partial(block, mask=mask, causal=causal), torch.randn(2, 7, 16), rtol=1e-5)
        types = _types(net)
        assert types.count(LT.MATRIX_MULTIPLY) == 2 and types.count(LT.SOFTMAX) == 1
        assert getattr(LT, "ATTENTION_INPUT", None) not in types


def test_addmm_linear_views_and_unary_math_keep_the_layout():
    """transformers' Conv1D (GPT-2): bias + x.view(-1, C) @ weight, viewed back; GELU written out."""
    ln = _affine_layer_norm(8)
    weight, bias = torch.nn.Parameter(torch.randn(8, 24) / 3), torch.nn.Parameter(torch.randn(24))

    def block(x):
        y = torch.addmm(bias, ln(x).view(-1, 8), weight).view(2, 5, 24)
        y = 0.5 * y * (1.0 + torch.tanh(0.79 * (y + 0.044715 * torch.pow(y, 3.0))))
        return (y.abs() + 1).sqrt().reshape(2, 5, 2, 12)

    net = check_module(block, torch.randn(2, 5, 8), rtol=1e-5)
    types = _types(net)
    assert LT.MATRIX_MULTIPLY not in types and LT.SCALE not in types
    assert types.count(LT.SHUFFLE) == 5  # into the layout, two views in it, out of it, the last reshape


def test_copies_share_one_plain_tensor():
    fc = torch.nn.Linear(8, 8)

    def block(x):
        h = fc(x)
        copy = F.dropout(h, 0.1, training=False).contiguous()
        return h.softmax(-1) + copy.softmax(-1)

    net = check_module(block, torch.randn(2, 5, 8), rtol=1e-5)
    assert _types(net).count(LT.SHUFFLE) == 2  # into the layout; out of it once for h and its copy


def test_vit_b_16_is_a_quarter_of_the_onnx_routes_layers():
    """issue 4's target: vit_b_16 in at most 25% of the 853 layers torch.onnx.export + TensorRT's ONNX parser
    give (benchmarks/zoo.py measures both routes); each encoder block is 16 layers."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    net = check_module(model, torch.randn(1, 3, 224, 224), rtol=1e-4, build=False)
    assert net.network.num_layers <= 853 // 4
    per_block = {}
    for i in range(net.network.num_layers):
        name = net.network.get_layer(i).name
        if "encoder_layer_" in name:
            block = name.split("encoder_layer_")[1].split(".")[0].split("/")[0]
            per_block[block] = per_block.get(block, 0) + 1
    # the first block also makes the two constants (ones, zeros) every normalization shares
    assert len(per_block) == 12 and per_block.pop("0") == 18 and set(per_block.values()) == {16}


def test_nchw_to_nhwc_with_dynamic_channels():
    """A dynamic channel dim (only static ones can be a convolution's channels) keeps the plain permute."""
    model = _Wrap(lambda x: (x.permute(0, 2, 3, 1) * 2).sum(-1))
    x = torch.randn(2, 3, 4, 5)
    net = torch2x.build_network(model, [x], dynamic_shapes={"input_0": {1: (1, 3, 6)}})
    for shape in [(2, 1, 4, 5), (2, 6, 4, 5)]:
        x = torch.randn(*shape)
        assert torch.allclose(net.interpret(x), model(x), rtol=1e-5, atol=1e-5)
