"""From a module and example inputs to a strongly typed network, and from the network to an engine."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Iterable, Sequence

import torch

from . import build_options as build_options_mod
from . import dynamic, flavour, layout
from . import progress as progress_mod
from . import quantization
from .build_options import BuildOptions
from .context import ConversionContext
from .dtypes import network_type, to_trt
from .flavour import trt
from .precision import PrecisionPolicy
from .report import ConversionReport, UnsupportedOperatorError
from .structure import flatten, unflatten
from .tracer import Tracer
from .trt_logging import LOGGER


class EngineBuildError(RuntimeError):
    """TensorRT's builder refused the network."""


@dataclass
class ConvertedNetwork:
    """A converted network and what is needed to feed it and read it back.

    ``interpret(*inputs)`` runs it on CPU with the project's interpreter and returns
    outputs in the structure the module returns; ``build_engine()`` serializes it.
    """

    builder: trt.Builder
    network: trt.INetworkDefinition
    input_names: list
    output_names: list
    report: ConversionReport
    input_spec: Any
    output_spec: Any
    max_workspace_size: Optional[int] = None
    precision: str = "fp32"
    module_outputs: list = field(default_factory=list)  # (module path, [tensor name or layout.StoredView]) for checks
    conversion_seconds: float = 0.0
    profiles: list = field(default_factory=list)  # [{input name: (min, opt, max)}], one per profile
    # Host arrays TensorRT points to (layer.kernel/bias and constant weights set after the layer was
    # added: batch-norm folding, int8 kernels); the bindings do not keep those alive.
    host_arrays: list = field(default_factory=list, repr=False)
    build_options: BuildOptions = field(default_factory=BuildOptions)
    # network layer name -> calls that added no layer of their own, computed by it (a folded batch norm...)
    absorbed: dict = field(default_factory=dict, repr=False)

    def feeds(self, *inputs: Any) -> dict:
        """The interpreter's input dict for positional ``inputs`` laid out like the example's."""
        tensors, _ = flatten(list(inputs))
        if len(tensors) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} input tensors ({self.input_names}), got {len(tensors)}")
        return dict(zip(self.input_names, tensors))

    def interpret(self, *inputs: Any) -> Any:
        """Run the network with the interpreter; outputs come back in the module's structure."""
        from .interpreter import interpret

        values = interpret(self.network, self.feeds(*inputs))
        return unflatten(self.output_spec, [values[n] for n in self.output_names])

    def build_engine(self, progress: Optional[bool] = None, options: Any = None) -> bytes:
        """Serialize the network into an engine plan with TensorRT's builder (progress on a terminal).

        ``options``: build options (a :class:`~torch2x.build_options.BuildOptions` or a dict of its fields)
        instead of the ones given to :func:`build_network`."""
        options = self.build_options if options is None else BuildOptions.of(options)
        return build_engine(self.builder, self.network, self.max_workspace_size, progress, self.profiles, options)

    def inspect(self, gpu: str = "RTX 4090", options: Any = None) -> Any:
        """The optimized engine graph: one row per kernel TensorRT runs, with the module paths of the calls
        it absorbed, bytes moved and a roofline time estimate on ``gpu``; see :func:`torch2x.inspect`."""
        from .inspect import inspect_network

        options = self.build_options if options is None else BuildOptions.of(options)
        return inspect_network(self, gpu=gpu, options=options)


def build_engine(builder: trt.Builder, network: trt.INetworkDefinition,
                 max_workspace_size: Optional[int] = None, progress_monitor: Any = None,
                 profiles: Optional[list] = None, options: Any = None) -> bytes:
    """``builder.build_serialized_network`` with a clear error carrying TensorRT's own messages.

    ``progress_monitor``: an ``IProgressMonitor``, True/False, or None to show build progress only on a
    terminal. ``options``: a :class:`~torch2x.build_options.BuildOptions` (or a dict of its fields) for the
    builder config. Refuses networks holding placeholders (see :func:`placeholder_ops`). Example::

        plan = build_engine(net.builder, net.network, options={"optimization_level": 5})
    """
    options = BuildOptions.of(options)
    config = engine_config(builder, network, max_workspace_size, profiles, options)
    return serialize(builder, network, config, options, progress_monitor)


def engine_config(builder: trt.Builder, network: trt.INetworkDefinition, max_workspace_size: Optional[int],
                  profiles: Optional[list], options: BuildOptions) -> trt.IBuilderConfig:
    """The builder config of an engine build: workspace, optimization profiles and build options."""
    held = placeholder_ops(network)
    if held:
        # their constants would make an engine that computes zeros where the op should run
        raise EngineBuildError(f"cannot build an engine: the network holds placeholders for {', '.join(held)}, "
                               f"which TensorRT ({flavour.describe()}) cannot run (see the conversion report). "
                               "Only the interpreter runs them (ConvertedNetwork.interpret, torch2x.check); "
                               "build the engine with a TensorRT that has plugin support, or rewrite those ops")
    config = builder.create_builder_config()
    if max_workspace_size:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(max_workspace_size))
    for ranges in profiles or []:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in ranges.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    build_options_mod.configure(config, options)
    return config


def serialize(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig,
              options: BuildOptions, progress_monitor: Any = None) -> bytes:
    """Build the engine plan of ``network`` with ``config``; saves the timing cache back when one is used."""
    if progress_monitor is True or (progress_monitor is None and progress_mod.wanted(None)):
        progress_monitor = progress_mod.BuildProgress()
    if progress_monitor:
        config.progress_monitor = progress_monitor
    LOGGER.take_errors()
    plan = builder.build_serialized_network(network, config)
    if isinstance(progress_monitor, progress_mod.BuildProgress):
        progress_monitor.line.done("done" if plan is not None else "failed")
    if plan is None:
        errors = LOGGER.take_errors() or "no message"
        hint = ""
        if flavour.IS_RTX and (options.strip_weights or options.refittable) and "CUDA_SUCCESS" in errors:
            hint = (" (strip_weights/refittable: TensorRT-RTX's builder compiles refittable engines only with a "
                    "CUDA device; build them on a machine with an RTX GPU)")
        raise EngineBuildError(f"TensorRT ({flavour.describe()}) could not build the engine{hint}: {errors}")
    build_options_mod.save_timing_cache(config, options)
    return bytes(memoryview(plan))


def placeholder_ops(network: trt.INetworkDefinition) -> list:
    """The ops a network holds placeholders for (layers only the interpreter runs), in layer order.

    A converter that cannot express a call on this TensorRT may stand in for it with placeholder layers
    (:class:`~torch2x.report.UnsupportedWithPlaceholder`): plugin ops on TensorRT-RTX. Example::

        placeholder_ops(torch2x.build_network(model, [x], strict=False).network)  # ["mylib::scaled_tanh"]
    """
    from .interpreter.core import placeholder_meta

    ops: list = []
    for i in range(network.num_layers):
        meta = placeholder_meta(network.get_layer(i))
        if meta is not None:
            op = str(meta.get("torch2x_plugin") or network.get_layer(i).name)
            if op not in ops:
                ops.append(op)
    return ops


def _add_inputs(ctx: ConversionContext, tensors: list, names: list, profiles: list) -> None:
    ctx.begin_call("", "input")
    for name, t in zip(names, tensors):
        if t.dtype == torch.float64:
            raise TypeError(f"input {name!r} is float64, which TensorRT has no type for: pass float32 inputs")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool,
                           torch.int8, torch.uint8):
            raise TypeError(f"input {name!r} has dtype {t.dtype}, which TensorRT cannot take as an input")
        if ctx.lookup(t) is not None:
            raise ValueError(f"input {name!r} is the same tensor object as an earlier input: pass a clone")
        dims = dynamic.dynamic_dims(profiles, name) if profiles else []
        shape = tuple(-1 if d in dims else size for d, size in enumerate(t.shape))
        ctx.add_input(name, t, shape)


def _mark_outputs(ctx: ConversionContext, tracer: Tracer, tensors: list, names: list,
                  report: ConversionReport) -> None:
    ctx.begin_call("", "output")
    marked: set = set()
    inputs = {ctx.raw_network.get_input(i).name for i in range(ctx.raw_network.num_inputs)}
    for name, t in zip(names, tensors):
        if tracer.is_poisoned(t):
            raise UnsupportedOperatorError(report, f"Output {name!r} depends on them.")
        if tracer.reads_stale(t):
            report.add_unsupported("output", "", f"output {name!r} was modified in place through another view, "
                                   "which the network cannot follow; clone before the in-place op", name)
            raise UnsupportedOperatorError(report)
        itensor = ctx.lookup(t)
        if itensor is None:
            itensor = ctx.trt(t)  # an untraced output (a buffer, a constant) becomes a constant
        if t.dtype == torch.float64:
            report.add_note(f"output {name!r} is float64 in PyTorch; the network returns float32 "
                            "(TensorRT has no float64)")
        # reduced precision inside, the module's dtype outside
        itensor = ctx.cast(itensor, to_trt(network_type(t.dtype)))
        if itensor.name in marked or itensor.name in inputs or itensor.is_network_output:
            itensor = ctx.network.add_identity(itensor).get_output(0)
        itensor.name = name
        ctx.raw_network.mark_output(itensor)
        marked.add(name)


def _names(given: Optional[Sequence[str]], count: int, prefix: str) -> list:
    if given is None:
        return [f"{prefix}_{i}" for i in range(count)]
    given = list(given)
    if len(given) != count:
        raise ValueError(f"{len(given)} {prefix} names given for {count} {prefix} tensors")
    return given


def new_context(module: Any, options: dict) -> tuple:
    """``(builder, network, context)`` for a new strongly typed network under the options' precision policy."""
    builder = trt.Builder(LOGGER)
    network = flavour.create_network(builder)
    policy = PrecisionPolicy(fp16=options.get("fp16", False), bf16=options.get("bf16", False),
                             keep_fp32=options.get("keep_fp32"))
    ctx = ConversionContext(network, policy)
    if isinstance(module, torch.nn.Module):
        ctx.weight_names = {id(t): name for name, t in
                            [*module.named_parameters(remove_duplicate=False), *module.named_buffers()]}
        ctx.token_model = layout.token_model(module)
    return builder, network, ctx


def build_network(module: Any, inputs: Sequence[Any], *, fp16: bool = False, bf16: bool = False,
                  input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
                  max_workspace_size: Optional[int] = None, strict: bool = True,
                  keep_fp32: Optional[Iterable[str]] = None, progress: Optional[bool] = None,
                  int8: bool = False, calibration_data: Optional[Iterable[Any]] = None,
                  calibration_algorithm: str = "entropy", calibration_cache: Any = None,
                  dynamic_shapes: Any = None, fallback: bool = False, torch_executed_ops: Iterable[str] = (),
                  torch_executed_modules: Iterable[str] = (), min_block_size: int = 1,
                  build_options: Any = None) -> Any:
    """Trace ``module(*inputs)`` once and build the strongly typed TensorRT network.

    Example::

        net = torch2x.build_network(model.eval(), [torch.randn(1, 3, 224, 224)])
        print(net.report)
        out = net.interpret(x)   # CPU check of the network against model(x)

    ``strict=True`` raises :class:`UnsupportedOperatorError` when any traced call could
    not be converted; ``strict=False`` only when a network output depends on one, unless the converter
    left a placeholder for it (a plugin op on TensorRT-RTX): then the interpreter runs the network,
    with the op's PyTorch implementation in place of the placeholder, and ``build_engine`` refuses it.
    ``progress`` shows conversion progress over the top-level modules (default: on a terminal).
    ``dynamic_shapes`` gives inputs ranges, e.g. ``{"input_0": {0: (1, 8, 32)}}`` (see torch2x.dynamic):
    those dims are dynamic in the network, each range set is an optimization profile, and ops whose
    converter fixes a dynamic dim are reported.

    ``int8=True`` quantizes convolutions, linear layers and matrix products explicitly (Q/DQ layers,
    see :mod:`torch2x.quantization`); the rest runs in float32, or in float16 with ``fp16=True``.
    Activation ranges come from ``calibration_data`` (batches of inputs like ``inputs``, or single
    tensors; ``calibration_algorithm`` "entropy", "percentile" or "max"), saved to
    ``calibration_cache`` when it is given, or from an existing ``calibration_cache`` alone.

    ``fallback=True`` (hybrid execution, see :mod:`torch2x.hybrid`): calls that cannot be converted, and those
    named in ``torch_executed_ops`` (torch names, e.g. ``"torch.fft.rfft"`` or ``"rfft"``) or inside
    ``torch_executed_modules`` (module paths or class names), run in PyTorch between engine segments; segments
    of fewer than ``min_block_size`` converted calls run in PyTorch too. Returns a
    :class:`~torch2x.hybrid.HybridNetwork` when any call runs in PyTorch, else the plain network.

    ``build_options`` (a :class:`~torch2x.build_options.BuildOptions` or a dict of its fields) are kept for
    ``build_engine()``; they are checked against the flavour here, before anything is traced.
    """
    build_options = BuildOptions.of(build_options)
    build_options_mod.check(build_options)
    if not isinstance(inputs, (list, tuple)):
        raise TypeError("inputs must be a list or tuple of the module's positional arguments, e.g. [x]")
    if not int8 and (calibration_data is not None or calibration_cache is not None):
        raise ValueError("calibration_data and calibration_cache are for int8=True conversions")
    _check_fallback_options(fallback, torch_executed_ops, torch_executed_modules, min_block_size, int8, dynamic_shapes)
    started = time.perf_counter()
    options = {"fp16": fp16, "bf16": bf16, "keep_fp32": keep_fp32, "max_workspace_size": max_workspace_size,
               "min_block_size": min_block_size, "build_options": build_options,
               "precision": ("int8+" if int8 else "") + ("fp16" if fp16 else "bf16" if bf16 else "fp32")}
    builder, network, ctx = new_context(module, options)
    report = ConversionReport()
    in_tensors, in_spec = flatten(list(inputs))
    if not in_tensors:
        raise ValueError("inputs hold no tensor: give example tensors, e.g. [torch.randn(1, 3, 224, 224)]")
    in_names = _names(input_names, len(in_tensors), "input")
    profiles = dynamic.parse_profiles(dynamic_shapes, in_names, in_tensors)
    if fallback:  # every pass reads its own copy: a model writing into its inputs gives each pass the same
        in_tensors = [t.clone() for t in in_tensors]
        inputs = unflatten(in_spec, in_tensors)
    _add_inputs(ctx, in_tensors, in_names, profiles)
    analysis = None
    if fallback:
        from . import hybrid, steps

        steps.setup()  # whole-function steps plugins register (torchvision detection post-processing)

        analysis = hybrid.Analysis(ctx, module, report, in_tensors, torch_executed_ops, torch_executed_modules,
                                  min_block_size)
    was_training = getattr(module, "training", False)
    if was_training:
        module.eval()  # an engine is an inference graph: dropout off, batch-norm on running statistics
    top = list(module.named_children()) if isinstance(module, torch.nn.Module) else []
    shown = progress_mod.ModuleProgress(len(top)) if top and progress_mod.wanted(progress) else None
    try:
        if analysis is not None:
            # every pass must see the same calls: modules that set themselves up on their first call
            # (torchvision's MultiScaleRoIAlign computes its scales once) do it here, untraced
            with torch.no_grad():
                module(*unflatten(in_spec, [t.clone() for t in in_tensors]))
        if int8:
            ctx.quantizer = quantization.prepare(module, calibration_data=calibration_data,
                                                 calibration_algorithm=calibration_algorithm,
                                                 calibration_cache=calibration_cache)
        records = None
        if profiles:  # the same pass at other input sizes shows which output dims are dynamic
            probes = [dynamic.probe_input(profiles, n, t) for n, t in zip(in_names, in_tensors)]
            records = dynamic.probe(module, unflatten(in_spec, probes))
            if records is None:
                report.add_unsupported("dynamic shapes", "", "the model fails at other sizes inside the given "
                                       "ranges; narrow dynamic_shapes", str([tuple(p.shape) for p in probes]))
        with torch.no_grad(), Tracer(ctx, module if isinstance(module, torch.nn.Module) else None, report) as tracer:
            tracer.on_top_module_done = shown.module_done if shown else None
            tracer.probe = records
            tracer.hybrid = analysis
            outputs = module(*inputs)
        if analysis is not None and analysis.fallbacks:
            out_tensors, out_spec = flatten(outputs)
            return hybrid.finish(module, inputs, analysis, in_tensors, in_spec, out_tensors, out_spec, options,
                                 started)
    finally:
        if shown:
            shown.close()
        if was_training:
            module.train()
    out_tensors, out_spec = flatten(outputs)
    if not out_tensors:
        raise ValueError("the module returned no tensor")
    out_names = _names(output_names, len(out_tensors), "output")
    report.num_layers = network.num_layers
    if report.unsupported and strict:
        raise UnsupportedOperatorError(report)
    if ctx.quantizer is not None:
        ctx.quantizer.finalize(ctx)
    _mark_outputs(ctx, tracer, out_tensors, out_names, report)
    report.num_layers = network.num_layers
    module_outputs = [(path, [_output_name(t) for t in ts]) for path, ts, _ in tracer.module_outputs]
    converted = ConvertedNetwork(builder, network, in_names, out_names, report, in_spec, out_spec, max_workspace_size,
                                 options["precision"], module_outputs, time.perf_counter() - started, profiles,
                                 ctx._keepalive)
    converted.build_options, converted.absorbed = build_options, ctx.absorbed
    return converted


def _check_fallback_options(fallback: bool, ops: Iterable[str], modules: Iterable[str], min_block_size: int,
                            int8: bool, dynamic_shapes: Any) -> None:
    if not fallback and (list(ops) or list(modules) or min_block_size != 1):
        raise ValueError("torch_executed_ops, torch_executed_modules and min_block_size are for fallback=True "
                         "(hybrid execution)")
    if not isinstance(min_block_size, int) or min_block_size < 1:
        raise ValueError(f"min_block_size must be a positive int, got {min_block_size!r}")
    for name, values in (("torch_executed_ops", ops), ("torch_executed_modules", modules)):
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise TypeError(f"{name} takes a list of names, e.g. {name}=['torch.fft.rfft']")
    if fallback and int8:
        raise ValueError("fallback=True with int8=True is not supported yet: convert in float32/float16, or "
                         "convert the parts around the unsupported calls separately")
    if fallback and dynamic_shapes is not None:
        raise ValueError("fallback=True with dynamic_shapes is not supported yet: sizes made by PyTorch steps "
                         "are dynamic already; give fixed input shapes")


def _output_name(value: Any) -> Any:
    """A module output as a check reads it: its tensor's name, or how to read it from channel layout."""
    if value is None:
        return None
    return layout.StoredView.of(value) if isinstance(value, layout.Channels) else value.name


def report(module: Any, inputs: Sequence[Any], **options: Any) -> ConversionReport:
    """What ``torch2x`` would not be able to convert, without building an engine or raising."""
    options["strict"] = False
    try:
        return build_network(module, inputs, **options).report
    except UnsupportedOperatorError as exc:
        return exc.report
