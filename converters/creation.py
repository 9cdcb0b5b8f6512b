"""Tensors made from a traced tensor's shape and dtype (``*_like``, ``Tensor.new_*``, ``fill_``/``zero_``) or
values (``copy_``, ``torch.tensor``/``as_tensor``/``new_tensor`` of traced data).

Calls that create a tensor from Python values alone (``torch.zeros(3)``, ``torch.arange(n)``)
touch no traced tensor, so they never reach a converter: their result becomes a constant
where it is used. With dynamic shapes a size read from a dynamic dim is traced
(``torch.zeros(x.shape[0], 4)``, ``torch.arange(x.size(1))``), and such calls are converted
here. The other calls take a traced tensor, but (except for ``fill_`` with a traced value and
``copy_``) their values do not depend on its data: the result is a filled tensor of the
input's (or the requested) sizes, built by :func:`full`.
"""
from __future__ import annotations

import torch

from torch2x.context import ConversionError
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.tracer import leaves
from torch2x.shapes import is_traced


def full(ctx, shape, value, dtype) -> trt.ITensor:  # noqa: F821
    """A tensor of ``shape`` holding ``value`` (a Python scalar or a one-element tensor) everywhere.

    Example: ``full(ctx, (2, 3), 1.5, torch.float32)`` is ``torch.full((2, 3), 1.5)``.

    A rank-0 constant broadcast by a stride-0 slice: no weights of the full size. Every fill
    of this family goes through here, so shapes read from the network (dynamic shapes) only
    change this function.
    """
    return ctx.expand(ctx.reshape(ctx.trt(value, dtype), ()), tuple(shape))


def _sizes_asked(ctx, call):
    """The sizes a creation call makes: its ``size`` argument(s) as given (traced sizes follow dynamic
    dims), a ``*_like`` input's, or the example's."""
    args = call.args[1:] if call.name.startswith("torch.Tensor.new_") else call.args
    if call.name in ("torch.Tensor.new_full", "torch.full"):
        args = args[:1]  # then fill_value
    if "size" in call.kwargs:
        args = (call.kwargs["size"],)
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    if call.name.endswith("_like") or call.name in ("torch.Tensor.zero_", "torch.zero_", "torch.Tensor.fill_",
                                                    "torch.fill_", "torch.fill"):
        return ctx.dims(call.args[0]) if ctx.is_traced(call.args[0]) else tuple(call.output.shape)
    if args and all(isinstance(a, int) for a in args):
        return tuple(args)
    return tuple(call.output.shape)


def _filled(value):
    def convert(ctx, call):
        out = call.output
        fill = value if value is not None else call.arg("fill_value")
        return full(ctx, _sizes_asked(ctx, call), fill, out.dtype)

    return convert


_LIKE_SIG = "input, *args, **kwargs"
converter("torch.zeros_like", "torch.empty_like", signature=_LIKE_SIG)(_filled(0))
converter("torch.ones_like", signature=_LIKE_SIG)(_filled(1))
converter("torch.full_like", signature="input, fill_value, *args, **kwargs")(_filled(None))
# An empty tensor's contents are unspecified: zeros are as good as any, and deterministic.
converter("torch.Tensor.new_zeros", "torch.Tensor.new_empty", signature=_LIKE_SIG)(_filled(0))
converter("torch.Tensor.new_ones", signature=_LIKE_SIG)(_filled(1))
converter("torch.Tensor.new_full", signature="input, size, fill_value, *args, **kwargs")(_filled(None))
converter("torch.Tensor.zero_", "torch.zero_", signature="input")(_filled(0))
# reached only with a traced size (dynamic shapes); fixed sizes make constants
converter("torch.zeros", "torch.empty", signature="*size, **kwargs")(_filled(0))
converter("torch.ones", signature="*size, **kwargs")(_filled(1))
converter("torch.full", signature="size, fill_value, **kwargs")(_filled(None))


@converter("torch.arange", signature="*args, **kwargs")
def arange(ctx, call):
    """``torch.arange`` with a traced bound (dynamic shapes): a fill layer of the traced length."""
    bounds = dict(zip(("start", "end", "step") if len(call.args) > 1 else ("end",), call.args))
    bounds.update({k: call.kwargs[k] for k in ("start", "end", "step") if k in call.kwargs})
    start, end, step = bounds.get("start", 0), bounds["end"], bounds.get("step", 1)
    if not all(isinstance(v, int) for v in (start, end, step)) or step <= 0:
        raise ConversionError("arange with a traced bound takes int bounds and a positive step")
    values = ctx.arange((end - start + (step - 1)) // step)
    if step != 1:
        values = ctx.elementwise(values, step, trt.ElementWiseOperation.PROD)
    if not (isinstance(start, int) and not is_traced(start) and start == 0):
        values = ctx.elementwise(values, start, trt.ElementWiseOperation.SUM)
    return ctx.cast(values, ctx.dtype_for(call.output.dtype))


@converter("torch.Tensor.fill_", "torch.fill_", "torch.fill", signature="input, value")
def fill_(ctx, call):
    value = call.arg("value")
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ConversionError(f"{call.op} with a {value.dim()}-d value: PyTorch fills with one value only")
    return full(ctx, _sizes_asked(ctx, call), value, call.output.dtype)


def _from_data(ctx, call, data):
    """``data`` as a network tensor of the call's output: a traced tensor is copied (and cast);
    data without traced values is the real output, a constant."""
    out = call.output
    dtype = ctx.dtype_for(out.dtype)
    if ctx.is_traced(data):
        return ctx.trt(data, dtype)
    if isinstance(data, (list, tuple)) and any(ctx.is_traced(v) for v in leaves(data)):
        raise ConversionError(f"{call.op} of a list holding traced tensors: build it with torch.stack")
    return ctx.constant(out, dtype)


@converter("torch.Tensor.new_tensor", signature="input, data, *args, **kwargs")
def new_tensor(ctx, call):
    return _from_data(ctx, call, call.arg("data"))


@converter("torch.tensor", "torch.as_tensor", "torch.asarray", signature="data, *args, **kwargs")
def tensor(ctx, call):
    return _from_data(ctx, call, call.arg("data"))


@converter("torch.Tensor.copy_", signature="input, src, non_blocking=False")
def copy_(ctx, call):
    return ctx.expand(ctx.trt(call.arg("src"), call.output.dtype), tuple(call.output.shape))


@converter("torch.rand_like", "torch.randn_like", "torch.randint_like", "torch.Tensor.uniform_",
           "torch.Tensor.normal_", "torch.Tensor.bernoulli_", "torch.bernoulli", "torch.Tensor.bernoulli",
           "torch.Tensor.random_", "torch.Tensor.exponential_", "torch.normal", "torch.multinomial",
           "torch.Tensor.multinomial", signature=_LIKE_SIG)
def random(ctx, call):
    raise ConversionError(f"{call.op} draws random values, which an engine cannot reproduce; make them an input "
                          "of the model or a buffer")
