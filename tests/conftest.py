"""Shared fixtures: a fresh strongly typed network on the installed TensorRT flavour."""
from __future__ import annotations

import pytest
import torch

from torch2x.flavour import create_network, trt

_LOGGER = trt.Logger(trt.Logger.ERROR)


class FreshNetwork:
    """A builder and an empty strongly typed network; ``build()`` returns the serialized engine."""

    def __init__(self):
        self.builder = trt.Builder(_LOGGER)
        self.network = create_network(self.builder)

    def build(self) -> bytes:
        config = self.builder.create_builder_config()
        plan = self.builder.build_serialized_network(self.network, config)
        assert plan is not None, "TensorRT refused to build the network"
        return bytes(plan)


@pytest.fixture
def fresh():
    return FreshNetwork()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
