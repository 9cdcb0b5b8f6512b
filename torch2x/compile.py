"""``torch.compile(model, backend="torch2x", options={...})``: every graph TorchDynamo captures becomes a
torch2x network; the Python code between graph breaks runs as usual.

    compiled = torch.compile(model, backend="torch2x", options={"fp16": True})
    y = compiled(x)            # TensorRT engines (TRTModule), on an NVIDIA GPU
    compiled = torch.compile(model, backend="torch2x", options={"interpret": True})
    y = compiled(x)            # the same networks run by torch2x's interpreter, on CPU
    print(torch2x.compile_report(model, x))   # graphs, graph breaks, converted and unsupported calls

The backend is found through the ``torch_dynamo_backends`` entry point, so ``import torch2x`` is not
needed. A Dynamo graph's placeholders are the frame's tensors (the network's inputs), the module's
parameters, buffers and attributes (baked into the network as constants, as ``torch2x()`` does), and
symbolic sizes (each follows the input dim it was read from). The graph runs node by node under
torch2x's tracer, so the converters apply, and each node's module path names its layers. Dynamo's dynamic
dims (``dynamic=True``, automatic dynamic after a recompilation, ``torch._dynamo.mark_dynamic``) become
dynamic dims of the network with one optimization profile. A graph is converted at its first call, and
again for a call no converted network admits (a size outside the profile, a weight changed in place);
networks and engines are cached per graph. Inference only: outputs carry no autograd history.
"""
from __future__ import annotations

import inspect
import re
import warnings
import weakref
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from . import tracer as tracer_mod
from .network import ConvertedNetwork, build_network
from .report import ConversionReport, UnsupportedOperatorError, describe_value
from .runtime import TRTModule
from .shapes import TracedInt

# options={...} keys: those of torch2x()/build_network, the keys of hybrid execution and of the engine
# cache (passed on when this torch2x takes them), and the backend's own.
CONVERSION_OPTIONS = ("fp16", "bf16", "keep_fp32", "int8", "calibration_data", "calibration_algorithm",
                      "calibration_cache", "dynamic_shapes", "strict", "max_workspace_size", "progress")
FALLBACK_OPTIONS = ("fallback", "torch_executed_ops", "torch_executed_modules", "min_block_size")
BACKEND_OPTIONS = ("interpret", "dynamic_max", "engine_cache", "cuda_graph")
_SMALL = 16  # constants up to this many elements are compared by value, others by identity and version


class GraphConversionError(RuntimeError):
    """A graph Dynamo captured could not be converted. ``.report`` (a ConversionReport, or None when the
    conversion failed otherwise) lists the calls; ``.graph`` says which graph (Dynamo's compile id
    ``frame/recompile`` and the source line)."""

    def __init__(self, message: str, report: ConversionReport | None, graph: str):
        super().__init__(message)
        self.report = report
        self.graph = graph


@dataclass
class _Slot:
    """One placeholder of a Dynamo graph: a network ``input``, a baked ``const``, a ``size`` read from an
    input's dim (``dim``: (input number, axis)), or a ``scalar`` kept at its value."""

    kind: str
    name: str
    dim: tuple = ()


@dataclass
class _Entry:
    """One conversion of a graph: what it admits, and how it runs."""

    dtypes: list
    shapes: list  # per input: the shape with None for dynamic dims
    ranges: list  # per input: {dim: (min, max)}
    const_key: tuple
    run: Callable
    converted: ConvertedNetwork | None  # the network (interpret=True and compile_report)
    report: ConversionReport
    trt_module: Any = None  # the engine's TRTModule (without interpret)

    def admits(self, inputs: list, const_key: tuple) -> bool:
        if const_key != self.const_key or len(inputs) != len(self.shapes):
            return False
        for t, dtype, shape, ranges in zip(inputs, self.dtypes, self.shapes, self.ranges, strict=False):
            if t.dtype != dtype or t.dim() != len(shape):
                return False
            for d, size in enumerate(t.shape):
                lo_hi = ranges.get(d)
                if (shape[d] is not None and size != shape[d]) or (lo_hi and not lo_hi[0] <= size <= lo_hi[1]):
                    return False
        return True


def _root(source: Any) -> tuple:
    """(root source, whether the chain reads an attribute): ``L['x']`` is an argument, ``L['self'].w``
    and ``G['t']`` are model state."""
    attr = False
    while hasattr(source, "base"):
        attr = attr or "Attr" in type(source).__name__
        source = source.base
    return source, attr


def _readable(source_name: str) -> str:
    """``L['self']._modules['layer1']._modules['0']._parameters['weight']`` -> ``layer1.0.weight``."""
    name = re.sub(r"^L\['self'\]\.?", "", source_name)
    name = re.sub(r"\._(?:modules|parameters|buffers)\['([^']*)'\]", r".\1", "." + name)
    name = re.sub(r"^\.?[LG]\['([^']*)'\]", r"\1", name.lstrip("."))
    name = re.sub(r"\['([^']*)'\]|\[(\d+)\]", lambda m: "." + (m.group(1) or m.group(2)), name)
    return name.strip(".") or "input"


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return _readable(path) if path not in ("L['self']", "") else ""


def _frames(node: torch.fx.Node) -> list:
    """(file, line, function, code) of the user frames of a node's stack trace, outermost first."""
    trace = node.meta.get("stack_trace") or ""
    return re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*([^\n]*)', trace)


def _where(frame: tuple) -> str:
    file, line, fn, code = frame
    fn = re.sub(r"^torch_dynamo_resume_in_(\w+)_at_(\d+)$", r"\1 (after line \2)", fn)  # Dynamo's resume functions
    return f"{file.rsplit('/', 1)[-1]}:{line} in {fn}: {code.strip()}"


def _hint(value: Any) -> Any:
    """The concrete value of a symbolic Dynamo example (its hint), or the value itself."""
    node = getattr(value, "node", None)
    return node.hint if node is not None and getattr(node, "hint", None) is not None else value


def _is_dynamic(size: Any) -> bool:
    """A dim Dynamo left symbolic (with ``dynamic=True`` a guard such as a linear layer's input size can
    still pin a SymInt to one value: that dim is static)."""
    return isinstance(size, torch.SymInt) and size.node.maybe_as_int() is None


def _is_symbol(size: Any) -> bool:
    return _is_dynamic(size) and getattr(size.node.expr, "is_Symbol", False)


def _symbol_range(size: torch.SymInt) -> tuple:
    """(lower, upper or None) that Dynamo's shape environment knows for a dynamic dim (mark_dynamic's
    min/max, guards such as a position table's length); None when unbounded."""
    env = size.node.shape_env
    vr = env.var_to_range.get(size.node.expr) if env is not None else None
    if vr is None:
        return 1, None
    lower = max(1, int(vr.lower)) if getattr(vr.lower, "is_Integer", False) else 1
    upper = int(vr.upper) if getattr(vr.upper, "is_Integer", False) else None  # int_oo is not an Integer
    return lower, (upper if upper is not None and upper < 2 ** 31 - 1 else None)


def _parse_options(options: dict | None) -> dict:
    options = dict(options or {})
    known = CONVERSION_OPTIONS + FALLBACK_OPTIONS + BACKEND_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"torch2x backend: unknown option(s) {unknown}; the options are {list(known)}")
    # each keyword goes to the function that does the work: build_network, or torch2x() for engines
    from .convert import torch2x as convert
    target = build_network if options.get("interpret") else convert
    accepted = inspect.signature(target).parameters
    missing = [k for k in FALLBACK_OPTIONS if k in options and k not in accepted]
    if missing:
        raise ValueError(f"torch2x backend: option(s) {missing} need hybrid execution ({target.__name__}("
                         "fallback=True) running unconvertible calls in PyTorch), which this torch2x does not "
                         "have yet. Without them a graph with an unconvertible call is refused; "
                         "torch2x.compile_report(model, *inputs) lists such calls")
    if "engine_cache" in options and not options.get("interpret") and "engine_cache" not in accepted:
        raise ValueError("torch2x backend: option 'engine_cache' needs torch2x(engine_cache=...), which this "
                         "torch2x does not have yet; engines are cached per graph within the process anyway")
    return options


class CompiledGraph:
    """What the backend returns for one Dynamo graph: converts at the first call (and for any call no
    earlier conversion admits), then runs the network. ``entries`` holds the conversions, newest last;
    ``report`` is the newest one's conversion report."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict,
                 report_only: bool = False):
        self.gm = gm
        self.options = options
        self.report_only = report_only  # compile_report: convert to report, run the graph in PyTorch
        compile_id = None
        try:
            from torch._guards import CompileContext
            compile_id = CompileContext.current_compile_id()
        except Exception:  # noqa: BLE001 -- only a label
            pass
        self.compile_id = str(compile_id) if compile_id is not None else "?"
        self.slots = self._classify(gm, list(example_inputs))
        self.paths = {n.name: _module_path(n) for n in gm.graph.nodes}
        calls = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
        frames = _frames(calls[0]) if calls else []
        # (a graph of torch's own modules, such as a compiled nn.Sequential, has no user frame: its first module)
        self.location = _where(frames[0]) if frames else \
            f"{_module_path(calls[0]) or '<root>'}: {calls[0].format_node()}" if calls else "?"
        self.num_ops = len(calls)
        self.outputs = self._output_template(gm)
        self.entries: list = []
        self.culprits: dict = {}  # op -> [graph node descriptions] of the newest conversion's unsupported calls
        _LIVE[:] = [r for r in _LIVE if r() is not None] + [weakref.ref(self)]

    # --- the graph's placeholders ------------------------------------------------------------
    @staticmethod
    def _classify(gm: torch.fx.GraphModule, examples: list) -> list:
        nodes = [n for n in gm.graph.nodes if n.op == "placeholder"]
        slots: list = []
        inputs: list = []  # (slot index, fake example) of the network's inputs
        for n, ex in zip(nodes, examples, strict=False):
            grapharg = n.meta.get("grapharg")
            source = getattr(grapharg, "source", None)
            name = _readable(source.name) if source is not None else n.name
            if isinstance(ex, torch.Tensor):
                root, attr = _root(source)
                argument = type(root).__name__ == "LocalSource" and root.local_name != "self" and not attr
                if argument and not isinstance(ex, torch.nn.Parameter):
                    inputs.append((len(slots), n.meta.get("example_value", ex)))
                    slots.append(_Slot("input", re.sub(r"\W+", "_", name)))
                else:
                    slots.append(_Slot("const", name))
            else:
                slots.append(_Slot("scalar", name))
        dims = {}  # sympy symbol -> (input number, axis)
        for k, (_, fake) in enumerate(inputs):
            for d, size in enumerate(getattr(fake, "shape", ())):
                if _is_symbol(size):
                    dims.setdefault(size.node.expr, (k, d))
        for slot, n in zip(slots, nodes, strict=False):
            ev = n.meta.get("example_value")
            if slot.kind == "scalar" and _is_symbol(ev) and ev.node.expr in dims:
                slot.kind, slot.dim = "size", dims[ev.node.expr]
        names: set = set()
        for slot in slots:  # network input names must be unique
            if slot.kind == "input":
                base, k = slot.name, 1
                while slot.name in names:
                    slot.name, k = f"{base}_{k}", k + 1
                names.add(slot.name)
        return slots

    def _output_template(self, gm: torch.fx.GraphModule) -> list:
        """Per graph output: ("tensor",), ("sym", sympy expression) or ("const", value)."""
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        template = []
        for value in torch.utils._pytree.tree_leaves(out_node.args[0]):
            ev = value.meta.get("example_value") if isinstance(value, torch.fx.Node) else value
            if isinstance(ev, torch.Tensor):
                template.append(("tensor",))
            elif isinstance(ev, (torch.SymInt, torch.SymFloat, torch.SymBool)):
                template.append(("sym", ev.node.expr, type(ev)))
            else:
                template.append(("const", ev))
        self._out_spec = torch.utils._pytree.tree_flatten(out_node.args[0])[1]
        return template

    def _symbol_values(self, args: Sequence[Any]) -> dict:
        inputs = [a for a, s in zip(args, self.slots, strict=False) if s.kind == "input"]
        values = {}
        nodes = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for slot, n, a in zip(self.slots, nodes, args, strict=False):
            ev = n.meta.get("example_value")
            if _is_symbol(ev):
                values[ev.node.expr] = inputs[slot.dim[0]].shape[slot.dim[1]] if slot.kind == "size" else a
        return values

    # --- calls -------------------------------------------------------------------------------
    def __call__(self, *args: Any) -> Any:
        inputs = [a for a, s in zip(args, self.slots, strict=False) if s.kind == "input"]
        key = self._const_key(args)
        entry = next((e for e in reversed(self.entries) if e.admits(inputs, key)), None)
        if entry is None:
            entry = self._convert(args, inputs, key)
            self.entries.append(entry)
        tensors = iter(entry.run(args, inputs))
        symbols = None
        leaves = []
        for kind, *rest in self.outputs:
            if kind == "tensor":
                leaves.append(next(tensors))
            elif kind == "sym":
                symbols = symbols if symbols is not None else self._symbol_values(args)
                expr, cls = rest
                value = expr.xreplace({s: v for s, v in symbols.items()})
                leaves.append(bool(value) if cls is torch.SymBool else float(value) if cls is torch.SymFloat
                              else int(value))
            else:
                leaves.append(rest[0])
        return torch.utils._pytree.tree_unflatten(leaves, self._out_spec)

    @property
    def report(self) -> ConversionReport | None:
        return self.entries[-1].report if self.entries else None

    def _const_key(self, args: Sequence[Any]) -> tuple:
        """What the network bakes in: weights by identity and in-place version, small constants and
        scalars by value (Dynamo passes model floats as fresh 0-d tensors at every call)."""
        key = []
        for slot, a in zip(self.slots, args, strict=False):
            if slot.kind == "const":
                if a.numel() <= _SMALL:
                    key.append((str(a.dtype), tuple(a.detach().flatten().tolist())))
                else:
                    key.append((id(a), a._version))
            elif slot.kind == "scalar":
                key.append(_hint(a))
        return tuple(key)

    def _profile(self, inputs: list) -> tuple:
        """dynamic_shapes for build_network and the ranges an entry admits, from Dynamo's dynamic dims."""
        nodes = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        fakes = [n.meta.get("example_value") for n, s in zip(nodes, self.slots, strict=False) if s.kind == "input"]
        names = [s.name for s in self.slots if s.kind == "input"]
        given = self.options.get("dynamic_shapes") or {}
        if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
            raise TypeError("options['dynamic_shapes'] takes {input name: {dim: (min, opt, max)}} under torch.compile")
        given = {k: v for k, v in given.items() if k in names}  # the others name another graph's inputs
        spec, ranges, shapes = {}, [], []
        dynamic_max = self.options.get("dynamic_max")
        for name, t, fake in zip(names, inputs, fakes, strict=False):
            dims, shape = {}, []
            sizes = getattr(fake, "shape", t.shape)
            for d, size in enumerate(sizes):
                if not _is_dynamic(size):
                    shape.append(int(t.shape[d]))
                    continue
                shape.append(None)
                lo, hi = _symbol_range(size) if _is_symbol(size) else (1, None)
                now = int(t.shape[d])
                default_hi = int(dynamic_max) if dynamic_max else max(4 * now, 16)
                hi = hi if hi is not None else max(default_hi, now)
                lo, opt, hi = min(lo, now), now, hi
                wanted = given.get(name, {}).get(d)
                if wanted is not None and wanted[0] <= now <= wanted[2]:
                    lo, opt, hi = (int(v) for v in wanted)
                dims[d] = (lo, opt, hi)
            # Dynamo specializes sizes 0 and 1 even for dynamic dims; any other fixed dim the user wants dynamic
            # means the graph was captured static: it converts at its size, and the user learns why
            static = [d for d in given.get(name, {}) if not _is_dynamic(sizes[int(d) % len(sizes)])
                      and int(t.shape[int(d)]) > 1]
            if static:
                warnings.warn(f"options['dynamic_shapes'][{name!r}] names dims {static}, which Dynamo captured with "
                              f"a fixed size in {self.label}: it converts at that size. Mark them dynamic before the "
                              f"first call (torch._dynamo.mark_dynamic(x, {static[0]}, min=..., max=...)) or use "
                              "torch.compile(..., dynamic=True)", stacklevel=2)
            if dims:
                spec[name] = dims
            ranges.append({d: (lo, hi) for d, (lo, _, hi) in dims.items()})
            shapes.append(shape)
        return spec, ranges, shapes

    def _convert(self, args: Sequence[Any], inputs: list, key: tuple) -> _Entry:
        spec, ranges, shapes = self._profile(inputs)
        if spec and self.options.get("fallback"):
            # hybrid execution takes no dynamic shapes yet: one static conversion per input signature
            spec, ranges, shapes = {}, [{} for _ in inputs], [[int(d) for d in t.shape] for t in inputs]
        entry = _Entry([t.dtype for t in inputs], shapes, ranges, key, None, None, ConversionReport())
        if not inputs or not any(k == "tensor" for k, *_ in self.outputs):
            # nothing flows from an input to a tensor output: the graph computes constants (or sizes only)
            entry.run = lambda a, _i: self._eager_tensors(a)
            return entry
        module = _GraphCall(self, args)
        options = {k: v for k, v in self.options.items() if k in CONVERSION_OPTIONS + FALLBACK_OPTIONS}
        options.setdefault("progress", False)
        options["dynamic_shapes"] = spec or None
        options["input_names"] = [s.name for s in self.slots if s.kind == "input"]
        if self.report_only:
            options["strict"] = False
        self.culprits = {}
        try:
            if self.options.get("interpret") or self.report_only:
                converted = build_network(module, list(inputs), **options)
                entry.converted, entry.report = converted, converted.report
                entry.run = (lambda a, _i: self._eager_tensors(a)) if self.report_only else \
                    (lambda _a, i: converted.interpret(*i))
            else:
                from .convert import torch2x as convert
                if "engine_cache" in self.options:
                    options["engine_cache"] = self.options["engine_cache"]
                trt_module = convert(module, list(inputs), **options)
                if isinstance(trt_module, TRTModule):  # (a HybridModule runs several engines and PyTorch steps)
                    trt_module.use_cuda_graph = bool(self.options.get("cuda_graph", False))
                entry.report, entry.trt_module = trt_module.report, trt_module
                entry.run = lambda _a, i: trt_module(*i)
        except UnsupportedOperatorError as exc:
            if self.report_only:
                entry.report = exc.report
                entry.run = lambda a, _i: self._eager_tensors(a)
                return entry
            raise GraphConversionError(self._message(exc.report, inputs), exc.report, self.label) from exc
        except Exception as exc:  # noqa: BLE001 -- any conversion failure names the graph; the cause is chained
            raise GraphConversionError(f"torch2x could not convert {self.label} "
                                       f"({self._describe(inputs)}): {type(exc).__name__}: {exc}", None,
                                       self.label) from exc
        return entry

    def _eager_tensors(self, args: Sequence[Any]) -> list:
        with torch.no_grad():
            out = self.gm(*args)
        return [v for v in torch.utils._pytree.tree_leaves(out) if isinstance(v, torch.Tensor)]

    # --- messages ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"graph {self.compile_id} ({self.location})"

    def _describe(self, inputs: list) -> str:
        names = [s.name for s in self.slots if s.kind == "input"]
        return "inputs " + ", ".join(f"{n}: {describe_value(t)}" for n, t in zip(names, inputs, strict=False))

    def _message(self, report: ConversionReport, inputs: list) -> str:
        lines = [f"torch2x cannot convert {self.label}, one of the graphs torch.compile captured "
                 f"({self._describe(inputs)}):"]
        for op, u in report.unsupported.items():
            where = self.culprits.get(op) or [", ".join(u.module_paths)]
            lines.append(f"  {op}: {u.reason}")
            lines.extend(f"      at {w}" for w in where[:3])
        lines.append("What to do: options={'fallback': True} runs such calls in PyTorch between engines (hybrid "
                     "execution); or move them out of the compiled region (call them in a function decorated with "
                     "@torch._dynamo.disable: Dynamo breaks the graph there and they run in PyTorch); or rewrite "
                     "them or register a converter (@torch2x.converter). torch2x.compile_report(model, *inputs) "
                     "lists every graph's unsupported calls.")
        return "\n".join(lines) + "\n" + str(report)

    def note_unsupported(self, node: torch.fx.Node, before: dict, report: ConversionReport) -> None:
        """Remember which graph node (and source line) made each new unsupported-call entry."""
        for op, u in report.unsupported.items():
            if u.count > before.get(op, 0):
                frames = _frames(node)
                where = _where(frames[-1]) if frames else node.format_node()
                path = self.paths.get(node.name)
                self.culprits.setdefault(op, []).append(f"{path or '<root>'} ({where})")


class _Runner(torch.fx.Interpreter):
    """Runs a Dynamo graph node by node, each under its module's path, so layers are named after the
    model's modules and unsupported calls after their graph node."""

    def __init__(self, graph: CompiledGraph):
        super().__init__(graph.gm, garbage_collect_values=False)
        self.compiled = graph  # (fx.Interpreter's own .graph is the fx graph)

    def run_node(self, n: torch.fx.Node) -> Any:
        active = tracer_mod.current()
        report = active.report if active is not None else None
        before = {op: u.count for op, u in report.unsupported.items()} if report is not None else {}
        with tracer_mod.module_scope(self.compiled.paths.get(n.name, "")):
            out = super().run_node(n)
        if report is not None and report.unsupported:
            self.compiled.note_unsupported(n, before, report)
        return out

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target is torch.Size and any(isinstance(v, TracedInt) for v in args[0]):
            return tuple(args[0])  # torch.Size would turn traced sizes into the example's ints
        return super().call_function(target, args, kwargs)


class _GraphCall(torch.nn.Module):
    """A Dynamo graph as a module of its network inputs: constants are its parameters and buffers,
    registered under the model's names (so weights are named after them), sizes follow the inputs."""

    def __init__(self, graph: CompiledGraph, args: Sequence[Any]):
        super().__init__()
        object.__setattr__(self, "_graph", graph)  # not a submodule: its path would prefix every layer
        self._fixed = {}
        for i, (slot, a) in enumerate(zip(graph.slots, args, strict=False)):
            if slot.kind == "const":
                self._fixed[i] = a
                _attach(self, slot.name, a)
            elif slot.kind == "scalar":
                self._fixed[i] = a

    def torch2x_cache_key(self) -> str:
        """For the engine cache (torch2x.engine_cache): the graph's code and fixed non-tensor arguments, which
        its weights and the source files do not show (tensor constants are parameters, hashed as such)."""
        fixed = {i: a for i, a in self._fixed.items() if not isinstance(a, torch.Tensor)}
        return self._graph.gm.code + repr(sorted(fixed.items())) + repr([s.kind for s in self._graph.slots])

    def forward(self, *inputs: torch.Tensor) -> list:
        args, it = [], iter(inputs)
        for i, slot in enumerate(self._graph.slots):
            if slot.kind == "input":
                args.append(next(it))
            elif slot.kind == "size":  # under the tracer, a dynamic dim reads as a traced size
                args.append(inputs[slot.dim[0]].shape[slot.dim[1]])
            else:
                args.append(self._fixed[i])
        out = _Runner(self._graph).run(*args)
        return [v for v in torch.utils._pytree.tree_leaves(out) if isinstance(v, torch.Tensor)]


def _attach(root: torch.nn.Module, dotted: str, tensor: torch.Tensor) -> None:
    parts = [re.sub(r"\W", "_", p) or "_" for p in dotted.split(".")]
    owner = root
    for part in parts[:-1]:
        child = owner._modules.get(part)
        if child is None:
            child = torch.nn.Module()
            owner.add_module(part, child)
        owner = child
    leaf, k = parts[-1], 1
    while hasattr(owner, leaf):
        leaf, k = f"{parts[-1]}_{k}", k + 1
    if isinstance(tensor, torch.nn.Parameter):
        owner.register_parameter(leaf, tensor)
    else:
        owner.register_buffer(leaf, tensor, persistent=False)


_LIVE: list = []  # weak references to every CompiledGraph, for graphs()


def graphs() -> list:
    """The backend's live compiled graphs in the order Dynamo compiled them (a debugging aid: each has
    ``.entries`` (conversions), ``.report``, ``.location``)."""
    _LIVE[:] = [r for r in _LIVE if r() is not None]
    return [r() for r in _LIVE]


def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None) -> Callable:
    """The TorchDynamo backend: ``torch.compile(model, backend="torch2x", options={...})``.

    ``options``: ``fp16``, ``bf16``, ``keep_fp32``, ``int8`` (with ``calibration_data`` batches of this
    graph's inputs, or ``calibration_cache``), ``strict``, ``max_workspace_size``, as for ``torch2x()``;
    ``dynamic_shapes={input name: {dim: (min, opt, max)}}`` sets the range of a dim Dynamo made dynamic
    (default: Dynamo's bounds, else [its lower bound, max(4 x the first size, 16)], or up to
    ``dynamic_max``); ``interpret=True`` runs the networks with torch2x's interpreter instead of engines;
    ``cuda_graph=True`` has the engines' TRTModules replay CUDA graphs;
    ``engine_cache`` and ``fallback`` (with ``torch_executed_ops``, ``torch_executed_modules``,
    ``min_block_size``) are passed to ``torch2x()`` when it takes them. Example::

        compiled = torch.compile(model, backend="torch2x", options={"interpret": True})
    """
    return CompiledGraph(gm, example_inputs, _parse_options(options))


backend.__name__ = "torch2x"  # what Dynamo's messages call it


def register() -> None:
    """Register ``backend="torch2x"`` with Dynamo in this process. Not needed when torch2x is installed
    (the ``torch_dynamo_backends`` entry point does it); for a source checkout on ``sys.path``."""
    from torch._dynamo.backends import registry

    registry._lazy_import()
    if "torch2x" not in registry._COMPILER_FNS:
        registry._BACKENDS.pop("torch2x", None)
        registry.register_backend(compiler_fn=backend, name="torch2x")


# ----------------------------------------------------------------------------- the summary

@dataclass
class GraphBreak:
    """Why Dynamo ended a graph, and where (``file:line in function``, and that line's code)."""

    reason: str
    location: str
    code: str = ""

    def to_dict(self) -> dict:
        return {"reason": self.reason, "location": self.location, "code": self.code}


@dataclass
class CompileReport:
    """``torch2x.compile_report``: every graph torch.compile captured with its conversion report, and every
    graph break. ``str(report)`` is a table; ``to_json()`` serializes it."""

    graphs: list = field(default_factory=list)  # CompiledGraph summaries: dicts
    graph_breaks: list = field(default_factory=list)
    reports: list = field(default_factory=list, repr=False)  # ConversionReport per graph

    @property
    def num_graphs(self) -> int:
        return len(self.graphs)

    @property
    def num_graph_breaks(self) -> int:
        return len(self.graph_breaks)

    @property
    def converted_calls(self) -> int:
        return sum(r.converted_calls for r in self.reports)

    @property
    def num_layers(self) -> int:
        return sum(r.num_layers for r in self.reports)

    @property
    def unsupported(self) -> list:
        """(graph number, UnsupportedCall) for every op that could not be converted (and does not run in
        PyTorch through hybrid execution)."""
        return [(k + 1, u) for k, r in enumerate(self.reports) if not r.segments for u in r.unsupported.values()]

    @property
    def fallback(self) -> list:
        """(graph number, UnsupportedCall) for every op that runs in PyTorch (``fallback=True``)."""
        return [(k + 1, u) for k, r in enumerate(self.reports) if r.segments for u in r.unsupported.values()]

    @property
    def ok(self) -> bool:
        return not self.unsupported

    def to_dict(self) -> dict:
        return {"ok": self.ok, "num_graphs": self.num_graphs, "num_graph_breaks": self.num_graph_breaks,
                "converted_calls": self.converted_calls, "num_layers": self.num_layers,
                "fallback": [{"graph": k, **u.to_dict()} for k, u in self.fallback],
                "graphs": [{**g, **r.to_dict()} for g, r in zip(self.graphs, self.reports, strict=False)],
                "graph_breaks": [b.to_dict() for b in self.graph_breaks]}

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        head = (f"torch2x compile report: {self.num_graphs} graph(s), {self.num_graph_breaks} graph break(s), "
                f"{self.converted_calls} calls converted into {self.num_layers} layers, "
                + ("no unsupported calls" if self.ok else f"{len(self.unsupported)} unsupported op(s)")
                + (f", {len(self.fallback)} op(s) running in PyTorch" if self.fallback else ""))
        rows = [("graph", "calls", "layers", "not converted", "inputs", "location")]
        for k, (g, r) in enumerate(zip(self.graphs, self.reports, strict=False)):
            rows.append((str(k + 1), str(r.converted_calls), str(r.num_layers),
                         ", ".join(op + (" (in PyTorch)" if r.segments else "") for op in r.unsupported) or "-",
                         g["inputs"], g["location"]))
        widths = [min(60, max(len(row[i]) for row in rows)) for i in range(len(rows[0]))]
        lines = [head]
        for k, row in enumerate(rows):
            lines.append("  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.graph_breaks:
            lines.append("graph breaks:")
            for k, b in enumerate(self.graph_breaks):
                lines.append(f"  {k + 1}. {b.location}: {b.reason}" + (f"\n       {b.code}" if b.code else ""))
        for k, r in enumerate(self.reports):
            if not r.ok:
                lines.append(f"graph {k + 1}: {r}")  # (hybrid: which calls run in PyTorch, segment by segment)
        return "\n".join(lines)

    __repr__ = __str__


def _break_reason(reason: Any) -> GraphBreak:
    text = str(getattr(reason, "reason", reason))
    first = [ln.strip() for ln in text.splitlines() if ln.strip()]
    summary = first[0] if first else text
    explanation = next((ln for ln in first if ln.startswith("Explanation:")), "")
    if summary.startswith("generic_jump"):
        summary = "data-dependent control flow (a Python `if` or loop on a tensor's value)"
    elif explanation:
        summary = f"{summary}: {explanation[len('Explanation:'):].strip()}"
    stack = getattr(reason, "user_stack", None) or []
    location, code = "?", ""
    if stack:
        frame = stack[-1]
        location, code = _where((frame.filename, frame.lineno, frame.name, frame.line or "")).split(": ", 1)
    return GraphBreak(summary if len(summary) <= 200 else summary[:197] + "...", location, code)


def compile_report(model: Callable, *inputs: Any, **options: Any) -> CompileReport:
    """What ``torch.compile(model, backend="torch2x", options=options)`` does with ``model(*inputs)``:
    the graphs Dynamo captures, each with its conversion report (converted and unsupported calls), and
    the graph breaks with their reasons, like ``torch._dynamo.explain``. Runs the model once in PyTorch
    (the graphs are converted, not run) and, like ``explain``, resets Dynamo's caches. Example::

        print(torch2x.compile_report(model, x))
        # torch2x compile report: 2 graph(s), 1 graph break(s), 9 calls converted into 8 layers, ...
    """
    from torch._dynamo.backends.debugging import ExplainWithBackend

    parsed = _parse_options({**{k: v for k, v in options.items() if k != "engine_cache"}, "interpret": True})
    made: list = []

    def recording(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        made.append(CompiledGraph(gm, example_inputs, parsed, report_only=True))
        return made[-1]

    torch._dynamo.reset()
    explainer = ExplainWithBackend(recording)
    try:
        with torch.no_grad():
            torch.compile(model, backend=explainer)(*inputs)
        out = explainer.output()
    finally:
        torch._dynamo.reset()
    result = CompileReport(graph_breaks=[_break_reason(r) for r in out.break_reasons])
    for g in made:
        nodes = [n for n in g.gm.graph.nodes if n.op == "placeholder"]
        fakes = [(s.name, n.meta.get("example_value"))
                 for s, n in zip(g.slots, nodes, strict=False) if s.kind == "input"]
        result.graphs.append({"compile_id": g.compile_id, "location": g.location, "ops": g.num_ops,
                              "inputs": ", ".join(f"{name}: {describe_value(f)}" for name, f in fakes)})
        result.reports.append(g.report or ConversionReport())
    return result


__all__ = ["backend", "register", "compile_report", "CompileReport", "CompiledGraph", "GraphBreak",
           "GraphConversionError", "graphs"]
