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
from typing import Any, Optional
from collections.abc import Sequence


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
        try:
            model = factory()
        except Exception as exc:  # noqa: BLE001 -- the user's factory, reported in one line
            raise UsageError(f"{spec} failed: {_one_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _writable(path: Optional[str], option: str) -> None:
    """Refuse an output path before any work: its directory must exist and be writable."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or path.endswith(os.sep):
        raise UsageError(f"{option} {path!r} is a directory; give a file path")
    if not os.path.isdir(directory):
        raise UsageError(f"{option} {path!r}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path!r} is not writable")


def _run_model(model: Any, inputs: list) -> Any:
    """The model's own forward pass on the example inputs; a model that fails is the user's input error."""
    import torch

    try:
        with torch.no_grad():
            return model(*inputs)
    except Exception as exc:  # noqa: BLE001 -- anything the user's model raises is reported in one line
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise UsageError(f"the model failed on the given inputs (shapes {shapes}): {_one_line(exc)}") from None


def _shapes(values: Optional[Sequence[str]]) -> list:
    try:
        shapes = [tuple(int(d) for d in v.replace("x", ",").split(",")) for v in (values or ["1,3,224,224"])]
    except ValueError:
        raise UsageError(f"--shape takes comma-separated integers like 1,3,224,224; got {values}") from None
    if any(d < 1 for s in shapes for d in s):
        raise UsageError(f"--shape takes positive sizes like 1,3,224,224; got {values}")
    return shapes


def _inputs(args) -> list:
    import torch

    torch.manual_seed(args.seed)
    return [torch.randn(s) for s in _shapes(args.shape)]


def _check_paths(args) -> None:
    """Every path option checked before any work (nothing is converted only to fail at the end)."""
    if args.fp16 and args.bf16:
        raise UsageError("choose one of --fp16 and --bf16")
    if args.int8:
        if not (args.calib or args.calib_cache):
            raise UsageError("--int8 needs --calib DIR (calibration batches saved as .pt files) or --calib-cache")
        if args.calib is None and not os.path.isfile(args.calib_cache):
            raise UsageError(f"--calib-cache {args.calib_cache!r} does not exist; pass --calib DIR to calibrate")
        if args.calib is not None and not os.path.isdir(args.calib):
            raise UsageError(f"--calib {args.calib!r} is not a directory")
        if args.calib is not None:
            _writable(args.calib_cache, "--calib-cache")  # written after calibrating
    elif args.calib or args.calib_cache:
        raise UsageError("--calib and --calib-cache are for --int8")
    _writable(getattr(args, "output", None), "-o/--output")
    _writable(getattr(args, "plan", None), "--plan")


def _options(args, inputs: list) -> dict:
    options = {"fp16": args.fp16, "bf16": args.bf16, "progress": False if args.quiet else None}
    if args.int8:
        options.update(int8=True, calibration_cache=args.calib_cache,
                       calibration_data=_calibration_batches(args.calib) if args.calib else None)
    if args.dynamic:
        from .dynamic import parse_profiles

        options["dynamic_shapes"] = _dynamic(args.dynamic)
        try:
            parse_profiles(options["dynamic_shapes"], [f"input_{i}" for i in range(len(inputs))], inputs)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--dynamic: {_one_line(exc).split(': ', 1)[1]}") from None
    if args.fallback or args.torch_executed_op or args.torch_executed_module or args.min_block_size is not None:
        options.update(fallback=True, torch_executed_ops=args.torch_executed_op or [],
                       torch_executed_modules=args.torch_executed_module or [],
                       min_block_size=args.min_block_size or 1)
    if hasattr(args, "builder_option"):  # the subcommands that build an engine
        options["build_options"] = _build_options(args)
    return options


def _build_options(args) -> dict:
    """The build options given on the command line, as a dict of BuildOptions fields."""
    given = {"optimization_level": args.optimization_level, "timing_cache": args.timing_cache,
             "strip_weights": args.strip_weights, "refittable": args.refittable,
             "weight_streaming": args.weight_streaming, "version_compatible": args.version_compatible,
             "hardware_compatibility": args.hardware_compatibility, "compute_capabilities": args.compute_capability,
             "max_aux_streams": args.max_aux_streams}
    options = {k: v for k, v in given.items() if v not in (None, False)}
    extra = {}
    for item in args.builder_option or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--builder-option takes NAME=VALUE (an IBuilderConfig attribute or a BuilderFlag), "
                             f"got {item!r}")
        extra[name] = _literal(value)
    if extra:
        options["builder_options"] = extra
    return options


def _literal(text: str) -> Any:
    """``true``/``false``, an int, a float, or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _calibration_batches(directory: str) -> list:
    """Every ``*.pt`` file in ``directory`` (sorted), each a tensor or a list of the model's inputs."""
    import torch

    if not os.path.isdir(directory):
        raise UsageError(f"--calib {directory!r} is not a directory")
    files = sorted(f for f in os.listdir(directory) if f.endswith(".pt"))
    if not files:
        raise UsageError(f"--calib {directory!r} holds no .pt files")
    batches = []
    for f in files:
        try:
            batches.append(torch.load(os.path.join(directory, f), weights_only=True))
        except Exception as exc:  # noqa: BLE001 -- a file the user gave, reported in one line
            raise UsageError(f"--calib: cannot load {os.path.join(directory, f)!r}: {_one_line(exc)}") from None
    return batches


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
    except torch2x.BuildOptionError as exc:
        raise UsageError(str(exc)) from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise UsageError(f"the conversion failed on inputs of shape {shapes}: {_one_line(exc)}") from None


def _relative_error(out, ref) -> float:
    diff = (out.double() - ref.double()).norm().item()
    scale = ref.double().norm().item()
    return diff / scale if scale else diff


def cmd_convert(args) -> int:

    import torch2x
    from torch2x.runtime import module_from_network
    from torch2x import engine_cache
    from torch2x.structure import flatten

    _check_paths(args)
    model, inputs = load_model(args.model), _inputs(args)
    reference = flatten(_run_model(model, inputs))[0]
    started = time.perf_counter()
    options = _options(args, inputs)
    cache_dir = None if options.get("fallback") else engine_cache.directory(args.engine_cache)
    if cache_dir is not None:
        cache_key = engine_cache.conversion_key(model, inputs, options)
        cached = engine_cache.load(cache_dir, cache_key)
        if cached is not None:
            print(cached.report)
            print(f"loaded {args.model} from the engine cache in {time.perf_counter() - started:.1f} s")
            return _save(cached, args)
    net = _build(model, inputs, options)
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
        trt_module.report = rep
        if cache_dir is not None:  # (hybrid modules are not cached: an entry holds one engine)
            print(f"stored in the engine cache: {engine_cache.store(cache_dir, cache_key, trt_module)}")
    return _save(trt_module, args)


def _save(trt_module, args) -> int:
    import torch

    torch.save(trt_module.state_dict(), args.output)
    print(f"saved state dict to {args.output} (load with torch.load(path, weights_only=True))")
    if args.plan:
        trt_module.save_engine(args.plan)
        print(f"saved engine plan to {args.plan} and its I/O description to {args.plan}.json")
    return 0


def cmd_report(args) -> int:
    import torch2x

    _check_paths(args)
    model, inputs = load_model(args.model), _inputs(args)
    _run_model(model, inputs)
    try:
        rep = torch2x.report(model, inputs, **_options(args, inputs))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"the conversion failed on the given inputs: {_one_line(exc)}") from None
    print(rep.to_json() if args.json else rep)
    return 0 if rep.usable else 1


def cmd_check(args) -> int:
    import torch2x

    _check_paths(args)
    model, inputs = load_model(args.model), _inputs(args)
    _run_model(model, inputs)
    options = _options(args, inputs)
    try:
        # lenient: plugin ops that TensorRT-RTX holds placeholders for still run (in PyTorch) and compare
        result = torch2x.check(model, inputs, tolerance=args.tolerance, strict=False, **options)
    except torch2x.UnsupportedOperatorError as exc:
        print(exc.report)
        return 1
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"the conversion failed on the given inputs: {_one_line(exc)}") from None
    report = result.network.report
    if not report.ok:
        print(report._table() if report.segments else report)  # (the check's table lists the segments)
    print(result)
    return 0 if result.ok and report.usable else 1


def cmd_inspect(args) -> int:
    import torch2x

    model, inputs = load_model(args.model), _inputs(args)
    options = _options(args, inputs)
    options.pop("progress", None)
    try:
        info = torch2x.inspect(model, inputs, gpu=args.gpu, **options)
    except torch2x.UnsupportedOperatorError as exc:
        print(exc.report)
        return 1
    except torch2x.BuildOptionError as exc:
        raise UsageError(str(exc)) from None
    except torch2x.EngineBuildError as exc:
        print(f"torch2x: {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"the model failed on the given inputs: {str(exc).splitlines()[0]}") from None
    print(info.to_json() if args.json else info)
    return 0


def cmd_bench(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("torch2x bench: no CUDA device here; engines run only on an NVIDIA GPU. Nothing to measure.")
        return 0
    from .bench import bench

    _check_paths(args)
    model, inputs = load_model(args.model), _inputs(args)
    _run_model(model, inputs)
    print(bench(model, inputs, **_options(args, inputs)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torch2x", description="Convert PyTorch models into TensorRT engines.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, fn, text in (("convert", cmd_convert, "convert a model and save its TRTModule state dict"),
                           ("report", cmd_report, "list the ops that cannot be converted"),
                           ("check", cmd_check, "compare the network with PyTorch layer by layer on CPU"),
                           ("inspect", cmd_inspect, "the engine's kernels, bytes moved and a roofline time estimate"),
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
            p.add_argument("--engine-cache", help="directory of engines built before (default: $TORCH2X_ENGINE_CACHE); "
                           "an engine for the same weights, code, inputs and options is reused")
        if name in ("report", "inspect"):
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "inspect":
            p.add_argument("--gpu", default="RTX 4090", help="GPU of the time estimate: RTX 4090, RTX 5090, L4, A100 "
                           "or H100")
        if name in ("convert", "inspect"):
            _add_build_options(p)
        if name == "check":
            p.add_argument("--tolerance", type=float, default=1e-4, help="relative error allowed per tensor")
    return parser


def _add_build_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("build options (refused by name where this TensorRT lacks them)")
    g.add_argument("--optimization-level", type=int, help="builder optimization level 0-5")
    g.add_argument("--timing-cache", help="timing cache file: loaded when it exists, saved after the build")
    g.add_argument("--strip-weights", action="store_true", help="weight-stripped plan (TRTModule.refit puts them back)")
    g.add_argument("--refittable", action="store_true", help="an engine whose weights can be replaced")
    g.add_argument("--weight-streaming", action="store_true", help="weights may stream from host memory")
    g.add_argument("--version-compatible", action="store_true", help="runs on later TensorRT versions")
    g.add_argument("--hardware-compatibility", help="ampere_plus or same_compute_capability")
    g.add_argument("--compute-capability", action="append", help="TensorRT-RTX target, e.g. 8.9 (repeat for several)")
    g.add_argument("--max-aux-streams", type=int, help="auxiliary streams TensorRT may use")
    g.add_argument("--builder-option", action="append", help="NAME=VALUE: an IBuilderConfig attribute or a "
                   "BuilderFlag (e.g. TF32=false)")


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
