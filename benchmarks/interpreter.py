"""Interpreter speed against PyTorch eager, on networks from the ONNX route.

    python benchmarks/interpreter.py [--repeat 5] [--models resnet50 vit_b_16] [--profile]

Prints, per model, the median time of one batch-1 forward in PyTorch eager and in the network
interpreter (after one warm-up run that reads weights back from TensorRT), and their ratio.
The target is a ratio of at most 3.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from onnx_util import onnx_network  # noqa: E402

from torch2x.interpreter import Interpreter  # noqa: E402

MODELS = {
    "resnet50": (torchvision.models.resnet50, (1, 3, 224, 224), False),
    "vit_b_16": (torchvision.models.vit_b_16, (1, 3, 224, 224), True),
    # Not run by default: 16,653 small layers, so it measures the per-layer overhead.
    "swin_t": (torchvision.models.swin_t, (1, 3, 224, 224), False),
}
DEFAULT = ["resnet50", "vit_b_16"]


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=DEFAULT, choices=list(MODELS))
    parser.add_argument("--profile", action="store_true", help="cProfile one interpreter run")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name in args.models:
        factory, shape, dynamo = MODELS[name]
        model = factory().eval()
        x = torch.randn(shape)
        parsed = onnx_network(model, x, dynamo=dynamo, opset=18 if dynamo else 17)
        interpreter = Interpreter(parsed.network)
        feeds = {parsed.input_name: x}
        with torch.no_grad():
            model(x)
            interpreter(feeds)  # warm-up: weights are read back from TensorRT once
            eager = _median_time(functools.partial(model, x), args.repeat)
            interp = _median_time(functools.partial(interpreter, feeds), args.repeat)
        print(f"{name}: {parsed.network.num_layers} layers, eager {eager * 1e3:.1f} ms, "
              f"interpreter {interp * 1e3:.1f} ms, ratio {interp / eager:.2f}x", flush=True)
        if args.profile:
            import cProfile
            import pstats

            with torch.no_grad():
                prof = cProfile.Profile()
                prof.enable()
                interpreter(feeds)
                prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
