"""Nested inputs/outputs as plain-value specs, so TRTModule can rebuild them after torch.load."""
from __future__ import annotations

from typing import Any

import torch


def flatten(value: Any) -> tuple[list, Any]:
    """``(tensors, spec)``: the tensor leaves in order and a spec of plain lists, strings and numbers.

    Non-tensor leaves (ints, floats, strings, None) are kept in the spec as constants.
    """
    tensors: list = []

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            tensors.append(v)
            return ["tensor", len(tensors) - 1]
        if isinstance(v, tuple):
            return ["tuple", [walk(x) for x in v]]
        if isinstance(v, list):
            return ["list", [walk(x) for x in v]]
        if isinstance(v, dict):
            return ["dict", [[k, walk(x)] for k, x in v.items()]]
        if v is None or isinstance(v, (bool, int, float, str)):
            return ["const", v]
        raise TypeError(f"torch2x handles tensors in nested tuples, lists and dicts; got {type(v).__name__}")

    return tensors, walk(value)


def unflatten(spec: Any, tensors: list) -> Any:
    """The inverse of :func:`flatten`."""
    kind, body = spec
    if kind == "tensor":
        return tensors[body]
    if kind == "tuple":
        return tuple(unflatten(s, tensors) for s in body)
    if kind == "list":
        return [unflatten(s, tensors) for s in body]
    if kind == "dict":
        return {k: unflatten(s, tensors) for k, s in body}
    return body
