"""Channel layout: a torch tensor of shape (..., C) held in the network as [N, C, ...].

Transformers and channels-last CNN blocks apply linear layers to every position of a (..., C) tensor.
A TensorRT convolution holds its weights inside the layer, so a linear layer as a 1x1 convolution is one
layer instead of four (weight constant, matrix multiply, bias constant, add), but a convolution reads its
channels on axis 1. A value in channel layout is the network tensor ``stored``:

    stored = canonical.permute(order), padded with trailing size-1 dims to rank 4

where ``order[1]`` is the canonical last dim (the channels), and optionally a pending per-channel affine
(a layer norm's weight and bias: the value is ``stored * scale + shift``), which the next linear layer
folds into its weights. Converters that understand the layout (linear, layer norm, pointwise ops,
permutes that keep the last dim, concatenation and multi-head attention) keep values in it; any other
reader gets the canonical tensor from ``ctx.trt`` / ``ctx.lookup``, made once per value: one shuffle
layer, plus one scale layer for a pending affine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from collections.abc import Sequence

import torch

from .flavour import trt

FLOATS = (trt.DataType.FLOAT, trt.DataType.HALF)  # convolution weights are numpy arrays: no bfloat16


@dataclass(frozen=True)
class Channels:
    """A value in channel layout (see the module docstring). ``scale``/``shift`` are float64 [C] or None."""

    itensor: Any
    order: tuple
    scale: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None

    @property
    def rank(self) -> int:
        """The canonical (torch) rank."""
        return len(self.order)

    @property
    def affine(self) -> bool:
        return self.scale is not None or self.shift is not None

    def with_tensor(self, itensor: Any) -> Channels:
        """The same layout over another stored tensor, without the pending affine."""
        return Channels(itensor, self.order)

    def canonical_shape(self) -> tuple:
        """The canonical (torch-order) shape, read off the stored tensor (-1 for dynamic dims)."""
        shape = tuple(self.itensor.shape)
        return tuple(shape[self.order.index(axis)] for axis in range(self.rank))

    def stored_sizes(self, canonical: Sequence[Any]) -> tuple:
        """Canonical sizes (ints or traced) rearranged into the stored layout."""
        return tuple(canonical[o] for o in self.order) + (1,) * (stored_rank(self.rank) - self.rank)


@dataclass(frozen=True, eq=False)
class StoredView:
    """A module output held in channel layout, as a check reads it: the stored tensor's name, and how to
    turn its value back into the torch tensor."""

    name: str
    order: tuple
    scale: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None

    @staticmethod
    def of(ch: Channels) -> StoredView:
        return StoredView(ch.itensor.name, ch.order, ch.scale, ch.shift)

    def canonical(self, stored: torch.Tensor) -> torch.Tensor:
        """The torch-layout value of the stored tensor's value ``stored``."""
        rank = len(self.order)
        value = stored.reshape(stored.shape[:rank]).permute(inverse(self.order))
        if self.scale is not None:
            value = value * self.scale.to(value.device, value.dtype)
        if self.shift is not None:
            value = value + self.shift.to(value.device, value.dtype)
        return value


def stored_rank(rank: int) -> int:
    return max(4, rank)


def standard_order(rank: int) -> tuple:
    """(0, C, 1, 2, ...): the batch dim first, the channels second, the other dims in their order."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def inverse(order: Sequence[int]) -> tuple:
    out = [0] * len(order)
    for i, o in enumerate(order):
        out[o] = i
    return tuple(out)


def can_hold(tensor: torch.Tensor, itensor: Any) -> bool:
    """Whether a value fits the layout: a float tensor of rank 2 to 5 with static channels (last dim)."""
    return (tensor.is_floating_point() and 2 <= tensor.dim() <= 5 and itensor.dtype in FLOATS
            and itensor.shape[-1] > 0)


def enter(ctx: Any, tensor: torch.Tensor, itensor: Any) -> Channels:
    """``tensor`` (network value ``itensor``) in the standard channel layout: one shuffle layer."""
    rank = tensor.dim()
    order = standard_order(rank)
    pad = (0,) * rank + (1,) * (4 - rank) if rank < 4 else None
    return Channels(ctx.shuffle(itensor, pad, first=order, copy_zeros=True), order)


def materialize(ctx: Any, tensor: torch.Tensor, ch: Channels) -> Any:
    """The canonical network tensor of a value in channel layout (its pending affine applied)."""
    return unpermuted(ctx, ch, range(ch.rank))


def unpermuted(ctx: Any, ch: Channels, perm: Sequence[int]) -> Any:
    """``canonical.permute(perm)`` of a value in channel layout as a plain network tensor: one shuffle of
    the stored tensor (none when that is already the result: NHWC values permuted back to NCHW)."""
    stored = apply_affine(ctx, ch).itensor
    rank = ch.rank
    order = tuple(ch.order.index(int(p) % rank) for p in perm)
    if rank >= 4 and order == tuple(range(rank)):
        return stored
    return ctx.shuffle(stored, (0,) * rank if rank < 4 else None, second=order, copy_zeros=True)


def apply_affine(ctx: Any, ch: Channels) -> Channels:
    """``ch`` with its pending per-channel affine computed: one scale layer (weights inside the layer)."""
    if not ch.affine:
        return ch
    dtype = ch.itensor.dtype
    channels = ch.itensor.shape[1]
    scale = ch.scale if ch.scale is not None else torch.ones(channels, dtype=torch.float64)
    shift = ch.shift if ch.shift is not None else torch.zeros(channels, dtype=torch.float64)
    layer = ctx.network.add_scale_nd(ch.itensor, trt.ScaleMode.CHANNEL, ctx.weights(shift, dtype),
                                     ctx.weights(scale, dtype), trt.Weights(dtype), 1)
    out = ch.with_tensor(layer.get_output(0))
    note(ctx, out, None, like=ch)
    return out


def note(ctx: Any, ch: Channels, canonical: Optional[Sequence[Any]], like: Optional[Channels] = None) -> Channels:
    """Remember the example's sizes of a stored tensor with dynamic dims (``ctx.dims`` reads them)."""
    if like is not None:
        ctx._noted(ch.itensor, ctx.dims(like.itensor))
    elif canonical is not None:
        ctx._noted(ch.itensor, tuple(int(s) for s in ch.stored_sizes(canonical)))
    return ch


def cast(ctx: Any, ch: Channels, dtype: Any) -> Channels:
    """``ch`` in network type ``dtype`` (the pending affine stays pending)."""
    if ch.itensor.dtype == dtype:
        return ch
    return Channels(ctx.cast(ch.itensor, dtype), ch.order, ch.scale, ch.shift)


def constant_like(ctx: Any, value: torch.Tensor, ch: Channels, dtype: Any) -> Any:
    """An untraced tensor that broadcasts against ``ch``'s canonical shape, as a constant in its layout
    (made once per tensor, layout and type)."""
    number = value.dim() == 0 and not ctx.weight_names.get(id(value))
    key = ("channels", float(value) if number else id(value), ch.order, dtype)
    entry = ctx._constants.get(key)
    if entry is not None and (number or entry[0] is value):
        return entry[1]
    shaped = value.detach().reshape((1,) * (ch.rank - value.dim()) + tuple(value.shape)).permute(ch.order)
    itensor = ctx.constant(shaped.reshape(tuple(shaped.shape) + (1,) * (stored_rank(ch.rank) - ch.rank)), dtype)
    ctx._constants[key] = (value, itensor)
    return itensor


def operands_like(ctx: Any, values: Sequence[Any], dtype: Any) -> Optional[tuple]:
    """(stored tensors, layout) for ``values`` that one op can combine in channel layout: at least one
    is in it, the others in the same order, traced tensors of the same rank (entered when the layout is
    the standard one), untraced tensors (constants in that layout) or Python numbers. Pending affines are
    applied. None when they cannot."""
    if dtype not in FLOATS:
        return None
    held = [ctx.channels(v, dtype=dtype) for v in values]
    ref = next((c for c in held if c is not None), None)
    if ref is None:
        return None
    out = []
    for value, ch in zip(values, held):
        if ch is None and isinstance(value, torch.Tensor) and ctx.has(value):
            if value.dim() != ref.rank or ref.order != standard_order(ref.rank):
                return None
            ch = ctx.channels(value, enter=True, dtype=dtype)
            if ch is None:
                return None
        if ch is not None:
            if ch.order != ref.order:
                return None
            out.append(apply_affine(ctx, ch).itensor)
        elif isinstance(value, torch.Tensor):
            if value.dim() > ref.rank:
                return None
            out.append(constant_like(ctx, value, ref, dtype))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(constant_like(ctx, torch.tensor(float(value)), ref, dtype))
        else:
            return None
    return out, ref.with_tensor(None)


def binary(ctx: Any, a: Any, b: Any, op: Any, dtype: Any, out_shape: Sequence[int]) -> Optional[Channels]:
    """``a op b`` (elementwise, in ``dtype``) kept in channel layout when an operand is in it and the other
    is too (same order), a traced tensor of the same rank, an untraced tensor or a Python number.
    None when the op should run on canonical tensors."""
    combined = operands_like(ctx, (a, b), dtype)
    if combined is None:
        return None
    operands, ref = combined
    out = ctx.network.add_elementwise(*ctx.broadcast(*operands), op).get_output(0)
    return note(ctx, ref.with_tensor(out), tuple(out_shape))


def reshaped(ctx: Any, value: torch.Tensor, shape: Sequence[Any], example: tuple) -> Optional[Channels]:
    """``value.reshape(shape)`` kept in channel layout when ``value`` is in it and the channels stay the last
    dim: one shuffle from the stored tensor into the standard layout of the new shape (as many layers as the
    plain reshape, without making ``value`` plain first). None otherwise."""
    ch = ctx.held(value)
    if (ch is None or not ctx.layouts or not 2 <= len(shape) <= 5 or -1 in tuple(shape)[-1:]
            or int(shape[-1]) != value.shape[-1] or tuple(shape) == tuple(value.shape)):
        return None
    rank, new = ch.rank, len(shape)
    pads = stored_rank(new) - new  # the padding dims ride at the end until the final transpose
    to_canonical = tuple(ch.order.index(i) for i in range(rank)) + tuple(range(rank, stored_rank(rank)))
    stored = ctx.shuffle(ch.itensor, tuple(shape) + (1,) * pads, first=to_canonical,
                         second=standard_order(new) + tuple(range(new, new + pads)))
    out = Channels(stored, standard_order(new), ch.scale, ch.shift)
    return note(ctx, out, example)


def permuted(ch: Channels, perm: Sequence[int]) -> Optional[Channels]:
    """The layout of ``canonical.permute(perm)`` when the permutation keeps the channels last: the same
    stored tensor with another order (no layer). None when the channels move."""
    perm = tuple(int(p) % ch.rank for p in perm)
    if perm[-1] != ch.rank - 1:
        return None
    back = inverse(perm)
    return Channels(ch.itensor, tuple(back[o] for o in ch.order), ch.scale, ch.shift)


def unit_affine(ctx: Any, channels: int, rank: int, dtype: Any) -> tuple:
    """Ones and zeros of shape [1, C, 1, ...] (a normalization layer's scale and bias when the real ones
    stay pending), made once per network."""
    key = ("unit affine", channels, rank, dtype)
    if key not in ctx._constants:
        shape = (1, channels) + (1,) * (rank - 2)
        ctx._constants[key] = (None, (ctx.constant(torch.ones(shape), dtype), ctx.constant(torch.zeros(shape), dtype)))
    return ctx._constants[key][1]


def may_enter(ctx: Any, value: torch.Tensor) -> bool:
    """Whether a linear layer or layer norm may bring ``value`` into channel layout. Not a token sequence
    (rank 3 or less) of a text model (``token_model``): there the projections are matrix multiplies
    TensorRT merges (sibling query, key and value projections into one GEMM) and whose heads it reads in
    place, which it does not do for 1x1 convolutions. Same builder, kernels / MB moved, in channel layout
    and out of it: BERT-base 194/681.5 and 157/671.1 (the ONNX route: 157/671.9), GPT-2 218 and 169
    kernels. Vision transformers and channels-last CNN blocks keep the layout (ViT-B/16
    185 kernels in it, 197 out of it; Swin-T 213 and 225; ConvNeXt-T 84 and 100)."""
    return value.dim() > 3 or not ctx.token_model


def token_model(module: Any) -> bool:
    """A text model: token embeddings (``nn.Embedding``), or separate query, key and value ``nn.Linear``
    projections (three or more sibling linear layers of one input width)."""
    if not isinstance(module, torch.nn.Module):
        return False
    for parent in module.modules():
        if isinstance(parent, torch.nn.Embedding):
            return True
        widths = [child.in_features for child in parent.children() if isinstance(child, torch.nn.Linear)]
        if any(widths.count(w) >= 3 for w in widths):
            return True
    return False
