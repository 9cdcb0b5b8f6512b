"""Rules for the fused attention layer (``IAttention``).

An ``IAttention`` shows up in the network as two boundary layers (checked on TensorRT-RTX 1.7):

* ``ATTENTION_INPUT`` (``IAttentionInputLayer``) reads every tensor of the attention: input 0 query,
  1 key, 2 value, 3 mask, 4 normalization quantize scale, 5 query lengths, 6 key/value lengths
  (``None`` when unset; ``num_inputs`` may end before the optional ones). Its one output has the query's shape
  and type and feeds only the output boundary.
* ``ATTENTION_OUTPUT`` (``IAttentionOutputLayer``) reads that tensor; its output is the attention's
  output (``attention.get_output(0)``).

Only the input boundary sees query, key and value, so its rule computes the whole attention and the
output boundary passes it on. The interpreter's value of the tensor between them (``capture``) is
therefore the attention result, a tensor TensorRT itself never materializes.

Semantics (TensorRT's Attention operator): ``scores = query @ key^T`` (no ``1/sqrt(D)`` scale), a float
mask is added to the scores, a bool mask keeps the positions where it is True, causal ``UPPER_LEFT``
lets query ``i`` see keys ``0..i``, ``LOWER_RIGHT`` keys ``0..i + Skv - Sq``; softmax over the keys;
``@ value``. Key/value heads are shared by ``Hq / Hkv`` consecutive query heads (grouped-query
attention). A row whose keys are all masked out comes out NaN (softmax of only ``-inf``); TensorRT
does not document that case.
"""
from __future__ import annotations

import torch

from ..flavour import trt
from .core import UnsupportedLayerError, rule

LT = trt.LayerType
_MASK, _QUANT_SCALE, _QUERY_LENGTHS, _KV_LENGTHS = 3, 4, 5, 6


def _config(layer) -> tuple:
    """(softmax?, causal kind name or None) of the layer's attention; refuses the settings the rule cannot run."""
    att = layer.attention
    forms = [getattr(att, name, None) for name in ("query_form", "key_value_form")]
    if any(f is not None and f != trt.AttentionIOForm.PADDED_BHND for f in forms):
        raise UnsupportedLayerError(layer, f"packed attention layouts ({forms[0]}, {forms[1]})")
    if getattr(att, "num_ranks", 1) != 1:
        raise UnsupportedLayerError(layer, f"multi-device attention (num_ranks={att.num_ranks})")
    if att.norm_op == trt.AttentionNormalizationOp.SOFTMAX:
        softmax = True
    elif att.norm_op == trt.AttentionNormalizationOp.NONE:
        softmax = False
    else:
        raise UnsupportedLayerError(layer, f"normalization {att.norm_op}")
    kind = getattr(att, "causal_kind", None)  # TensorRT 10.x: only the causal flag, which is UPPER_LEFT
    if kind is None:
        name = "UPPER_LEFT" if att.causal else None
    else:
        name = None if kind == trt.CausalMaskKind.NONE else kind.name
        if name not in (None, "UPPER_LEFT", "LOWER_RIGHT"):
            raise UnsupportedLayerError(layer, f"causal mask kind {kind}")
    return softmax, name


def _optional(inputs: list, index: int):
    return inputs[index] if len(inputs) > index else None


def attention_input(layer, inputs, env):
    softmax, causal = env.cached(layer, "attention", lambda: _config(layer))
    # normalization_quantize_to_type is not read: reading it while unset logs a TensorRT error.
    if _optional(inputs, _QUANT_SCALE) is not None:
        raise UnsupportedLayerError(layer, "quantized attention normalization (normalization_quantize_scale)")
    if _optional(inputs, _QUERY_LENGTHS) is not None or _optional(inputs, _KV_LENGTHS) is not None:
        raise UnsupportedLayerError(layer, "attention with query_lengths / key_value_lengths")
    q, k, v, mask = inputs[0], inputs[1], inputs[2], _optional(inputs, _MASK)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        shapes = ", ".join(str(tuple(t.shape)) for t in (q, k, v))
        raise ValueError(f"attention needs 4-d query/key/value, got {shapes}")
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    hq, hkv = q.shape[1], k.shape[1]
    if hq % hkv:
        raise ValueError(f"{hq} query heads are not a multiple of {hkv} key/value heads")
    if hq != hkv:
        k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
    scores = q @ k.transpose(-2, -1)
    sq, skv = scores.shape[-2], scores.shape[-1]
    if mask is not None and mask.dtype == torch.bool:
        if not softmax:
            raise UnsupportedLayerError(layer, "a bool mask without softmax normalization (undocumented)")
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(dtype)
    if causal is not None:
        if not softmax:
            raise UnsupportedLayerError(layer, "a causal mask without softmax normalization (undocumented)")
        diagonal = 0 if causal == "UPPER_LEFT" else skv - sq
        allowed = torch.ones(sq, skv, dtype=torch.bool, device=scores.device).tril(diagonal)
        scores = scores.masked_fill(~allowed, float("-inf"))
    if softmax:
        scores = torch.softmax(scores, dim=-1)
    return scores @ v


def attention_output(layer, inputs, env):
    return inputs[0]


if hasattr(LT, "ATTENTION_INPUT"):  # TensorRT 10.14+ and TensorRT-RTX
    rule(LT.ATTENTION_INPUT)(attention_input)
    rule(LT.ATTENTION_OUTPUT)(attention_output)
