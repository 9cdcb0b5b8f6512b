"""The ``torch2x`` command: convert, report, check and bench a model from the terminal.

    torch2x convert torchvision:resnet18 -o resnet18_trt.pth
    torch2x report path/to/model.py:make_model --shape 1,3,64,64 --json
    torch2x check timm:convnext_tiny --tolerance 1e-4

Bad input is a one-line error and exit code 2; a failed check exits 1.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def load_model(spec: str) -> Any:
    """``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory`` -> a module in eval mode."""
    if ":" not in spec:
        raise UsageError(f"model {spec!r} is not of the form torchvision:NAME, timm:NAME or path/to/file.py:factory")
    source, name = spec.rsplit(":", 1)
    import torch

    torch.manual_seed(0)  # random weights, the same on every run: printed errors are reproducible
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise UsageError(f"torchvision has no model {name!r} (see torchvision.models.list_models())")
        try:  # random weights: nothing is downloaded
            model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        except TypeError:
            model = torchvision.models.get_model(name, weights=None)
    elif source == "timm":
        try:
            timm = importlib.import_module("timm")
        except ImportError:
            raise UsageError("timm is not installed: pip install timm") from None
        try:
            model = timm.create_model(name, pretrained=False)
        except RuntimeError as exc:
            raise UsageError(f"timm cannot create {name!r}: {exc}") from None
    else:
        if not os.path.isfile(source):
            raise UsageError(f"no file {source!r} (model spec {spec!r})")
        module_spec = importlib.util.spec_from_file_location("torch2x_user_model", source)
        user = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(user)
        except Exception as exc:  # noqa: BLE001 -- the user's file, reported in one line
            raise UsageError(f"{source} failed to import: {type(exc).__name__}: {exc}") from None
        factory = getattr(user, name, None)
        if not callable(factory):
            raise UsageError(f"{source} has no callable {name!r}")
        model = factory()
    return model.eval()


def _shapes(values: Optional[Sequence[str]]) -> list:
    try:
        return [tuple(int(d) for d in v.replace("x", ",").split(",")) for v in (values or ["1,3,224,224"])]
    except ValueError:
        raise UsageError(f"--shape takes comma-separated integers like 1,3,224,224; got {values}") from None


def _inputs(args) -> list:
    import torch

    torch.manual_seed(args.seed)
    return [torch.randn(s) for s in _shapes(args.shape)]


def _options(args) -> dict:
    options = {"fp16": args.fp16, "bf16": args.bf16, "progress": False if args.quiet else None}
    if args.int8:
        if not (args.calib or args.calib_cache):
            raise UsageError("--int8 needs --calib DIR (calibration batches saved as .pt files) or --calib-cache")
        options.update(int8=True, calibration_cache=args.calib_cache,
                       calibration_data=_calibration_batches(args.calib) if args.calib else None)
    if args.dynamic:
        options["dynamic_shapes"] = _dynamic(args.dynamic)
    if args.fallback or args.torch_executed_op or args.torch_executed_module or args.min_block_size is not None:
        options.update(fallback=True, torch_executed_ops=args.torch_executed_op or [],
                       torch_executed_modules=args.torch_executed_module or [],
                       min_block_size=args.min_block_size or 1)
    return options


def _calibration_batches(directory: str) -> list:
    """Every ``*.pt`` file in ``directory`` (sorted), each a tensor or a list of the model's inputs."""
    import torch

    if not os.path.isdir(directory):
        raise UsageError(f"--calib {directory!r} is not a directory")
    files = sorted(f for f in os.listdir(directory) if f.endswith(".pt"))
    if not files:
        raise UsageError(f"--calib {directory!r} holds no .pt files")
    return [torch.load(os.path.join(directory, f), weights_only=True) for f in files]


def _dynamic(values: Sequence[str]) -> dict:
    """``--dynamic 0:1:8:32`` (dim 0 of the first input) or ``--dynamic input_1.2:64:224:512``."""
    spec: dict = {}
    for value in values:
        name, _, rest = value.rpartition(".") if "." in value.split(":")[0] else ("input_0", "", value)
        try:
            dim, lo, opt, hi = (int(v) for v in rest.split(":"))
        except ValueError:
            raise UsageError(f"--dynamic takes [INPUT.]DIM:MIN:OPT:MAX like 0:1:8:32; got {value!r}") from None
        spec.setdefault(name, {})[dim] = (lo, opt, hi)
    return spec


def _build(model: Any, inputs: list, options: dict):
    import torch2x

    try:
        return torch2x.build_network(model, inputs, strict=False, **options)
    except torch2x.UnsupportedOperatorError as exc:
        return exc.report
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise UsageError(f"the model failed on inputs of shape {shapes}: {str(exc).splitlines()[0]}") from None


def _relative_error(out, ref) -> float:
    diff = (out.double() - ref.double()).norm().item()
    scale = ref.double().norm().item()
    return diff / scale if scale else diff


def cmd_convert(args) -> int:
    import torch

    import torch2x
    from torch2x.runtime import module_from_network
    from torch2x.structure import flatten

    model, inputs = load_model(args.model), _inputs(args)
    started = time.perf_counter()
    net = _build(model, inputs, _options(args))
    rep = net if isinstance(net, torch2x.ConversionReport) else net.report
    print(rep)
    if not rep.usable:
        print(f"torch2x: cannot convert {args.model}: unsupported ops above (--fallback runs them in PyTorch)",
              file=sys.stderr)
        return 1
    hybrid = isinstance(net, torch2x.HybridNetwork)
    if hybrid and args.plan:
        raise UsageError(f"--plan writes one engine, and this hybrid conversion has {len(net.segments)}: "
                         "save the HybridModule state dict (-o) instead")
    print(f"converted {args.model} in {time.perf_counter() - started:.1f} s: {rep.num_layers} layers")
    if not args.no_check:
        with torch.no_grad():
            reference = flatten(model(*inputs))[0]
        outputs = flatten(net.interpret(*inputs))[0]
        names = [f"output_{k}" for k in range(len(outputs))] if hybrid else net.output_names
        for name, out, ref in zip(names, outputs, reference):
            print(f"interpreter vs PyTorch, {name}: relative error {_relative_error(out, ref):.2e}")
    started = time.perf_counter()
    progress = False if args.quiet else None
    if hybrid:
        engines = net.build_engines(progress)
        trt_module = net.to_module(engines)
        print(f"{len(engines)} engines built in {time.perf_counter() - started:.1f} s: "
              f"{sum(map(len, engines)) / 2**20:.1f} MiB")
    else:
        engine = net.build_engine(progress)
        print(f"engine built in {time.perf_counter() - started:.1f} s: {len(engine) / 2**20:.1f} MiB")
        trt_module = module_from_network(net, engine)
    torch.save(trt_module.state_dict(), args.output)
    print(f"saved state dict to {args.output} (load with torch.load(path, weights_only=True))")
    if args.plan:
        trt_module.save_engine(args.plan)
        print(f"saved engine plan to {args.plan} and its I/O description to {args.plan}.json")
    return 0


def cmd_report(args) -> int:
    import torch2x

    model, inputs = load_model(args.model), _inputs(args)
    try:
        rep = torch2x.report(model, inputs, **_options(args))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"the model failed on the given inputs: {str(exc).splitlines()[0]}") from None
    print(rep.to_json() if args.json else rep)
    return 0 if rep.usable else 1


def cmd_check(args) -> int:
    import torch2x

    model, inputs = load_model(args.model), _inputs(args)
    try:
        # lenient: plugin ops that TensorRT-RTX holds placeholders for still run (in PyTorch) and compare
        result = torch2x.check(model, inputs, tolerance=args.tolerance, strict=False, **_options(args))
    except torch2x.UnsupportedOperatorError as exc:
        print(exc.report)
        return 1
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"the model failed on the given inputs: {str(exc).splitlines()[0]}") from None
    report = result.network.report
    if not report.ok:
        print(report._table() if report.segments else report)  # (the check's table lists the segments)
    print(result)
    return 0 if result.ok and report.usable else 1


def cmd_bench(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("torch2x bench: no CUDA device here; engines run only on an NVIDIA GPU. Nothing to measure.")
        return 0
    from .bench import bench

    print(bench(load_model(args.model), _inputs(args), **_options(args)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torch2x", description="Convert PyTorch models into TensorRT engines.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, fn, text in (("convert", cmd_convert, "convert a model and save its TRTModule state dict"),
                           ("report", cmd_report, "list the ops that cannot be converted"),
                           ("check", cmd_check, "compare the network with PyTorch layer by layer on CPU"),
                           ("bench", cmd_bench, "time the engine against PyTorch (needs an NVIDIA GPU)")):
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        p.add_argument("model", help="torchvision:NAME, timm:NAME or path/to/file.py:factory")
        p.add_argument("--shape", action="append", help="input shape, e.g. 1,3,224,224 (repeat for several inputs)")
        p.add_argument("--seed", type=int, default=0, help="seed of the random example inputs")
        p.add_argument("--quiet", action="store_true", help="no progress output (also off without a terminal)")
        p.add_argument("--fp16", action="store_true", help="float16 weights and activations")
        p.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations")
        p.add_argument("--int8", action="store_true", help="INT8 by explicit quantization (needs --calib)")
        p.add_argument("--calib", help="directory of calibration inputs (.pt tensors)")
        p.add_argument("--calib-cache", help="calibration cache (JSON): read when it exists, written after calibrating")
        p.add_argument("--dynamic", action="append", help="dynamic dimension, e.g. 0:1:8:32 (dim:min:opt:max)")
        p.add_argument("--fallback", action="store_true",
                       help="run calls TensorRT cannot run in PyTorch between engines (hybrid execution)")
        p.add_argument("--torch-executed-op", action="append", metavar="NAME",
                       help="run this torch op in PyTorch, e.g. torch.fft.rfft (repeatable; implies --fallback)")
        p.add_argument("--torch-executed-module", action="append", metavar="PATH",
                       help="run this module (path or class name) in PyTorch (repeatable; implies --fallback)")
        p.add_argument("--min-block-size", type=int, metavar="N",
                       help="segments of fewer converted calls run in PyTorch (implies --fallback; default 1)")
        if name == "convert":
            p.add_argument("-o", "--output", required=True, help="where to save the TRTModule state dict")
            p.add_argument("--plan", help="also write the raw engine plan here, plus PLAN.json describing its I/O")
            p.add_argument("--no-check", action="store_true", help="skip the interpreter's comparison with PyTorch")
        if name == "report":
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "check":
            p.add_argument("--tolerance", type=float, default=1e-4, help="relative error allowed per tensor")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a subcommand is needed: convert, report, check or bench (see torch2x --help)")
        return args.fn(args)
    except UsageError as exc:
        print(f"torch2x: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"torch2x: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
