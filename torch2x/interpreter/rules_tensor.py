"""Rules for data movement and arithmetic layers (constant, identity, cast, elementwise, shuffle, ...)."""
from __future__ import annotations

import torch

from ..dtypes import to_torch
from ..flavour import trt
from .core import rule

LT = trt.LayerType


@rule(LT.CONSTANT)
def constant(layer, inputs, env):
    return env.cached(layer, "weights", lambda: torch.from_numpy(layer.weights.copy()).reshape(tuple(layer.shape)).to(env.device))


@rule(LT.IDENTITY)
def identity(layer, inputs, env):
    return inputs[0]


@rule(LT.CAST)
def cast(layer, inputs, env):
    return inputs[0].to(to_torch(layer.to_type))
