"""Attention: F.scaled_dot_product_attention, nn.MultiheadAttention (F.multi_head_attention_forward and
its fused eval path torch._native_multi_head_attention), nn.TransformerEncoderLayer's fused eval path.

Everything is matrix multiply -> softmax -> matrix multiply, which computes exactly what PyTorch's
math backend does; the scores are masked and normalized in float32 also in reduced precision.
"""
from __future__ import annotations

import math

import torch

from .linear import add_bias, convolve_channels, matmul
from torch2x import flavour, layout
from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import is_traced

Op = trt.ElementWiseOperation
F32 = trt.DataType.FLOAT

KEEP, DROP, ADD = "keep", "drop", "add"  # bool mask True = attend / True = masked out / float added


def attention(ctx, q, k, v, masks, scale, dtype, probs_out=False, safe=False):
    """softmax(q @ k^T * scale + masks) @ v on network tensors of equal rank (batch dims broadcast).

    ``masks`` holds (network tensor, KEEP | DROP | ADD) pairs broadcastable to the scores.
    ``safe``: a query whose keys are all masked gets probabilities 0 (SDPA's), not NaN (multi-head
    attention's). Returns the output, and the attention probabilities too when ``probs_out``.
    """
    q = _scaled(ctx, q, scale, dtype)
    scores = ctx.cast(matmul(ctx, q, k, dtype, transpose_b=True), F32)
    for mask, kind in masks:
        if kind == ADD:
            scores = ctx.elementwise(scores, ctx.cast(mask, F32), Op.SUM, F32)
        else:
            if mask.dtype != trt.DataType.BOOL:
                raise ConversionError(f"a {kind} mask must be bool")
            neg_inf = ctx.constant(torch.full((1,) * len(scores.shape), float("-inf")), F32)
            scores_b, mask_b, fill = ctx.broadcast(scores, mask, neg_inf)
            keep, drop = (scores_b, fill) if kind == KEEP else (fill, scores_b)
            scores = ctx.network.add_select(mask_b, keep, drop).get_output(0)
    softmax = ctx.network.add_softmax(scores)
    softmax.axes = 1 << (len(scores.shape) - 1)
    probs = softmax.get_output(0)
    if safe and masks:
        rank = len(scores.shape)
        top = ctx.network.add_reduce(scores, trt.ReduceOperation.MAX, 1 << (rank - 1), True).get_output(0)
        none = ctx.network.add_elementwise(top, ctx.constant(torch.full((1,) * rank, float("-inf")), F32),
                                           Op.EQUAL).get_output(0)
        zero = ctx.constant(torch.zeros((1,) * rank), F32)
        probs = ctx.network.add_select(none, zero, probs).get_output(0)
    out = matmul(ctx, ctx.cast(probs, dtype), v, dtype)
    return (out, probs) if probs_out else out


def _scaled(ctx, q, scale, dtype):
    """``q * scale`` (no layer for 1): the query scaled before the scores, as TensorRT's attention wants it."""
    if scale == 1.0:
        return q
    factor = ctx.constant(torch.full((1,) * len(q.shape), float(scale)), dtype)
    return ctx.network.add_elementwise(q, factor, Op.PROD).get_output(0)


def _causal(ctx, length, source, rank=2):
    """torch's is_causal mask: query i attends to keys 0..i (top-left aligned), as a KEEP mask of ``rank``.
    Traced lengths (dynamic shapes) compare two index ranges in the network instead of a constant."""
    if not (is_traced(length) or is_traced(source)):
        keep = torch.ones(length, source, dtype=torch.bool).tril()
        return ctx.constant(keep.reshape((1,) * (rank - 2) + (length, source)), trt.DataType.BOOL)
    rows = ctx.shuffle(ctx.arange(length), (1,) * (rank - 1) + (length,),
                       second=tuple(range(rank - 2)) + (rank - 1, rank - 2))
    cols = ctx.shuffle(ctx.arange(source), (1,) * (rank - 1) + (source,))
    later = ctx.elementwise(cols, rows, Op.GREATER)  # key after the query: hidden
    return ctx.network.add_unary(later, trt.UnaryOperation.NOT).get_output(0)


# ----------------------------------------------------------------------------- scaled_dot_product_attention

@converter("torch.nn.functional.scaled_dot_product_attention",
           signature="query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, "
                     "enable_gqa=False")
def scaled_dot_product_attention(ctx, call):
    if call.arg("dropout_p") > 0:
        raise ConversionError("scaled_dot_product_attention with dropout_p > 0 is random; pass dropout_p=0.0 "
                              "in eval (nn.MultiheadAttention does)")
    dtype = ctx.dtype_for(call.output.dtype)
    query, key, value = call.arg("query"), call.arg("key"), call.arg("value")
    q, k, v = (ctx.trt(t, dtype) for t in (query, key, value))
    scale = call.arg("scale")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    fused = _fused_attention(ctx, call, q, k, v, scale, dtype)
    if fused is not None:
        return fused
    L, S = ctx.dims(query)[-2], ctx.dims(key)[-2]
    masks = []
    if call.has("attn_mask"):
        mask = call.arg("attn_mask")
        masks.append((ctx.trt(mask), KEEP if mask.dtype == torch.bool else ADD))
    user_mask = bool(masks)  # the causal mask alone never hides every key (key 0 is always visible)
    if call.arg("is_causal"):
        masks.append((_causal(ctx, L, S, max(query.dim(), key.dim())), KEEP))
    hq, hk = (query.shape[-3] if query.dim() >= 3 else 1), (key.shape[-3] if key.dim() >= 3 else 1)
    if call.arg("enable_gqa") and hq != hk:
        # Each key/value head serves hq/hk query heads: group the query heads instead of repeating k and v.
        lead, g = tuple(query.shape[:-3]), hq // hk
        q = ctx.reshape(q, lead + (hk, g) + tuple(query.shape[-2:]))
        k = ctx.reshape(k, tuple(key.shape[:-3]) + (hk, 1) + tuple(key.shape[-2:]))
        v = ctx.reshape(v, tuple(value.shape[:-3]) + (hk, 1) + tuple(value.shape[-2:]))
        masks = [(_head_grouped(ctx, m, hk, g), kind) for m, kind in masks]
        out = attention(ctx, q, k, v, masks, scale, dtype, safe=user_mask)
        return ctx.reshape(out, call.output.shape)
    rank = max(len(t.shape) for t in (q, k, v))
    q, k, v = ctx.broadcast(q, k, v) if rank > 2 else (q, k, v)
    return attention(ctx, q, k, v, masks, scale, dtype, safe=user_mask)


def _fused_attention(ctx, call, q, k, v, scale, dtype):
    """scaled_dot_product_attention as TensorRT's attention layer where that computes what PyTorch does and
    makes the leaner engine: 4-d query, key and value of one batch and head count, no mask and not causal.
    None otherwise (or on a TensorRT without the layer).

    With a mask or the causal flag the layer's engine transposes the keys in a kernel of its own, where the
    multiplies and softmax built from plain layers read them in place. Same builder, kernels / MB moved
    with the layer and without: T5-base's encoder (relative position bias as the mask) 67/207.6 and
    61/204.5, GPT-2 (causal) 169/741.6 and 157/731.5 (the ONNX route: 63/206.7 and 157/735.9). Without
    either the layer is the leaner (ViT-B/16: 185 kernels against 209)."""
    query, key, value = call.arg("query"), call.arg("key"), call.arg("value")
    if (not flavour.HAS_ATTENTION_LAYER or not query.dim() == key.dim() == value.dim() == 4
            or key.shape != value.shape or query.shape[:2] != key.shape[:2] or query.shape[-1] != key.shape[-1]
            or (call.has("attn_mask") and call.arg("attn_mask") is not None) or call.arg("is_causal")):
        return None
    q = _scaled(ctx, q, scale, dtype)
    out = flavour.add_attention(ctx.network, q, k, v).get_output(0)
    return ctx._noted(out, tuple(call.output.shape))


def _head_grouped(ctx, mask, hk, g):
    """A mask over (..., hq, L, S) seen as (..., hk, g, L, S) (a size-1 head dim stays broadcast)."""
    shape = tuple(mask.shape)
    if len(shape) < 3:
        return mask
    heads = (1, 1) if shape[-3] == 1 else (hk, g)
    return ctx.reshape(mask, shape[:-3] + heads + shape[-2:])


# ----------------------------------------------------------------------------- multi-head attention

def _heads(ctx, x, dims, batch_first, batched, heads):
    """(L, N, E) / (N, L, E) / (L, E) -> (1, N, H, L, head_dim): the layout the attention core works in.
    ``dims`` are the torch input's sizes (traced ones follow dynamic dims)."""
    if not batched:
        L, E = dims
        return ctx.shuffle(x, (1, L, 1, heads, E // heads), second=(0, 2, 3, 1, 4))
    if batch_first:
        N, L, E = dims
        return ctx.shuffle(x, (1, N, L, heads, E // heads), second=(0, 1, 3, 2, 4))
    L, N, E = dims
    return ctx.shuffle(x, (1, L, N, heads, E // heads), second=(0, 2, 3, 1, 4))


def _merge_heads(ctx, x, out_shape, batch_first, batched):
    """(1, N, H, L, head_dim) -> (L, N, E) / (N, L, E) / (L, E)."""
    order = (0, 1, 3, 2, 4) if batch_first or not batched else (3, 0, 1, 2, 4)
    return ctx.shuffle(x, out_shape, first=order)


def _linear(ctx, x, weight, bias, dtype):
    return add_bias(ctx, matmul(ctx, x, weight, dtype, transpose_b=True), bias, dtype)


def _split_packed(ctx, x, weight, bias, dtype, heads, batch_first, batched):
    """Self-attention's packed projection as one matrix multiply, split into q, k, v heads."""
    y = _linear(ctx, ctx.trt(x, dtype), weight, bias, dtype)
    shape = ctx.dims(x)
    rows = shape[:2] if batched else (shape[0], 1)
    order = (2, 0, 3, 1, 4) if batch_first and batched else (2, 1, 3, 0, 4)
    y5 = ctx.shuffle(y, rows + (3, heads, shape[-1] // heads), second=order)
    part = (1,) + ctx.dims(y5)[1:]
    return [ctx.slice(y5, (i, 0, 0, 0, 0), part) for i in range(3)]


def _mha(ctx, query, key, value, heads, proj, out_weight, out_bias, masks, need_weights, average, batch_first,
         out_shape, dtype, extra_kv=None, safe=False):
    """The multi-head attention core shared by the functional and the fused paths.

    ``proj`` is ("packed", weight, bias) or ("separate", (wq, wk, wv), (bq, bk, bv)); ``masks`` are
    attention-core masks already shaped to broadcast against (1, N, H, L, S). ``extra_kv`` holds
    (key, value) torch tensors of shape (n, E) appended to every batch's projected keys and values
    (add_bias_kv, add_zero_attn); the masks are padded to let them be attended.
    """
    batched = len(query.shape) == 3
    E = query.shape[-1]
    if proj[0] == "packed" and query is key and key is value:
        q, k, v = _split_packed(ctx, query, proj[1], proj[2], dtype, heads, batch_first, batched)
    else:
        weights, biases = proj[1], proj[2]
        if proj[0] == "packed":
            weights = proj[1].chunk(3) if isinstance(proj[1], torch.Tensor) else None
            biases = proj[2].chunk(3) if proj[2] is not None else (None, None, None)
            if weights is None:
                raise ConversionError("a traced in_proj_weight is not supported")
        q, k, v = (_heads(ctx, _linear(ctx, ctx.trt(x, dtype), w, b, dtype), ctx.dims(x)[:-1] + (E,), batch_first,
                          batched, heads) for x, w, b in zip((query, key, value), weights, biases))
    head_dim = E // heads
    if extra_kv is not None:
        n_extra = extra_kv[0].shape[0]
        k, v = (_append_keys(ctx, t, rows, heads, dtype) for t, rows in zip((k, v), extra_kv))
        masks = [(_append_keys(ctx, m, None, heads, m.dtype, n_extra), kind) for m, kind in masks]
    out, probs = attention(ctx, q, k, v, masks, 1.0 / math.sqrt(head_dim), dtype, probs_out=True, safe=safe)
    out = _merge_heads(ctx, out, tuple(out_shape[:-1]) + (E,), batch_first, batched)
    out = _linear(ctx, out, out_weight, out_bias, dtype)
    if not need_weights:
        return [out]
    _, N, _, L, S = tuple(probs.shape)
    if average:
        # axis 0 has size 1: averaging over it too drops it for free
        probs = ctx.network.add_reduce(probs, trt.ReduceOperation.AVG, 0b101, False).get_output(0)
    lead = ((N,) if batched else ()) + (() if average else (heads,))
    return [out, ctx.reshape(probs, lead + (L, S))]


def _append_keys(ctx, t, rows, heads, dtype, n=None):
    """(..., S, d) network tensor with ``rows`` ((n, E) split into heads; None: n zero columns of a mask)
    appended along S."""
    shape = tuple(t.shape)
    if rows is None:
        extra = torch.zeros(shape[:-1] + (n,))
    else:
        n = rows.shape[0]
        extra = rows.detach().reshape(n, heads, -1).permute(1, 0, 2).expand(shape[:2] + (heads, n, shape[-1]))
    layer = ctx.network.add_concatenation([t, ctx.constant(extra.contiguous(), dtype)])
    layer.axis = len(shape) - (2 if rows is not None else 1)
    return layer.get_output(0)


def _self_attention_in_channels(ctx, x, heads, in_weight, in_bias, out_weight, out_bias, batch_axis, causal, dtype):
    """Unmasked self-attention of ``x`` ((L, N, E) or (N, L, E), its batch on ``batch_axis``) kept in
    channel layout (see torch2x.layout): the packed projection is one 1x1 convolution (a layer norm's affine
    and the 1/sqrt(head_dim) scale folded into its weights), one shuffle splits heads, the attention is
    TensorRT's attention layer where it has one, one shuffle merges heads, the output projection is a
    second convolution. None when ``x`` cannot take the layout or a weight is computed in the forward pass."""
    if (x.dim() != 3 or any(ctx.is_traced(t) for t in (in_weight, in_bias, out_weight, out_bias))
            or dtype not in layout.FLOATS):
        return None
    ch = ctx.channels(x, enter=True, dtype=dtype)  # (a layer: only once nothing else can refuse)
    if ch is None:
        return None
    E = x.shape[-1]
    D = E // heads
    w = in_weight.detach().clone()
    b = in_bias.detach().clone() if in_bias is not None else w.new_zeros(3 * E)
    w[:E] /= math.sqrt(D)  # softmax(q k^T / sqrt(D)): the scale rides on the query projection
    b[:E] /= math.sqrt(D)
    qkv = convolve_channels(ctx, ch, w, b, dtype).itensor  # stored [s0, 3E, s2, 1]
    batch_first = ch.order.index(batch_axis) == 0
    dims = ctx.dims(x)
    B, L = dims[batch_axis], dims[1 - batch_axis]
    # [s0, 3E, s2, 1] -> [B, 3 * heads, L, D] (0 copies the two token dims)
    y = ctx.shuffle(qkv, (0, 0, 3 * heads, D), first=(0, 2, 1, 3),
                    second=(0, 2, 1, 3) if batch_first else (1, 2, 0, 3), copy_zeros=True)
    q, k, v = (ctx.slice(y, (0, i * heads, 0, 0), (B, heads, L, D)) for i in range(3))
    if flavour.HAS_ATTENTION_LAYER and not causal:  # (causal: leaner from plain layers, see _fused_attention)
        out = ctx._noted(flavour.add_attention(ctx.network, q, k, v).get_output(0), ctx.dims(q))
    else:
        out = attention(ctx, q, k, v, [(_causal(ctx, L, L, 4), KEEP)] if causal else [], 1.0, dtype)
    merge = ctx.shuffle(out, (0, E, -1, 1), first=(0, 1, 3, 2) if batch_first else (2, 1, 3, 0), copy_zeros=True)
    merged = ch.with_tensor(merge)
    ob = out_bias.detach() if out_bias is not None else w.new_zeros(E)
    return layout.note(ctx, convolve_channels(ctx, merged, out_weight.detach(), ob, dtype), dims)


def _mask_kind(mask):
    """Multi-head attention's masks: bool True = masked out, float = added to the scores."""
    return DROP if mask.dtype == torch.bool else ADD


@converter("torch.nn.functional.multi_head_attention_forward")
def multi_head_attention_forward(ctx, call):
    a = call.bound()
    if a["training"] and a["dropout_p"] > 0:
        raise ConversionError("multi_head_attention_forward with training=True and dropout: call the module in eval")
    if a["static_k"] is not None or a["static_v"] is not None:
        raise ConversionError("multi_head_attention_forward with static_k/static_v is not supported")
    query, key, value = a["query"], a["key"], a["value"]
    heads = a["num_heads"]
    dtype = ctx.dtype_for(call.output[0].dtype)
    attn_mask, kpm = a["attn_mask"], a["key_padding_mask"]
    plain = (query is key and key is value and not a["need_weights"] and not a["use_separate_proj_weight"]
             and a["bias_k"] is None and not a["add_zero_attn"] and kpm is None
             and (attn_mask is None or a["is_causal"]))
    if plain:
        kept = _self_attention_in_channels(ctx, query, heads, a["in_proj_weight"], a["in_proj_bias"],
                                           a["out_proj_weight"], a["out_proj_bias"], 1, a["is_causal"], dtype)
        if kept is not None:
            return [kept]
    batched = query.dim() == 3
    L, S = ctx.dims(query)[0], ctx.dims(key)[0]
    N = ctx.dims(query)[1] if batched else 1
    masks = []
    if a["is_causal"] and kpm is None and not a["need_weights"]:
        masks.append((_causal(ctx, L, S, 5), KEEP))  # torch then ignores attn_mask, the causal hint wins
    elif attn_mask is not None:
        m = ctx.trt(attn_mask)
        if attn_mask.dim() == 3:
            m = ctx.reshape(m, (1, N, heads, L, S))
        masks.append((m, _mask_kind(attn_mask)))
    if kpm is not None:
        masks.append((ctx.reshape(ctx.trt(kpm), (1, N, 1, 1, S)), _mask_kind(kpm)))
    if a["use_separate_proj_weight"]:
        b = a["in_proj_bias"]
        proj = ("separate", (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"]),
                b.chunk(3) if b is not None else (None, None, None))
    else:
        proj = ("packed", a["in_proj_weight"], a["in_proj_bias"])
    extra = []
    if a["bias_k"] is not None:
        extra.append((a["bias_k"].reshape(1, -1), a["bias_v"].reshape(1, -1)))
    if a["add_zero_attn"]:
        extra.append((torch.zeros(1, query.shape[-1]),) * 2)
    extra_kv = [torch.cat(t) for t in zip(*extra)] if extra else None
    return _mha(ctx, query, key, value, heads, proj, a["out_proj_weight"], a["out_proj_bias"], masks,
                a["need_weights"], a["average_attn_weights"], False, ctx.dims(query), dtype, extra_kv,
                safe=not a["need_weights"])  # torch computes that case with SDPA, whose softmax is safe


def _native_mask(ctx, mask, mask_type, N, heads, L, S):
    """nn.MultiheadAttention.merge_masks' result (type 1: key padding (N, S); 2: (N, H|1, L, S); 0: (L, S)).

    The fused kernels read any mask as boolean: a nonzero element (True, or -inf from a converted
    bool mask) masks the key out, whatever its value.
    """
    m = ctx.trt(mask)
    if mask.dtype != torch.bool:
        zero = ctx.constant(torch.zeros((1,) * mask.dim()), m.dtype)
        m = ctx.network.add_elementwise(m, zero, Op.EQUAL).get_output(0)
    kind = DROP if mask.dtype == torch.bool else KEEP
    if mask.dim() == 2 and mask_type == 1:
        return (ctx.reshape(m, (1, N, 1, 1, S)), kind)
    return (ctx.reshape(m, (1,) * (5 - mask.dim()) + tuple(mask.shape)), kind)


@converter("torch._native_multi_head_attention",
           signature="query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, "
                     "mask=None, need_weights=True, average_attn_weights=True, mask_type=None")
def native_multi_head_attention(ctx, call):
    a = call.bound()
    query, key = a["query"], a["key"]
    heads = a["num_head"]
    if a["mask"] is None and not a["need_weights"] and query is key and key is a["value"]:
        kept = _self_attention_in_channels(ctx, query, heads, a["qkv_weight"], a["qkv_bias"], a["proj_weight"],
                                           a["proj_bias"], 0, False, ctx.dtype_for(call.output[0].dtype))
        if kept is not None:
            return [kept]
    N, L = ctx.dims(query)[:2]
    S = ctx.dims(key)[1]
    masks = [] if a["mask"] is None else [_native_mask(ctx, a["mask"], a["mask_type"], N, heads, L, S)]
    dtype = ctx.dtype_for(call.output[0].dtype)
    return _mha(ctx, query, key, a["value"], heads, ("packed", a["qkv_weight"], a["qkv_bias"]), a["proj_weight"],
                a["proj_bias"], masks, a["need_weights"], a["average_attn_weights"], True,
                ctx.dims(query), dtype)


@converter("torch._nested_tensor_from_mask", signature="t, mask, mask_check=True")
def nested_tensor_from_mask(ctx, call):
    raise ConversionError("nn.TransformerEncoder in eval packs a padded batch into a nested tensor, whose layout "
                          "depends on the mask values; build it with enable_nested_tensor=False")


def _layer_norm(ctx, x, weight, bias, eps, dtype):
    """LayerNorm over the last dim, its statistics in float32."""
    rank = len(x.shape)
    shape = (1,) * (rank - 1) + (x.shape[-1],)
    scale, shift = (ctx.cast(ctx.trt_shaped(t, shape), F32) for t in (weight, bias))
    layer = ctx.network.add_normalization(ctx.cast(x, F32), scale, shift, 1 << (rank - 1))
    layer.epsilon = float(eps)
    return ctx.cast(layer.get_output(0), dtype)


@converter("torch._transformer_encoder_layer_fwd",
           signature="src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first, "
                     "eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, "
                     "ffn_weight_2, ffn_bias_2, mask=None, mask_type=None")
def transformer_encoder_layer_fwd(ctx, call):
    """nn.TransformerEncoderLayer's fused eval path (taken when no hook is attached to the layer)."""
    a = call.bound()
    src = a["src"]
    if src.is_nested:
        raise ConversionError("nested tensor input (see enable_nested_tensor)")
    dtype = ctx.dtype_for(call.output.dtype)
    N, L, E = src.shape
    heads = a["num_heads"]
    masks = [] if a["mask"] is None else [_native_mask(ctx, a["mask"], a["mask_type"], N, heads, L, L)]
    act = trt.ActivationType.GELU_ERF if a["use_gelu"] else trt.ActivationType.RELU

    def attend(x):
        return _mha(ctx, x, x, x, heads, ("packed", a["qkv_weight"], a["qkv_bias"]), a["proj_weight"],
                    a["proj_bias"], masks, False, False, True, (N, L, E), dtype)[0]

    def feed_forward(x):
        hidden = ctx.activation(_linear(ctx, x, a["ffn_weight_1"], a["ffn_bias_1"], dtype), act)
        return _linear(ctx, hidden, a["ffn_weight_2"], a["ffn_bias_2"], dtype)

    def norm(x, k):
        return _layer_norm(ctx, x, a[f"norm_weight_{k}"], a[f"norm_bias_{k}"], a["eps"], dtype)

    def add(x, y):
        return ctx.network.add_elementwise(x, y, Op.SUM).get_output(0)

    x = ctx.trt(src, dtype)
    if a["norm_first"]:
        x = add(x, attend(norm(x, 1)))
        return add(x, feed_forward(norm(x, 2)))
    x = norm(add(x, attend(x)), 1)
    return norm(add(x, feed_forward(x)), 2)
