"""Arithmetic and comparison ops, with PyTorch's type promotion read off the real call."""
from __future__ import annotations

import torch

from torch2x.flavour import trt
from torch2x.registry import converter

Op = trt.ElementWiseOperation


def _arith(op, reflected=False):
    def convert(ctx, call):
        a, b = call.arg("input"), call.arg("other")
        if reflected:
            a, b = b, a
        alpha = call.arg("alpha", 1)
        if alpha != 1:
            b = ctx.elementwise(b, alpha, Op.PROD, ctx.dtype_for(call.output.dtype))
        return ctx.elementwise(a, b, op, ctx.dtype_for(call.output.dtype))

    return convert


for _op, _names in (
    (Op.SUM, ("add", "__add__", "__iadd__", "add_")),
    (Op.SUB, ("sub", "subtract", "__sub__", "__isub__", "sub_")),
):
    converter(*[f"torch.Tensor.{n}" for n in _names], "torch." + _names[0],
              signature="input, other, *, alpha=1, out=None")(_arith(_op))
converter("torch.Tensor.__radd__", signature="input, other")(_arith(Op.SUM, reflected=True))
converter("torch.Tensor.__rsub__", "torch.rsub", signature="input, other, *, alpha=1")(_arith(Op.SUB, reflected=True))
converter("torch.Tensor.mul", "torch.Tensor.__mul__", "torch.Tensor.__imul__", "torch.Tensor.mul_", "torch.mul",
          "torch.multiply", "torch.Tensor.multiply", signature="input, other, *, out=None")(_arith(Op.PROD))
converter("torch.Tensor.__rmul__", signature="input, other")(_arith(Op.PROD, reflected=True))
