"""The one table between torch dtypes and TensorRT data types."""
from __future__ import annotations

import torch

from .flavour import trt

TORCH_FROM_TRT: dict = {
    trt.DataType.FLOAT: torch.float32,
    trt.DataType.HALF: torch.float16,
    trt.DataType.BF16: torch.bfloat16,
    trt.DataType.INT8: torch.int8,
    trt.DataType.INT32: torch.int32,
    trt.DataType.INT64: torch.int64,
    trt.DataType.BOOL: torch.bool,
    trt.DataType.UINT8: torch.uint8,
}
if hasattr(trt.DataType, "FP8") and hasattr(torch, "float8_e4m3fn"):
    TORCH_FROM_TRT[trt.DataType.FP8] = torch.float8_e4m3fn
TRT_FROM_TORCH: dict = {v: k for k, v in TORCH_FROM_TRT.items()}


def to_torch(dtype: trt.DataType) -> torch.dtype:
    """``trt.DataType.HALF`` -> ``torch.float16``; a clear error for types torch cannot hold."""
    try:
        return TORCH_FROM_TRT[dtype]
    except KeyError:
        raise TypeError(f"TensorRT data type {dtype} has no torch equivalent") from None


def network_type(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype a network holds values of ``dtype`` in: float64 has no TensorRT type and computes in
    float32 (as Torch-TensorRT's ``truncate_double``); every other dtype is itself."""
    return torch.float32 if dtype == torch.float64 else dtype


FLOAT64_NOTE = "computes float64 in float32 (TensorRT has no float64)"


def to_trt(dtype: torch.dtype) -> trt.DataType:
    """``torch.float16`` -> ``trt.DataType.HALF``; float64 is not a TensorRT type, so callers narrow it first
    (:func:`network_type`)."""
    try:
        return TRT_FROM_TORCH[dtype]
    except KeyError:
        raise TypeError(f"torch dtype {dtype} has no TensorRT equivalent") from None
