"""fp32 vs fp16 vs int8 against PyTorch float32, through the interpreter (CPU, no engine needed).

    python benchmarks/precision.py [--models resnet50 mobilenet_v3_large bert] [--algorithms entropy max]
                                   [--calibration-batches 8] [--batch 4] [--size 128]

Models have random weights (fixed seed); torchvision batch norms take their statistics from one
random batch in train mode (momentum=None), as tests/test_models.py does, so activations keep a
trained model's scale. int8 calibrates once on ``--calibration-batches`` random batches (each
algorithm's ranges from the same histograms, converted through a calibration cache file) and is
evaluated on a separate batch. Per precision: relative error ``|y - ref| / |ref|``, cosine similarity, and for
the classifiers top-1 agreement with PyTorch. No pretrained weights: nothing installable from the
package registries here ships ImageNet weights inside the package (torchvision downloads them).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F
import torchvision

import torch2x
from torch2x.calibration import HistogramCollector
from torch2x.quantization import calibrate

CLASSIFIERS = ["resnet50", "mobilenet_v3_large"]


def classifier(name: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, size, size))
    return model.eval()


class _LastHidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


def bert() -> torch.nn.Module:
    import transformers as hf

    torch.manual_seed(0)
    return _LastHidden(hf.BertModel(hf.BertConfig()).eval()).eval()


def inputs(name: str, batch: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "bert":
        return torch.randint(0, 30522, (batch, 64), generator=g)
    return torch.randn(batch, 3, size, size, generator=g)


def compare(y: torch.Tensor, ref: torch.Tensor, classify: bool) -> dict:
    y = y.float()
    out = {"rel": float((y - ref).norm() / ref.norm()),
           "cos": float(F.cosine_similarity(y.flatten(), ref.flatten(), dim=0))}
    if classify:
        out["top1"] = float((y.argmax(-1) == ref.argmax(-1)).float().mean())
    return out


def run(name: str, args, workdir: str) -> list:
    model = bert() if name == "bert" else classifier(name, args.size)
    x = inputs(name, args.batch, args.size, seed=1000)  # evaluation batch, not among the calibration ones
    calibration = [inputs(name, args.batch, args.size, seed=s) for s in range(args.calibration_batches)]
    with torch.no_grad():
        ref = model(x)
    # One calibration pass; each algorithm's amax from the same histograms, converted from a cache file.
    started = time.perf_counter()
    collector = HistogramCollector()
    calibrate(model, calibration, "max", collector)
    print(f"{name}: calibration pass over {len(calibration)} batches of {args.batch}: "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    runs = [("fp32", {}), ("fp16", {"fp16": True})]
    for algorithm in args.algorithms:
        path = os.path.join(workdir, f"{name}-{algorithm}.json")
        collector.compute(algorithm).save(path)
        runs.append((f"int8 {algorithm}", {"int8": True, "calibration_cache": path}))
        runs.append((f"int8+fp16 {algorithm}", {"int8": True, "fp16": True, "calibration_cache": path}))
    rows = []
    for precision, options in runs:
        started = time.perf_counter()
        net = torch2x.build_network(model, [x], progress=False, **options)
        seconds = time.perf_counter() - started
        row = {"model": name, "precision": precision, "convert_s": seconds,
               **compare(net.interpret(x), ref, name != "bert")}
        rows.append(row)
        top1 = f"  top-1 {row['top1']:.3f}" if "top1" in row else ""
        print(f"{name:20s} {precision:20s} rel {row['rel']:.3e}  cos {row['cos']:.6f}{top1}  "
              f"(conversion {seconds:.1f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=CLASSIFIERS + ["bert"])
    parser.add_argument("--algorithms", nargs="+", default=["entropy", "percentile", "max"],
                        choices=["entropy", "percentile", "max"])
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            run(name, args, workdir)


if __name__ == "__main__":
    main()
