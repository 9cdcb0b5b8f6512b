"""Networks we did not build: export a PyTorch model to ONNX and let NVIDIA's parser build the network."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import torch

from torch2x.flavour import create_network, trt

_LOGGER = trt.Logger(trt.Logger.ERROR)


@dataclass
class ParsedNetwork:
    """The network plus the builder and parser that own it (they must outlive the network)."""

    builder: trt.Builder
    parser: trt.OnnxParser
    network: trt.INetworkDefinition
    input_name: str
    output_name: str


def onnx_network(model: torch.nn.Module, example: torch.Tensor, dynamo: bool = False, opset: int = 17) -> ParsedNetwork:
    """``model`` exported with ``torch.onnx.export`` and parsed by ``trt.OnnxParser``.

    Example::

        parsed = onnx_network(torchvision.models.resnet18().eval(), torch.randn(1, 3, 64, 64))
        out = interpret(parsed.network, {parsed.input_name: x})[parsed.output_name]
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        kwargs = dict(input_names=["input"], output_names=["output"], opset_version=opset, dynamo=dynamo)
        if not dynamo:
            kwargs["do_constant_folding"] = True
        with torch.no_grad():
            torch.onnx.export(model, (example,), path, **kwargs)
        return parse_onnx_file(path)


def parse_onnx_file(path: str) -> ParsedNetwork:
    """An ONNX file (hand-made or exported) parsed by ``trt.OnnxParser`` into a strongly typed network."""
    builder = trt.Builder(_LOGGER)
    network = create_network(builder)
    parser = trt.OnnxParser(network, _LOGGER)
    # parse_from_file also finds weights the exporter wrote as external data next to the model.
    if not parser.parse_from_file(path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected the model: {errors}")
    return ParsedNetwork(builder, parser, network, network.get_input(0).name, network.get_output(0).name)
