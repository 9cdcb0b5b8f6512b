"""Convert the whole model zoo and compare with the ONNX route.

    python benchmarks/zoo.py [--models resnet50 swin_t bert] [--no-onnx] [--json out.json]

Per model: converted or not (with the unsupported ops), the interpreter's relative error against
PyTorch (float32, batch 1, the model's usual input size, random weights), the layer count and the
conversion front-end time (tracing + network construction, no engine build), and the same layer
count and front-end time (torch.onnx.export + OnnxParser.parse) for the ONNX route. Ends with

    zoo: N/M converted, K within 1e-4, layers X% of ONNX route, front end Y% of ONNX route
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from harness import LastHiddenState  # noqa: E402
from onnx_util import onnx_network  # noqa: E402

import torch2x  # noqa: E402
from torch2x.structure import flatten  # noqa: E402

SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
TRANSFORMERS = ["bert", "gpt2", "t5_encoder"]
INPUT_SIZE = {"inception_v3": 299, "fcn_resnet50": 520, "deeplabv3_mobilenet_v3_large": 520,
              "lraspp_mobilenet_v3_large": 520}


def _transformer(name: str):
    import transformers as hf

    torch.manual_seed(0)
    if name == "bert":
        model = hf.BertModel(hf.BertConfig())
    elif name == "gpt2":
        model = hf.GPT2Model(hf.GPT2Config())
    else:
        model = hf.T5EncoderModel(hf.T5Config())
    model.eval()
    ids = torch.randint(0, 1000, (1, 128))

    return LastHiddenState(model).eval(), ids


def load(name: str):
    """(model in eval mode, example input) for a zoo name."""
    if name in TRANSFORMERS:
        return _transformer(name)
    torch.manual_seed(0)
    kwargs = {"weights": None}
    if name in SEGMENTATION:
        kwargs["weights_backbone"] = None
    if name == "inception_v3" or name.startswith("googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs).eval()
    for m in model.modules():  # zero-initialised heads (vit, maxvit) give all-zero logits: nothing to compare
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)
    size = INPUT_SIZE.get(name, 224)
    return model, torch.randn(1, 3, size, size)


def all_names() -> list:
    """Every zoo model: torchvision's classification models, the three segmentation models, the transformers."""
    return torchvision.models.list_models(module=torchvision.models) + SEGMENTATION + TRANSFORMERS


def write_json(path, rows: list) -> None:
    """Write a benchmark's rows (``--json``) when a path is given."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


def _main_output(out):
    if isinstance(out, dict):  # segmentation models return {"out": ..., "aux": ...}
        out = out["out"]
    return flatten(out)[0][0]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (out.double() - ref.double()).norm().item()
    scale = ref.double().norm().item()
    return diff / scale if scale else diff


def run_one(name: str, onnx: bool) -> dict:
    row = {"model": name}
    model, x = load(name)
    with torch.no_grad():
        ref = _main_output(model(x))
    started = time.perf_counter()
    try:
        net = torch2x.build_network(model, [x], strict=False)
        row["front_end_s"] = time.perf_counter() - started
        row["layers"] = net.network.num_layers
        row["unsupported"] = sorted(net.report.unsupported)
        row["converted"] = net.report.ok
        row["rel_err"] = relative_error(_main_output(net.interpret(x)), ref)
    except torch2x.UnsupportedOperatorError as exc:
        row.update(converted=False, unsupported=sorted(exc.report.unsupported))
    except Exception as exc:  # noqa: BLE001 -- a benchmark reports every failure and goes on
        row.update(converted=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if onnx:
        started = time.perf_counter()
        for dynamo in (False, True):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    parsed = onnx_network(model, x, dynamo=dynamo)
                row["onnx_s"] = time.perf_counter() - started
                row["onnx_layers"] = parsed.network.num_layers
                break
            except Exception as exc:  # noqa: BLE001
                row["onnx_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return row


def _fmt(row: dict) -> str:
    status = ("ok" if row.get("converted")
              else "FAILED " + (", ".join(row.get("unsupported", [])) or row.get("error", "")))
    err = f"{row['rel_err']:.1e}" if "rel_err" in row else "-"
    onnx = (f"{row['onnx_layers']:>6} layers {row['onnx_s']:6.1f} s" if "onnx_layers" in row
            else "onnx: " + row.get("onnx_error", "-")[:60])
    ours = f"{row.get('layers', '-'):>6} layers {row.get('front_end_s', float('nan')):6.1f} s"
    return f"{row['model']:32s} {err:>8}  {ours}  | {onnx}  {status}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo names (default: every torchvision classification "
                        "model, the three segmentation models and bert, gpt2, t5_encoder)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX route")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    names = args.models or all_names()
    torch.set_grad_enabled(False)
    rows = []
    print(f"{'model':32s} {'rel err':>8}  {'torch2x':>22}  | ONNX route")
    for name in names:
        row = run_one(name, not args.no_onnx)
        rows.append(row)
        print(_fmt(row), flush=True)
    converted = [r for r in rows if r.get("converted")]
    within = [r for r in converted if r.get("rel_err", 1) <= (1e-3 if r["model"] in TRANSFORMERS else 1e-4)]
    both = [r for r in converted if "onnx_layers" in r]
    layers = 100 * sum(r["layers"] for r in both) / max(1, sum(r["onnx_layers"] for r in both))
    front = 100 * sum(r["front_end_s"] for r in both) / max(1e-9, sum(r["onnx_s"] for r in both))
    print(f"zoo: {len(converted)}/{len(rows)} converted, {len(within)} within 1e-4, "
          f"layers {layers:.0f}% of ONNX route, front end {front:.0f}% of ONNX route")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
