"""Hybrid execution on torchvision's detection models: what runs as engines, what in PyTorch.

    python benchmarks/hybrid.py [--models fcos_resnet50_fpn ...] [--json out.json]

Per model (eval mode, random weights with batch-norm statistics from one batch, one 320x320 image; see
tests/harness.py detection_model): conversion time with ``fallback=True`` (every pass, no engine build),
the number of engines, converted calls and calls run in PyTorch (with their ops), engine build time, and
the largest difference to PyTorch of the interpreted program's outputs on the conversion image and on a
second image (which keeps another number of detections).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from harness import DETECTION_IMAGES, DETECTION_OPTIONS, detection_image, detection_model  # noqa: E402

import torch2x  # noqa: E402
from torch2x.structure import flatten  # noqa: E402


def _max_error(outputs, reference) -> float:
    outs, refs = flatten(outputs)[0], flatten(reference)[0]
    if [tuple(o.shape) for o in outs] != [tuple(r.shape) for r in refs]:
        return float("inf")
    return max([(o.double() - r.double()).abs().max().item() for o, r in zip(outs, refs) if r.numel()], default=0.0)


def measure(name: str) -> dict:
    model = detection_model(name)
    started = time.perf_counter()
    seeds = DETECTION_IMAGES[name]
    net = torch2x.build_network(model, [[detection_image(seeds[0])]], fallback=True)
    converted = time.perf_counter() - started
    row = {"model": name, "conversion_s": round(converted, 1), "engines": len(net.segments),
           "converted_calls": net.report.converted_calls, "calls_in_pytorch": net.torch_calls,
           "pytorch_ops": dict(Counter(s["fn"] for s in net.program["steps"] if "engine" not in s))}
    for k, seed in enumerate(seeds):
        image = detection_image(seed)
        with torch.no_grad():
            reference = model([image.clone()])
        row[f"detections_{k}"] = int(reference[0]["boxes"].shape[0])
        row[f"max_error_{k}"] = _max_error(net.interpret([image.clone()]), reference)
    started = time.perf_counter()
    engines = net.build_engines(False)
    row["engine_build_s"] = round(time.perf_counter() - started, 1)
    row["engine_mib"] = round(sum(map(len, engines)) / 2**20, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DETECTION_OPTIONS))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        row = measure(name)
        rows.append(row)
        print(f"{name:40s} {row['conversion_s']:6.1f} s  {row['engines']:2d} engines  {row['converted_calls']:5d} "
              f"converted  {row['calls_in_pytorch']:3d} in PyTorch  detections {row['detections_0']}/"
              f"{row['detections_1']}  max error {row['max_error_0']:.2g}/{row['max_error_1']:.2g}  "
              f"build {row['engine_build_s']:.1f} s", flush=True)
        print(f"{'':40s} in PyTorch: {', '.join(f'{op} x{n}' for op, n in row['pytorch_ops'].items())}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
