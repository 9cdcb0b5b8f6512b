"""torch2x's optimized engine against the ONNX route's, and the engine cache's speedup.

    python benchmarks/engine.py [resnet18 resnet50 ...] [--gpu "RTX 4090"] [--no-cache] [--json out.json]

Per model of benchmarks/zoo.py (default: all of them): the kernels of the engine TensorRT builds and the
bytes they move (torch2x.inspect), for torch2x's network and for the ONNX route's (torch.onnx.export, then
the flavour's OnnxParser; same builder, same flags, same input), plus the roofline time estimate of both on
``--gpu``. Then, unless ``--no-cache``: the first conversion into an empty engine cache against the second
(served from the cache). Ends with

    engine: torch2x K kernels (X% of ONNX route's), B MB moved (Y%); cache: second conversion Zx faster

and the floor the kernel count cannot go below: the kernels that run a convolution or a matrix multiply
(TensorRT gives each its own kernel, apart from sibling projections it merges; both routes get those
merges), as a share of the ONNX route's kernels. ``--cache-only`` times the engine cache alone.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import onnx_util  # noqa: E402
import zoo  # noqa: E402

import torch2x  # noqa: E402
from torch2x.inspect import inspect_build  # noqa: E402
from torch2x.trt_logging import LOGGER  # noqa: E402


def onnx_route(model: torch.nn.Module, x: torch.Tensor, gpu: str):
    """The ONNX route's engine graph: exported (legacy exporter, then dynamo), parsed, built by our builder."""
    onnx_util._LOGGER = LOGGER  # the parser's builder logs to torch2x's logger: its build log holds the records
    error = None
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = onnx_util.onnx_network(model, x, dynamo=dynamo)
            return inspect_build(parsed.builder, parsed.network, gpu=gpu)
        except Exception as exc:  # noqa: BLE001 -- a benchmark reports every failure and goes on
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
    raise RuntimeError(error)


def runs_matmul(kernel) -> bool:
    """A kernel that runs a convolution or a matrix multiply: by kind, or a fused kernel named after one
    (``__myl_FcAdd``, ``__myl_CorrDivErfAddMulMul``)."""
    if kernel.kind in ("correlation", "gemm"):
        return True
    return kernel.kind.startswith("runtime") and kernel.name.removeprefix("__myl_").startswith(("Fc", "Corr", "Gemm"))


def run_one(name: str, gpu: str, cache: bool, inspect: bool = True) -> dict:
    row: dict = {"model": name}
    model, x = zoo.load(name)
    if inspect:
        try:
            ours = torch2x.inspect(model, [x], gpu=gpu)
            row.update(kernels=ours.totals()["kernels"], bytes=ours.totals()["bytes"],
                       est_us=ours.totals()["time_us_estimate"], matmul_kernels=sum(map(runs_matmul, ours.kernels)),
                       kinds={k: t["kernels"] for k, t in ours.by_kind().items()})
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
        try:
            theirs = onnx_route(model, x, gpu)
            row.update(onnx_kernels=theirs.totals()["kernels"], onnx_bytes=theirs.totals()["bytes"],
                       onnx_est_us=theirs.totals()["time_us_estimate"],
                       onnx_matmul_kernels=sum(map(runs_matmul, theirs.kernels)))
        except Exception as exc:  # noqa: BLE001
            row["onnx_error"] = str(exc)[:150]
    if cache and "error" not in row:
        directory = tempfile.mkdtemp(prefix="torch2x-engine-cache-")
        try:
            times = []
            for _ in range(2):
                started = time.perf_counter()
                torch2x.torch2x(model, [x], engine_cache=directory, progress=False)
                times.append(time.perf_counter() - started)
            row.update(first_s=times[0], cached_s=times[1])
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return row


def _fmt(row: dict) -> str:
    if "kernels" not in row and "first_s" in row:
        return f"{row['model']:30s} {row['first_s']:6.2f} s -> {row['cached_s']:5.2f} s"
    if "error" in row:
        return f"{row['model']:30s} FAILED {row['error']}"
    onnx = (f"{row['onnx_kernels']:5d} {row['onnx_bytes'] / 1e6:9.1f} {row['onnx_est_us'] / 1e3:8.3f}"
            if "onnx_kernels" in row else f"onnx: {row.get('onnx_error', '-')[:50]}")
    cache = f"  {row['first_s']:6.2f} s -> {row['cached_s']:5.2f} s" if "first_s" in row else ""
    return (f"{row['model']:30s} {row['kernels']:5d} {row['bytes'] / 1e6:9.1f} {row['est_us'] / 1e3:8.3f} "
            f"| {onnx}{cache}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="zoo names (default: the whole zoo of benchmarks/zoo.py)")
    parser.add_argument("--gpu", default="RTX 4090", help="GPU of the roofline estimate")
    parser.add_argument("--no-cache", action="store_true", help="skip the engine-cache timing")
    parser.add_argument("--cache-only", action="store_true", help="time the engine cache alone (no inspection)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    logging.getLogger("torch2x.tensorrt").setLevel(logging.ERROR)  # the ONNX parser's warnings
    names = args.models or zoo.all_names()
    torch.set_grad_enabled(False)
    print(f"{'model':30s} {'torch2x: kernels':>16} {'MB':>5} {'est ms':>8} | ONNX route: kernels, MB, est ms"
          + ("" if args.no_cache else "  | first conversion -> from the cache"))
    rows = []
    for name in names:
        rows.append(run_one(name, args.gpu, not args.no_cache, inspect=not args.cache_only))
        print(_fmt(rows[-1]), flush=True)
    both = [r for r in rows if "kernels" in r and "onnx_kernels" in r]
    k, ok = sum(r["kernels"] for r in both), sum(r["onnx_kernels"] for r in both)
    b, ob = sum(r["bytes"] for r in both), sum(r["onnx_bytes"] for r in both)
    cached = [r for r in rows if "first_s" in r]
    speedup = sum(r["first_s"] for r in cached) / max(1e-9, sum(r["cached_s"] for r in cached))
    worst = min((r["first_s"] / r["cached_s"] for r in cached), default=float("nan"))
    fewer = sum(r["kernels"] <= r["onnx_kernels"] for r in both)
    lighter = sum(r["bytes"] <= r["onnx_bytes"] for r in both)
    floor = sum(min(r["matmul_kernels"], r["onnx_matmul_kernels"]) for r in both)
    if both:
        print(f"engine: torch2x {k} kernels ({100 * k / max(1, ok):.0f}% of ONNX route's {ok}), {b / 1e6:.0f} MB "
              f"moved ({100 * b / max(1, ob):.0f}% of {ob / 1e6:.0f} MB); no more kernels on {fewer}/{len(both)} "
              f"models, no more bytes on {lighter}/{len(both)}")
        print(f"floor: {floor} kernels run a convolution or matrix multiply ({100 * floor / max(1, ok):.0f}% of the "
              "ONNX route's kernels): no engine of these models has fewer")
    if cached:
        print(f"cache: second conversion {speedup:.1f}x faster in total, at least {worst:.1f}x "
              f"({min(cached, key=lambda r: r['first_s'] / r['cached_s'])['model']})")
    zoo.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
