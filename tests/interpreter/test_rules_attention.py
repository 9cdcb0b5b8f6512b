"""The fused attention layer: ``flavour.add_attention`` networks, built by TensorRT and interpreted,
against ``F.scaled_dot_product_attention`` with ``scale=1.0`` (IAttention does not scale the scores)."""
import pytest
import torch
import torch.nn.functional as F

from torch2x import flavour
from torch2x.context import ConversionContext
from torch2x.flavour import trt
from torch2x.interpreter import UnsupportedLayerError, interpret

pytestmark = pytest.mark.skipif(not flavour.HAS_ATTENTION_LAYER, reason=f"{flavour.describe()} has no IAttention")

TRT_TYPE = {torch.float32: trt.float32, torch.float16: trt.float16, torch.bool: trt.bool}
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3)}


def _qkv(b=2, hq=4, hkv=4, sq=5, skv=5, d=16, dtype=torch.float32):
    q = torch.randn(b, hq, sq, d) / d**0.5  # pre-scaled, as a converter would
    return q.to(dtype), torch.randn(b, hkv, skv, d).to(dtype), torch.randn(b, hkv, skv, d).to(dtype)


def _attention(fresh, tensors, build=False, **kwargs):
    """Add inputs for ``tensors`` (name -> torch tensor), an attention of q, k, v, and interpret it."""
    net = fresh.network
    its = {n: net.add_input(n, TRT_TYPE[t.dtype], tuple(t.shape)) for n, t in tensors.items()}
    mask = its.get("mask")
    attention = flavour.add_attention(net, its["q"], its["k"], its["v"], mask=mask, **kwargs)
    out = attention.get_output(0)
    out.name = "y"
    net.mark_output(out)
    if build:
        fresh.build()  # asserts TensorRT returned an engine
    return interpret(net, tensors)["y"]


def _reference(q, k, v, **kwargs):
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.is_floating_point():
        kwargs["attn_mask"] = mask.float()
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=1.0, **kwargs)


def test_attention_appears_as_two_boundary_layers(fresh):
    q, k, v = _qkv()
    mask = torch.rand(1, 1, 5, 5) > 0.3
    net = fresh.network
    its = [net.add_input(n, TRT_TYPE[t.dtype], tuple(t.shape)) for n, t in zip("qkvm", (q, k, v, mask))]
    attention = flavour.add_attention(net, *its[:3], mask=its[3])
    assert attention.decomposable and attention.mask.name == "m"
    layers = [flavour.concrete_layer(net.get_layer(i)) for i in range(net.num_layers)]
    assert [layer.type for layer in layers] == [trt.LayerType.ATTENTION_INPUT, trt.LayerType.ATTENTION_OUTPUT]
    first, second = layers
    assert [first.get_input(i).name for i in range(first.num_inputs)] == ["q", "k", "v", "m"]
    assert [second.get_input(i).name for i in range(second.num_inputs)] == [first.get_output(0).name]
    assert second.get_output(0).name == attention.get_output(0).name


def test_plain_float32_builds_and_matches(fresh):
    q, k, v = _qkv()
    got = _attention(fresh, dict(q=q, k=k, v=v), build=True)
    torch.testing.assert_close(got, _reference(q, k, v), **TOL[torch.float32])


def test_causal(fresh):
    q, k, v = _qkv(sq=6, skv=6)
    got = _attention(fresh, dict(q=q, k=k, v=v), build=True, causal=True)
    torch.testing.assert_close(got, _reference(q, k, v, is_causal=True), **TOL[torch.float32])
    # the mask matters: the first query sees only the first key
    torch.testing.assert_close(got[:, :, 0], v[:, :, 0], **TOL[torch.float32])


def test_causal_fewer_queries_than_keys_is_upper_left(fresh):
    """Sq != Skv: query i sees keys 0..i, which is PyTorch's is_causal (tril of the [Sq, Skv] ones)."""
    q, k, v = _qkv(sq=3, skv=7)
    got = _attention(fresh, dict(q=q, k=k, v=v), build=True, causal=True)
    torch.testing.assert_close(got, _reference(q, k, v, is_causal=True), **TOL[torch.float32])
    assert not torch.allclose(got, _reference(q, k, v), **TOL[torch.float32])


def test_bool_mask(fresh):
    q, k, v = _qkv()
    mask = torch.rand(2, 4, 5, 5) > 0.4
    mask[..., 0] = True  # every query attends somewhere (a fully masked row is NaN)
    got = _attention(fresh, dict(q=q, k=k, v=v, mask=mask), build=True)
    torch.testing.assert_close(got, _reference(q, k, v, attn_mask=mask), **TOL[torch.float32])
    assert not torch.allclose(got, _reference(q, k, v), **TOL[torch.float32])


def test_float_mask_broadcast_over_heads(fresh):
    q, k, v = _qkv(sq=4, skv=6)
    mask = torch.randn(2, 1, 4, 6) * 3
    got = _attention(fresh, dict(q=q, k=k, v=v, mask=mask), build=True)
    torch.testing.assert_close(got, _reference(q, k, v, attn_mask=mask), **TOL[torch.float32])
    assert not torch.allclose(got, _reference(q, k, v), **TOL[torch.float32])


def test_grouped_query_attention(fresh):
    q, k, v = _qkv(hq=8, hkv=2, sq=5, skv=5)
    got = _attention(fresh, dict(q=q, k=k, v=v), build=True, causal=True)
    assert got.shape == (2, 8, 5, 16)
    torch.testing.assert_close(got, _reference(q, k, v, is_causal=True), **TOL[torch.float32])
    # query heads 0..3 share key/value head 0: consecutive grouping, not round-robin
    ref = F.scaled_dot_product_attention(q[:, :4], k[:, :1].expand(-1, 4, -1, -1), v[:, :1].expand(-1, 4, -1, -1),
                                         scale=1.0, is_causal=True)
    torch.testing.assert_close(got[:, :4], ref, **TOL[torch.float32])


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_float16_builds_and_matches(fresh, mask_kind):
    q, k, v = _qkv(dtype=torch.float16)
    tensors = dict(q=q, k=k, v=v)
    if mask_kind == "bool":
        tensors["mask"] = torch.rand(1, 1, 5, 5) > 0.3
        tensors["mask"][..., 0] = True
    elif mask_kind == "float":
        tensors["mask"] = torch.randn(1, 4, 5, 5).half()
    got = _attention(fresh, tensors, build=True)
    assert got.dtype == torch.float16
    ref = _reference(q, k, v, attn_mask=tensors.get("mask")).half()
    torch.testing.assert_close(got, ref, **TOL[torch.float16])


def test_through_the_naming_wrapper(fresh):
    """Converters pass ``ctx.network``: the attention's output gets the call's name."""
    ctx = ConversionContext(fresh.network)
    ctx.begin_call("blocks.0.attn", "scaled_dot_product_attention")
    q, k, v = _qkv()
    its = [fresh.network.add_input(n, trt.float32, tuple(t.shape)) for n, t in zip("qkv", (q, k, v))]
    attention = flavour.add_attention(ctx.network, *its, causal=True)
    out = attention.get_output(0)
    assert out.name == "blocks.0.attn/scaled_dot_product_attention"
    fresh.network.mark_output(out)
    got = interpret(fresh.network, dict(q=q, k=k, v=v))[out.name]
    torch.testing.assert_close(got, _reference(q, k, v, is_causal=True), **TOL[torch.float32])


def test_lower_right_causal(fresh):
    """LOWER_RIGHT: query i sees keys 0..i + Skv - Sq (set directly; add_attention only makes UPPER_LEFT)."""
    q, k, v = _qkv(sq=3, skv=7)
    net = fresh.network
    its = [net.add_input(n, trt.float32, tuple(t.shape)) for n, t in zip("qkv", (q, k, v))]
    attention = flavour.add_attention(net, *its, causal=True)
    attention.causal_kind = trt.CausalMaskKind.LOWER_RIGHT
    net.mark_output(attention.get_output(0))
    got = interpret(net, dict(q=q, k=k, v=v))[attention.get_output(0).name]
    allowed = torch.ones(3, 7, dtype=torch.bool).tril(diagonal=4)
    torch.testing.assert_close(got, _reference(q, k, v, attn_mask=allowed), **TOL[torch.float32])


def test_no_normalization(fresh):
    q, k, v = _qkv()
    net = fresh.network
    its = [net.add_input(n, trt.float32, tuple(t.shape)) for n, t in zip("qkv", (q, k, v))]
    attention = flavour.add_attention(net, *its)
    attention.norm_op = trt.AttentionNormalizationOp.NONE
    net.mark_output(attention.get_output(0))
    got = interpret(net, dict(q=q, k=k, v=v))[attention.get_output(0).name]
    torch.testing.assert_close(got, (q @ k.transpose(-2, -1)) @ v, rtol=1e-5, atol=1e-4)


def test_unsupported_settings_are_refused(fresh):
    q, k, v = _qkv()
    net = fresh.network
    its = [net.add_input(n, trt.float32, tuple(t.shape)) for n, t in zip("qkv", (q, k, v))]
    attention = flavour.add_attention(net, *its)
    attention.key_value_lengths = net.add_input("lengths", trt.int32, (2,))
    net.mark_output(attention.get_output(0))
    with pytest.raises(UnsupportedLayerError, match="key_value_lengths"):
        interpret(net, dict(q=q, k=k, v=v, lengths=torch.tensor([5, 3], dtype=torch.int32)))


def test_causal_and_mask_together_are_refused(fresh):
    net = fresh.network
    its = [net.add_input(n, trt.float32, (1, 2, 4, 8)) for n in "qkv"]
    mask = net.add_input("m", trt.bool, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="causal flag or a mask"):
        flavour.add_attention(net, *its, causal=True, mask=mask)


def test_float_mask_of_another_type_is_refused(fresh):
    net = fresh.network
    its = [net.add_input(n, trt.float16, (1, 2, 4, 8)) for n in "qkv"]
    mask = net.add_input("m", trt.float32, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="query's type"):
        flavour.add_attention(net, *its, mask=mask)
