import pytest
import torch
import torch.nn.functional as F
from harness import check_module

import torch2x
from torch2x.report import UnsupportedOperatorError

B, H, L, S, E = 2, 4, 5, 6, 8


def _qkv(lead=(B, H), ev=E):
    return torch.randn(lead + (L, E)), torch.randn(lead + (S, E)), torch.randn(lead + (S, ev))


@pytest.mark.parametrize("lead", [(), (3,), (B, H)])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_sdpa(lead, scale):
    check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=scale), *_qkv(lead, ev=3))


@pytest.mark.parametrize("mask_shape", [(L, S), (B, 1, L, S), (B, H, L, S), (1, S)])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_sdpa_mask(mask_shape, dtype):
    if dtype == torch.bool:
        mask = torch.rand(mask_shape) > 0.3
        mask[..., 0] = True  # a fully masked row is NaN in torch
    else:
        mask = torch.randn(mask_shape)
    check_module(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), *_qkv(), mask)
    check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), *_qkv())


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_sdpa_fully_masked_query(dtype):
    # torch's SDPA gives 0 (not NaN) for a query that may attend to no key
    keep = torch.rand(L, S) > 0.3
    keep[:, 0] = True
    keep[1] = False
    mask = keep if dtype == torch.bool else torch.zeros(L, S).masked_fill(~keep, float("-inf"))
    check_module(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), *_qkv(), mask)


@pytest.mark.parametrize("shapes", [(L, L), (L, S), (S, L)])
def test_sdpa_causal(shapes):
    lq, ls = shapes
    q, k, v = torch.randn(B, H, lq, E), torch.randn(B, H, ls, E), torch.randn(B, H, ls, E)
    check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)


@pytest.mark.parametrize("mask_shape", [None, "causal", (B, 4, L, S), (B, 1, L, S), (L, S), (4, L, S)])
def test_sdpa_gqa(mask_shape):
    q, k, v = torch.randn(B, 4, L, E), torch.randn(B, 2, S, E), torch.randn(B, 2, S, E)
    causal = mask_shape == "causal"
    mask = None if mask_shape is None or causal else torch.randn(mask_shape)
    check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                                enable_gqa=True), q, k, v)


def test_sdpa_fp16():
    check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                 *_qkv(), rtol=1e-2, fp16=True)


def test_sdpa_dropout_is_reported():
    with pytest.raises(UnsupportedOperatorError, match="dropout_p"):
        torch2x.build_network(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.5), _qkv())


def _mha(batch_first, **kw):
    torch.manual_seed(0)
    return torch.nn.MultiheadAttention(E, 2, batch_first=batch_first, **kw).eval()


def _seq(batch_first, n, batched=True):
    if not batched:
        return torch.randn(n, E)
    return torch.randn(B, n, E) if batch_first else torch.randn(n, B, E)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_mha_self(batch_first, need_weights, average):
    m = _mha(batch_first)
    check_module(lambda x: m(x, x, x, need_weights=need_weights, average_attn_weights=average),
                 _seq(batch_first, L))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kv_same", [True, False])
def test_mha_cross(batch_first, kv_same):
    m = _mha(batch_first)
    q, k, v = _seq(batch_first, L), _seq(batch_first, S), _seq(batch_first, S)
    if kv_same:
        check_module(lambda q, k: m(q, k, k), q, k)
    else:
        check_module(lambda q, k, v: m(q, k, v, average_attn_weights=False), q, k, v)


def test_mha_kdim_vdim():
    torch.manual_seed(0)
    m = torch.nn.MultiheadAttention(E, 2, kdim=3, vdim=5).eval()
    check_module(m, torch.randn(L, B, E), torch.randn(S, B, 3), torch.randn(S, B, 5))


def test_mha_unbatched():
    m = _mha(False)
    check_module(lambda x, y: (m(x, x, x), m(x, y, y, average_attn_weights=False)), torch.randn(L, E),
                 torch.randn(S, E))
    kpm = torch.zeros(L, dtype=torch.bool)
    kpm[-2:] = True
    heads_mask = torch.randn(2, L, L)
    check_module(lambda x: (m(x, x, x, key_padding_mask=kpm, need_weights=False)[0],
                            m(x, x, x, attn_mask=heads_mask, average_attn_weights=False)), torch.randn(L, E))


def _kpm(dtype):
    if dtype is torch.bool:
        kpm = torch.zeros(B, L, dtype=torch.bool)
        kpm[0, -2:] = True
        return kpm
    return torch.randn(B, L)


def _attn_mask(kind):
    if kind == "bool":
        mask = torch.rand(L, L) > 0.5
        mask[:, 0] = False
        return mask
    return {"float": torch.randn(L, L), "float3d": torch.randn(B * 2, L, L)}[kind]


# (batch_first, need_weights, key padding mask dtype, attn_mask kind); batch_first=True without
# need_weights and with bool masks takes the fused path (torch._native_multi_head_attention).
MASK_CASES = [(True, True, torch.bool, None), (True, False, torch.bool, "bool"), (False, True, torch.bool, "bool"),
              (False, False, torch.float32, "float"), (True, True, None, "float3d"), (False, False, None, "float3d"),
              (True, False, None, "bool"), (False, True, torch.float32, None)]


@pytest.mark.parametrize("batch_first,need_weights,kpm_dtype,attn", MASK_CASES)
def test_mha_masks_constant(batch_first, need_weights, kpm_dtype, attn):
    m = _mha(batch_first)
    kpm = None if kpm_dtype is None else _kpm(kpm_dtype)
    mask = None if attn is None else _attn_mask(attn)
    check_module(lambda x: m(x, x, x, key_padding_mask=kpm, attn_mask=mask, need_weights=need_weights),
                 _seq(batch_first, L))


@pytest.mark.parametrize("batch_first,need_weights,kpm_dtype,attn", [
    (True, False, torch.bool, "bool"), (False, True, torch.bool, "bool"), (False, False, torch.float32, "float"),
    (True, True, torch.float32, "float3d")])
def test_mha_masks_traced(batch_first, need_weights, kpm_dtype, attn):
    # masks given as inputs: torch turns bool masks into float ones (zeros_like + masked_fill_) on the way
    m = _mha(batch_first)
    check_module(lambda x, k, a: m(x, x, x, key_padding_mask=k, attn_mask=a, need_weights=need_weights),
                 _seq(batch_first, L), _kpm(kpm_dtype), _attn_mask(attn))


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_padded_sequence(need_weights):
    # NaN with need_weights (explicit softmax), 0 without (torch calls SDPA): both as torch gives them
    m = _mha(False)
    kpm = torch.zeros(B, L, dtype=torch.bool)
    kpm[0] = True
    check_module(lambda x: m(x, x, x, key_padding_mask=kpm, need_weights=need_weights)[0], _seq(False, L))


@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_causal(batch_first):
    m = _mha(batch_first)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(L)
    check_module(lambda x: m(x, x, x, attn_mask=mask, is_causal=True, need_weights=False), _seq(batch_first, L))


def test_mha_fp16():
    m = _mha(True)
    check_module(lambda x: m(x, x, x), _seq(True, L), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("bias_kv,zero_attn", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("masked", [False, True])
def test_mha_bias_kv_zero_attn(bias_kv, zero_attn, masked):
    m = _mha(False, add_bias_kv=bias_kv, add_zero_attn=zero_attn)
    with torch.no_grad():
        if bias_kv:
            m.bias_k.normal_()
            m.bias_v.normal_()
    kw = dict(key_padding_mask=_kpm(torch.float32), attn_mask=_attn_mask("float")) if masked else {}
    check_module(lambda x: m(x, x, x, average_attn_weights=False, **kw), _seq(False, L))


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer(batch_first, norm_first, activation):
    # As a module the layer runs its Python path (the tracer's hooks turn the fused one off)...
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, batch_first=batch_first,
                                             norm_first=norm_first, activation=activation).eval()
    check_module(layer, _seq(batch_first, L))


def _padding(n=L):
    kpm = torch.zeros(B, n)
    kpm[0, -2:] = float("-inf")
    return kpm


def _fused_layer(layer, x, mask=None, mask_type=None):
    attn = layer.self_attn
    return torch._transformer_encoder_layer_fwd(
        x, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight,
        attn.out_proj.bias, layer.activation_relu_or_gelu == 2, layer.norm_first, layer.norm1.eps, layer.norm1.weight,
        layer.norm1.bias, layer.norm2.weight, layer.norm2.bias, layer.linear1.weight, layer.linear1.bias,
        layer.linear2.weight, layer.linear2.bias, mask, mask_type)


# The fused eval paths (torch._native_multi_head_attention, torch._transformer_encoder_layer_fwd) are what
# the modules call in eval without hooks; they are called directly here, with masks as merge_masks gives them.
@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
@pytest.mark.parametrize("masks", ["none", "kpm", "src_mask", "both", "kpm_traced"])
def test_transformer_encoder_layer_fused(norm_first, activation, masks):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, batch_first=True, norm_first=norm_first,
                                             activation=activation).eval()
    x, kpm = _seq(True, L), _padding()
    src_mask = torch.nn.Transformer.generate_square_subsequent_mask(L)
    if masks == "kpm_traced":
        check_module(lambda x, k: _fused_layer(layer, x, k, 1), x, kpm)
        return
    merged = {"none": (None, None), "kpm": (kpm, 1), "src_mask": layer.self_attn.merge_masks(src_mask, None, x),
              "both": layer.self_attn.merge_masks(src_mask, kpm, x)}[masks]
    check_module(lambda x: _fused_layer(layer, x, *merged), x)


def test_transformer_encoder_layer_fused_fp16():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, batch_first=True).eval()
    check_module(lambda x: _fused_layer(layer, x), _seq(True, L), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("masks,cross", [("none", False), ("kpm", False), ("both", False), ("none", True),
                                         ("kpm", True)])
def test_native_multi_head_attention(need_weights, average, masks, cross):
    m = _mha(True)
    x, y = _seq(True, L), _seq(True, L)  # the fused kernel wants keys as long as the queries
    kpm = _padding()
    if masks == "both":  # merge_masks' (N, H, L, L) sum of both (bool masks turned to 0/-inf), mask type 2
        merged = m.merge_masks(torch.zeros(L, L).masked_fill(torch.rand(L, L) > 0.6, float("-inf")), kpm, x)
    else:
        merged = (kpm, 1) if masks == "kpm" else (None, None)

    def fn(x, y):
        k = y if cross else x
        return torch._native_multi_head_attention(x, k, k, E, 2, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight,
                                                  m.out_proj.bias, merged[0], need_weights, average, merged[1])
    check_module(fn, x, y)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_with_padding(batch_first):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, batch_first=batch_first)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    check_module(lambda x, k: encoder(x, src_key_padding_mask=k), _seq(batch_first, L), _kpm(torch.bool))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_transformer_encoder_nested_fast_path():
    # With enable_nested_tensor (the default), torch's eval fast path packs the batch into a nested tensor
    # and returns 0 at padded positions. While tracing, that fast path is off (the tracer's torch-function
    # mode turns it off, as any mode does), so the network computes the padded positions like
    # enable_nested_tensor=False does; the positions that are not padding agree.
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2).eval()
    x, kpm = _seq(True, L), _kpm(torch.bool)
    converted = torch2x.build_network(lambda x, k: encoder(x, src_key_padding_mask=k), [x, kpm])
    with torch.no_grad():
        reference = encoder(x, src_key_padding_mask=kpm)
    out = converted.interpret(x, kpm)
    assert (reference[kpm] == 0).all()
    assert torch.allclose(out[~kpm], reference[~kpm], atol=1e-5)


def test_transformer():
    torch.manual_seed(0)
    model = torch.nn.Transformer(E, 2, 1, 1, 16, batch_first=True).eval()
    tgt_mask = torch.nn.Transformer.generate_square_subsequent_mask(4)
    check_module(lambda s, t: model(s, t, tgt_mask=tgt_mask), _seq(True, L), _seq(True, 4))


# ----------------------------------------------------------------------------- TensorRT's attention layer

def _attention_layers(net) -> int:
    attention_input = getattr(torch2x.flavour.trt.LayerType, "ATTENTION_INPUT", None)
    return sum(net.network.get_layer(i).type == attention_input for i in range(net.network.num_layers))


needs_attention_layer = pytest.mark.skipif(not torch2x.flavour.HAS_ATTENTION_LAYER,
                                           reason="this TensorRT has no attention layer")


@needs_attention_layer
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("kind", ["none", "scale"])
def test_sdpa_as_tensorrts_attention_layer(kind, fp16):
    q, k, v = _qkv()
    options = {"none": {}, "scale": {"scale": 0.3}}[kind]
    net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **options), q, k, v,
                       rtol=2e-3 if fp16 else 1e-5, fp16=fp16)
    assert _attention_layers(net) == 1


@pytest.mark.parametrize("case", ["causal", "bool mask", "float mask", "fully masked query", "traced mask",
                                  "broadcast batch", "gqa"])
def test_sdpa_keeps_matrix_multiplies_where_the_layer_differs(case):
    """Masked and causal attention (their engines are leaner from plain layers: see converters/attention.py),
    and what the layer cannot compute as PyTorch does."""
    q, k, v = _qkv()
    if case == "causal":
        net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)
    elif case in ("bool mask", "float mask"):
        mask = torch.rand(L, S) > 0.3 if case == "bool mask" else torch.randn(B, 1, L, S)
        if case == "bool mask":
            mask[:, 0] = True
        net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v)
    elif case == "fully masked query":  # PyTorch gives that query zeros; the layer would not
        mask = torch.rand(L, S) > 0.3
        mask[0] = False
        mask[1:, 0] = True
        net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v)
    elif case == "traced mask":
        net = check_module(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m > 0), q, k, v,
                           torch.randn(B, 1, L, S) + 2)
    elif case == "broadcast batch":
        net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k[:1], v[:1])
    else:
        net = check_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                           torch.randn(B, 4, L, E), torch.randn(B, 2, S, E), torch.randn(B, 2, S, E))
    assert _attention_layers(net) == 0
