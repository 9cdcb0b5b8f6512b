"""The precision policy: which network type each op computes in.

Networks are strongly typed, so reduced precision is the network's own types:
float activations and weights in float16/bfloat16, with ops that lose too much in
reduced precision (softmax, normalization statistics, large reductions, exp/log/pow,
anything listed in ``keep_fp32``) kept in float32 with casts around them.
"""
from __future__ import annotations

from typing import Optional
from collections.abc import Iterable

import torch

from .flavour import trt


class PrecisionPolicy:
    """``PrecisionPolicy(fp16=True, keep_fp32=["head", "softmax"])``.

    ``keep_fp32`` holds module paths (a path keeps its whole subtree) and op names
    (``softmax``, ``torch.nn.functional.softmax``).
    """

    def __init__(self, fp16: bool = False, bf16: bool = False, keep_fp32: Optional[Iterable[str]] = None):
        if fp16 and bf16:
            raise ValueError("choose one of fp16=True and bf16=True")
        self.fp16 = fp16
        self.bf16 = bf16
        self.keep_fp32 = tuple(keep_fp32 or ())

    @property
    def reduced(self) -> bool:
        return self.fp16 or self.bf16

    def float_type(self, dtype: torch.dtype) -> trt.DataType:
        """The network type for torch floating values (float64 has no TensorRT type: float32)."""
        if dtype == torch.float16:
            return trt.DataType.HALF
        if dtype == torch.bfloat16:
            return trt.DataType.BF16
        if self.fp16:
            return trt.DataType.HALF
        if self.bf16:
            return trt.DataType.BF16
        return trt.DataType.FLOAT

    def runs_in_fp32(self, op_name: str, module_path: str, converter_wants_fp32: bool) -> bool:
        """Whether this call computes in float32 although the network is reduced precision."""
        if not self.reduced:
            return False
        if converter_wants_fp32:
            return True
        short = op_name.rsplit(".", 1)[-1]
        for keep in self.keep_fp32:
            if keep in (op_name, short):
                return True
            if module_path == keep or module_path.startswith(keep + "."):
                return True
        return False
