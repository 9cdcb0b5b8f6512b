"""``torch2x bench``: the engine against PyTorch eager and ``torch.compile`` in one run (NVIDIA GPU only).

Each contender runs the same inputs on the same CUDA stream; times come from CUDA events around each
call after warm-up, so they measure GPU time per batch including launch overhead.
"""
from __future__ import annotations

import statistics
from typing import Any
from collections.abc import Callable

import torch


def _time(fn: Callable[[], Any], iterations: int, warmup: int) -> list:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _row(name: str, times: list, batch: int) -> str:
    q = statistics.quantiles(times, n=100)
    mean = statistics.fmean(times)
    return (f"{name:16s} p50 {q[49]:8.3f} ms  p90 {q[89]:8.3f} ms  p99 {q[98]:8.3f} ms  "
            f"{1000.0 * batch / mean:10.1f} samples/s")


def bench(model: torch.nn.Module, inputs: list, iterations: int = 200, warmup: int = 20, **options: Any) -> str:
    """A table of latency percentiles and throughput: TensorRT engine, PyTorch eager, torch.compile."""
    from .convert import torch2x

    device = torch.device("cuda")
    model = model.eval().to(device)
    inputs = [x.to(device) for x in inputs]
    batch = int(inputs[0].shape[0]) if inputs[0].dim() else 1
    engine = torch2x(model, inputs, **options).cuda()
    compiled = torch.compile(model)
    rows = []
    with torch.no_grad():
        for name, fn in (("tensorrt", lambda: engine(*inputs)), ("eager", lambda: model(*inputs)),
                         ("torch.compile", lambda: compiled(*inputs))):
            rows.append(_row(name, _time(fn, iterations, warmup), batch))
    return "\n".join(rows)
