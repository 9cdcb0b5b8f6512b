"""Hybrid execution: calls TensorRT cannot run execute in PyTorch between TensorRT engine segments.

``build_network(model, inputs, fallback=True)`` traces the model once to plan (the *analysis* pass): every
call that cannot be converted (no converter, a converter that refuses it, a data-dependent output size, a
plugin op on TensorRT-RTX, float64 or complex values) or that the user names in ``torch_executed_ops`` /
``torch_executed_modules`` becomes a PyTorch *step*; its outputs enter the network as inputs, so what
follows still converts. Each converted call then gets the earliest segment its inputs allow (a call that
reads a step's output comes after that step), so independent work shares an engine, and segments with
fewer than ``min_block_size`` converted calls run in PyTorch too. One more pass per segment builds that
segment's own strongly typed network: its calls are converted, the values it reads from elsewhere become
its inputs and the values others read become its outputs.

The result is a program of plain data (:mod:`torch2x.steps`): engine steps and PyTorch steps over value
ids. :class:`HybridNetwork` runs it with the interpreter (a CPU check), :class:`HybridModule` with engines,
and saves it through ``state_dict`` with nothing pickled. Sizes that come from a data-dependent step (a
number of boxes after NMS) reach the next engine as dynamic dims whose optimization-profile range is what
the trace can prove (:func:`torch2x.steps.output_bounds`), not the example's value.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Callable, Iterable

import torch

from . import steps as steps_mod
from .context import ConversionContext, ConversionError
from .dtypes import to_trt
from .report import ConversionReport
from .shapes import TracedInt
from .structure import flatten, unflatten

PROGRAM_VERSION = 1
_NOT_TRT = (torch.float64, torch.complex64, torch.complex128, torch.complex32)


class HybridError(RuntimeError):
    """A call must run in PyTorch but cannot be part of a saved program, or the segments are inconsistent."""


@dataclass
class _Value:
    """A tensor the program computes: a model input, or an output of a converted call or a step."""

    producer: Optional[int]  # the record index that produces it; None for model inputs
    dtype: torch.dtype
    shape: tuple  # the example's sizes
    bounds: list  # per dim (low, high); equal for fixed dims


@dataclass
class _Record:
    """One intercepted call of the analysis pass."""

    index: int  # the tracer's call number
    qualname: str
    path: str
    torch: bool  # runs in PyTorch
    reads: list  # value ids
    produces: list  # value ids
    step: Optional[dict]  # the encoded call, or None when it cannot be saved
    why: str = ""  # why it runs in PyTorch, or why it cannot be saved
    example: str = ""
    segment: int = -1  # converted calls: its segment; steps: the segment it runs after (-1: before all)


class _ValueIds:
    """Which value (by id) a torch tensor object holds now. Keyed by ``id``, guarded by identity: an id
    reused by a new object after the old one died must not find the old value."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple] = {}

    def set(self, t: torch.Tensor, vid: int) -> None:
        self._entries[id(t)] = (t, vid)

    def get(self, t: Any) -> Optional[int]:
        entry = self._entries.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None


def _input_shape(bounds: list, t: torch.Tensor) -> tuple:
    """A network input's shape for a value of these bounds: -1 where its size varies at run time."""
    return tuple(-1 if lo != hi else s for (lo, hi), s in zip(bounds, t.shape))


def _outputs_of(qualname: str, args: tuple, out: Any) -> list:
    from .tracer import _is_inplace, tensor_leaves

    outputs = tensor_leaves(out)
    if not outputs and _is_inplace(qualname) and args and isinstance(args[0], torch.Tensor):
        outputs = [args[0]]
    return outputs


def _matches(name: str, qualname: str) -> bool:
    return name == qualname or name == qualname.rsplit(".", 1)[-1]


class Analysis:
    """The tracer's planner in the analysis pass: decides which calls run in PyTorch and records the data flow."""

    def __init__(self, ctx: ConversionContext, module: Any, report: ConversionReport, inputs: list,
                 torch_executed_ops: Iterable[str] = (), torch_executed_modules: Iterable[str] = (),
                 min_block_size: int = 1):
        self.ctx = ctx
        # converted calls are encoded as steps only when a small segment may be folded into PyTorch
        self.folding = min_block_size > 1
        self.module = module
        self.report = report
        self.ops = list(torch_executed_ops)
        self.modules = list(torch_executed_modules)
        self.values: list[_Value] = []
        self.records: dict[int, _Record] = {}
        self.ids = _ValueIds()
        self._names: dict[str, int] = {}  # network tensor name -> value id (sizes read from it)
        self.encoder = steps_mod.Encoder(self.ref_of, self._names.get)
        self.fallbacks = 0
        ctx.exact_sizes = True
        for t in inputs:
            vid = self._new_value(t, None, [(s, s) for s in t.shape])
            self._names[ctx.lookup(t).name] = vid

    # --- values -------------------------------------------------------------------------------------
    def _new_value(self, t: torch.Tensor, producer: Optional[int], bounds: list) -> int:
        self.values.append(_Value(producer, t.dtype, tuple(t.shape), bounds))
        self.ids.set(t, len(self.values) - 1)
        return len(self.values) - 1

    def ref_of(self, t: Any) -> Optional[int]:
        return self.ids.get(t)

    def bounds_of(self, t: torch.Tensor) -> list:
        vid = self.ref_of(t)
        return self.values[vid].bounds if vid is not None else [(int(s), int(s)) for s in t.shape]

    def _reads(self, args: tuple, kwargs: dict) -> list:
        from .tracer import leaves

        reads = []
        for v in leaves((args, kwargs)):
            vid = self.ref_of(v) if isinstance(v, torch.Tensor) else None
            if vid is None and isinstance(v, TracedInt):
                reads += steps_mod.references({"size": self.encoder._size(v)})
            elif vid is not None:
                reads.append(vid)
        return list(dict.fromkeys(reads))

    def _encode(self, qualname: str, args: tuple, kwargs: dict) -> tuple:
        """(encoded step or None, why it cannot be saved)."""
        from .tracer import _is_inplace

        if not steps_mod.is_allowed(qualname):
            return None, steps_mod.why_not_allowed(qualname)
        try:
            return {"fn": qualname, "args": self.encoder.encode(tuple(args)),
                    "kwargs": self.encoder.encode(dict(kwargs)), "inplace": _is_inplace(qualname)}, ""
        except steps_mod.StepError as exc:
            return None, str(exc)

    # --- the tracer's hooks --------------------------------------------------------------------------
    def size_read(self, tracer: Any, tensor: torch.Tensor) -> None:
        pass

    def skip(self, tracer: Any, index: int, qualname: str, args: tuple, kwargs: dict, out: Any) -> bool:
        """Calls that must run in PyTorch before any converter sees them: named by the user, or on float64
        and complex values (TensorRT has neither type). True: handled here."""
        from .tracer import tensor_leaves

        tensors = tensor_leaves((args, kwargs))
        # values made in PyTorch in a type the network cannot hold (complex, float64) are read from the steps
        outside = next((t for t in tensors if self.ref_of(t) is not None and not self.ctx.has(t)), None)
        if outside is None and tracer.involved(qualname, args, kwargs, out) is None:
            return False
        outputs = _outputs_of(qualname, args, out)
        path = tracer.module_path
        reason = None
        if outside is not None:
            reason = f"reads a {str(outside.dtype).replace('torch.', '')} value, which TensorRT has no type for"
        elif any(_matches(op, qualname) for op in self.ops):
            reason = "listed in torch_executed_ops"
        elif self.modules and self._forced_module(path):
            reason = f"inside module {path}, listed in torch_executed_modules"
        else:
            traced = [t for t in tensors if self.ctx.has(t)] + outputs
            odd = next((t.dtype for t in traced if t.dtype in _NOT_TRT), None)
            if odd is not None:
                reason = f"computes in {str(odd).replace('torch.', '')}, which TensorRT has no type for"
        if reason is None:
            return False
        self.fallback(tracer, index, qualname, args, kwargs, outputs, reason)
        return True

    def _forced_module(self, path: str) -> bool:
        classes = set()
        if isinstance(self.module, torch.nn.Module) and path:
            try:
                sub = self.module.get_submodule(path)
                classes = {type(sub).__name__, f"{type(sub).__module__}.{type(sub).__qualname__}"}
            except AttributeError:
                pass
        return any(path == m or path.startswith(m + ".") or m in classes for m in self.modules)

    def check_output(self, traced: list, args: tuple, kwargs: dict, t: torch.Tensor, shape: tuple) -> None:
        """Refuse a converted output that keeps fixed a size its inputs vary in (there is no probe pass at
        other sizes for data-dependent counts): an output dim equal to a dynamic input dim's example size, and
        to no fixed one, was most likely copied from the example. The call then runs in PyTorch."""
        from .tracer import leaves

        varying, fixed = set(), set()
        for x in traced:
            for d in self.ctx.dims(x):
                (varying if isinstance(d, TracedInt) else fixed).add(int(d))
        varying.update(int(v) for v in leaves((args, kwargs)) if isinstance(v, TracedInt))
        frozen = [int(s) for d, s in zip(shape, t.shape) if d >= 0 and int(s) in varying - fixed and int(s) > 1]
        if frozen:
            raise ConversionError(f"cannot handle a dynamic dimension: the output keeps sizes {frozen} fixed that "
                                  "vary with its inputs at run time")

    def converted(self, tracer: Any, index: int, qualname: str, args: tuple, kwargs: dict, outputs: list) -> None:
        reads = self._reads(args, kwargs)
        step, why = self._encode(qualname, args, kwargs) if self.folding else (None, "")
        record = _Record(index, qualname, tracer.module_path, False, reads, [], step, why)
        varying = [self.values[v].bounds for v in reads]
        for t in outputs:
            dims = self.ctx.dims(t)
            bounds = [(int(d), int(d)) if not isinstance(d, TracedInt) else _follow(int(d), varying) for d in dims]
            record.produces.append(self._new_value(t, index, bounds))
            itensor = self.ctx.peek(t)
            if itensor is not None:
                self._names[itensor.name] = record.produces[-1]
        self.records[index] = record

    def fallback(self, tracer: Any, index: Optional[int], qualname: str, args: tuple, kwargs: dict, outputs: list,
                 reason: str) -> None:
        """Run this call in PyTorch: record it as a step and give its outputs fresh network inputs."""
        path = tracer.module_path
        reason = steps_mod.WHOLE_STEPS.get(qualname, reason) if reason == "no converter" else reason
        step, why = self._encode(qualname, args, kwargs) if index is not None else (None, reason)
        if step is None:
            raise HybridError(f"{qualname} at {path or '<root>'} cannot be converted ({reason}) and cannot run in "
                              f"PyTorch inside a saved hybrid module: {why}. What to do: call a torch function with "
                              "tensor and plain arguments there, register the function with "
                              "torch2x.tracer.traceable(name) so it has a name, or rewrite it with torch ops")
        if qualname.rsplit(".", 1)[-1] == "unbind" and isinstance(args[0], torch.Tensor):
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            lo, hi = self.bounds_of(args[0])[dim]
            if lo != hi:  # the Python code after it loops over the example's count of pieces
                raise HybridError(f"{qualname} at {path or '<root>'} splits a tensor along a dim counted at run time "
                                  f"(here {len(outputs)} pieces): the Python code around it loops over the example's "
                                  "count. What to do: run the function holding the loop in PyTorch as one step, "
                                  "torch2x.tracer.register_target(module, name, qualified name) with no converter")
        bounds = steps_mod.output_bounds(qualname, args, kwargs, outputs, self.bounds_of)
        record = _Record(index, qualname, path, True, steps_mod.references(step), [], step, reason,
                         tracer._example(args, kwargs))
        for t, dims in zip(outputs, bounds):
            vid = self._new_value(t, index, dims)
            record.produces.append(vid)
            if t.dtype not in _NOT_TRT:
                self._names[self.ctx.add_input(f"v{vid}", t, _input_shape(dims, t)).name] = vid
        self.records[index] = record
        self.fallbacks += 1
        self.report.add_unsupported(qualname, path, f"runs in PyTorch: {reason}", record.example)

    # --- planning ---------------------------------------------------------------------------------------
    def plan(self, min_block_size: int) -> list:
        """Assign segments (``record.segment``); fold segments of fewer than ``min_block_size`` converted calls
        into PyTorch where every call of theirs can be saved. Returns the segment numbers in use."""
        while True:
            used = self._levels()
            small = [k for k in used if 0 < self._count(k) < min_block_size
                     and all(r.step is not None for r in self.records.values() if not r.torch and r.segment == k)]
            if not small:
                return used
            for r in self.records.values():
                if not r.torch and r.segment in small:
                    r.torch, r.why = True, f"in a segment of fewer than min_block_size={min_block_size} calls"

    def _count(self, k: int) -> int:
        return sum(1 for r in self.records.values() if not r.torch and r.segment == k)

    def _levels(self) -> list:
        level: dict[int, float] = {}  # value id -> when it is ready: k (segment k) or k + 0.5 (after it)
        for vid, v in enumerate(self.values):
            if v.producer is None:
                level[vid] = float("-inf")
        for index in sorted(self.records):
            r = self.records[index]
            ready = max([level[v] for v in r.reads], default=float("-inf"))
            if r.torch:
                r.segment = -1 if ready == float("-inf") else int(ready // 1)
                at = r.segment + 0.5
            else:
                r.segment = max(0, int(-(-ready // 1))) if ready != float("-inf") else 0
                at = r.segment
            for v in r.produces:
                level[v] = at
        return sorted({r.segment for r in self.records.values() if not r.torch})


def _follow(size: int, varying: list) -> tuple:
    """The range of a dynamic output dim: the input dim of the same example size, else up to the inputs' size."""
    for bounds in varying:
        for lo, hi in bounds:
            if lo != hi and lo <= size <= hi and (lo, hi) != (size, size):
                return lo, hi
    largest = max([math.prod(max(hi, 1) for _, hi in b) for b in varying], default=size)
    return 0, max(size, largest)


class SegmentPass:
    """The tracer's planner in the pass that builds segment ``k``: converts that segment's calls only; values
    made elsewhere become network inputs when its calls read them, and ``wanted`` values its outputs."""

    def __init__(self, ctx: ConversionContext, analysis: Analysis, k: int, inputs: list, wanted: Iterable[int]):
        self.ctx = ctx
        self.analysis = analysis
        self.k = k
        self.ids = _ValueIds()
        for vid, t in enumerate(inputs):
            self.ids.set(t, vid)
        self.wanted = set(wanted)
        self.inputs: list[int] = []  # value ids, in network input order
        # what this segment's calls read, tensors and sizes (a size read for another segment binds nothing)
        self.needed = {v for r in analysis.records.values() if not r.torch and r.segment == k for v in r.reads}
        ctx.exact_sizes = True
        self.captured: dict[int, Any] = {}  # value id -> its network tensor right after it was made

    def _ready(self, vid: int) -> bool:
        producer = self.analysis.values[vid].producer
        return producer is None or self.analysis.records[producer].segment < self.k

    def _bind_input(self, t: torch.Tensor, vid: int) -> None:
        if not self._ready(vid):
            raise HybridError(f"segment {self.k} reads value v{vid}, which is only made later: a planning bug")
        self.ctx.begin_call("", "input")
        self.ctx.add_input(f"v{vid}", t, _input_shape(self.analysis.values[vid].bounds, t))
        self.inputs.append(vid)

    def check_output(self, traced: list, args: tuple, kwargs: dict, t: torch.Tensor, shape: tuple) -> None:
        pass  # (checked in the analysis pass)

    def size_read(self, tracer: Any, t: Any) -> None:
        vid = self.ids.get(t)
        if vid in self.needed and not self.ctx.has(t) and any(lo != hi for lo, hi in self.analysis.values[vid].bounds):
            self._bind_input(t, vid)  # a size that varies at run time must be read from the tensor

    def skip(self, tracer: Any, index: int, qualname: str, args: tuple, kwargs: dict, out: Any) -> bool:
        from .tracer import leaves

        r = self.analysis.records.get(index)
        if r is None:
            return True
        if r.qualname != qualname:
            raise HybridError(f"the model took another path in the segment pass (call {index}: {qualname}, "
                              f"{r.qualname} before): its forward is not deterministic")
        if r.torch or r.segment != self.k:
            self._produced(r, _outputs_of(qualname, args, out), capture=False)
            return True
        for v in leaves((args, kwargs)):
            vid = self.ids.get(v) if isinstance(v, torch.Tensor) else None
            if vid is not None and not self.ctx.has(v):
                self._bind_input(v, vid)
        return False

    def converted(self, tracer: Any, index: int, qualname: str, args: tuple, kwargs: dict, outputs: list) -> None:
        self._produced(self.analysis.records[index], outputs, capture=True)

    def fallback(self, tracer: Any, index: Optional[int], qualname: str, args: tuple, kwargs: dict, outputs: list,
                 reason: str) -> None:
        raise HybridError(f"{qualname} at {tracer.module_path or '<root>'} converted in the analysis pass but not in "
                          f"segment {self.k}: {reason}")

    def _produced(self, r: _Record, outputs: list, capture: bool) -> None:
        if len(outputs) != len(r.produces):
            raise HybridError(f"{r.qualname} at {r.path or '<root>'} returned {len(outputs)} tensors in the segment "
                              f"pass, {len(r.produces)} before: the model's forward is not deterministic")
        for t, vid in zip(outputs, r.produces):
            self.ids.set(t, vid)
            if not capture:
                self.ctx.unbind(t)  # written elsewhere (an in-place op): read again as an input if needed
            elif vid in self.wanted:  # as it is now: a later in-place op must not change what leaves
                self.captured[vid] = self.ctx.cast(self.ctx.trt(t), to_trt(t.dtype))


def run_program(program: dict, constants: list, inputs: tuple, run_engine: Callable[[int, list], list],
                targets: Optional[list] = None) -> Any:
    """Run a hybrid program: engine steps through ``run_engine(k, tensors)``, PyTorch steps directly."""
    tensors, _ = flatten(list(inputs))
    if len(tensors) != program["num_inputs"]:
        raise ValueError(f"the hybrid module takes {program['num_inputs']} input tensors, got {len(tensors)}")
    values: dict = dict(enumerate(tensors))
    for i, step in enumerate(program["steps"]):
        if "engine" in step:
            outs = run_engine(step["engine"], [values[v] for v in step["inputs"]])
        else:
            outs = steps_mod.run_step(step, values, constants, targets[i] if targets else None)
        values.update(zip(step["outputs"], outs))
    return unflatten(program["output_spec"], [steps_mod.decode(o, values, constants) for o in program["outputs"]])


@dataclass
class HybridNetwork:
    """Engine segments (each a :class:`~torch2x.network.ConvertedNetwork`) and the PyTorch steps between them.

    ``interpret(*inputs)`` runs the whole program on CPU (segments through the interpreter),
    ``build_engines()`` builds one engine per segment, ``str(net)`` shows which calls run where and why.
    """

    segments: list
    program: dict
    constants: list
    report: ConversionReport
    records: list = field(default_factory=list, repr=False)
    conversion_seconds: float = 0.0
    min_block_size: int = 1

    def interpret(self, *inputs: Any) -> Any:
        """Run the program on CPU: engine segments with the network interpreter, PyTorch steps in PyTorch."""
        return run_program(self.program, self.constants, inputs, lambda k, xs: self.segments[k].interpret(*xs))

    def build_engines(self, progress: Optional[bool] = None) -> list:
        """One serialized engine per segment."""
        return [segment.build_engine(progress) for segment in self.segments]

    def to_module(self, engines: list) -> HybridModule:
        from .runtime import module_from_network

        return HybridModule(self.program, self.constants,
                            [module_from_network(s, e) for s, e in zip(self.segments, engines)])

    @property
    def torch_calls(self) -> int:
        """How many traced calls run in PyTorch."""
        return sum(1 for r in self.records if r.torch)

    def __str__(self) -> str:
        return str(self.report)

    __repr__ = __str__


def segment_rows(program: dict, records: list, segments: list, values: list) -> list:
    """The segment report's rows: each engine and PyTorch step in run order, with what crosses each boundary
    (``v<id> dtype[dims]``, ``?`` for a dim that varies at run time)."""
    by_index = {r.index: r for r in records}

    def value(vid: int) -> str:
        v = values[vid]
        dims = ",".join("?" if lo != hi else str(s) for s, (lo, hi) in zip(v.shape, v.bounds))
        return f"v{vid} {str(v.dtype).replace('torch.', '')}[{dims}]"

    rows = []
    for step in program["steps"]:
        if "engine" in step:
            seg = segments[step["engine"]]
            rows.append({"kind": "engine", "engine": step["engine"], "calls": seg.report.converted_calls,
                         "layers": seg.network.num_layers, "inputs": [value(v) for v in step["inputs"]],
                         "outputs": [value(v) for v in step["outputs"]]})
        else:
            r = by_index[step["call"]]
            rows.append({"kind": "pytorch", "op": step["fn"], "module_path": r.path, "reason": r.why,
                         "inputs": [value(v) for v in steps_mod.references([step["args"], step["kwargs"]])],
                         "outputs": [value(v) for v in step["outputs"]]})
    return rows


class HybridModule(torch.nn.Module):
    """TensorRT engines and the PyTorch steps between them, as an ``nn.Module`` saved through ``state_dict``.

    Example::

        model_trt = torch2x(model, [x], fallback=True)
        torch.save(model_trt.state_dict(), "model_trt.pth")
        restored = HybridModule()
        restored.load_state_dict(torch.load("model_trt.pth", weights_only=True))

    The state dict holds ``program`` (plain data: steps, value ids, nesting), ``constants.K`` (tensors the
    PyTorch steps read) and ``engines.K.*`` (each a :class:`~torch2x.runtime.TRTModule`). Loading checks the
    program and resolves every PyTorch step's function against the allow-list (:func:`torch2x.steps.resolve`).
    """

    def __init__(self, program: Optional[dict] = None, constants: Optional[list] = None,
                 engines: Optional[list] = None):
        super().__init__()
        from .runtime import TRTModule  # noqa: F401  (engines are TRTModules)

        self.program = program
        self.constants = list(constants or [])
        self.engines = torch.nn.ModuleList(engines or [])
        self._targets = _check_program(program, len(self.constants), len(self.engines)) if program else None
        self._device_constants: dict = {}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.program is None:
            raise HybridError("this HybridModule holds no program to save")
        destination[prefix + "program"] = self.program
        for k, c in enumerate(self.constants):
            destination[prefix + f"constants.{k}"] = c

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        from .runtime import TRTModule

        program = state_dict.get(prefix + "program")
        if program is None:
            missing_keys.append(prefix + "program")
            return
        count = _numbered(state_dict, prefix + "constants.{}")
        engines = _numbered(state_dict, prefix + "engines.{}.engine")
        constants = [state_dict[f"{prefix}constants.{k}"] for k in range(count)]
        if not all(isinstance(c, torch.Tensor) for c in constants):
            raise steps_mod.StepError("the saved program's constants must be tensors")
        self._targets = _check_program(program, count, engines)
        self.program, self.constants = program, constants
        self.engines = torch.nn.ModuleList([TRTModule() for _ in range(engines)])
        self._device_constants = {}

    def forward(self, *inputs: Any) -> Any:
        if self.program is None:
            raise HybridError("this HybridModule holds no program: load a state_dict first")
        device = next((t.device for t in flatten(list(inputs))[0]), torch.device("cpu"))
        if device not in self._device_constants:
            self._device_constants[device] = [c.to(device) for c in self.constants]
        return run_program(self.program, self._device_constants[device], inputs,
                           lambda k, xs: self.engines[k](*xs), self._targets)

    def extra_repr(self) -> str:
        if not self.program:
            return "empty"
        n = sum(1 for s in self.program["steps"] if "engine" not in s)
        return f"{len(self.engines)} engine(s), {n} PyTorch step(s)"


def _numbered(state_dict: dict, pattern: str) -> int:
    """How many keys ``pattern.format(0)``, ``pattern.format(1)``... the state dict holds in a row."""
    count = 0
    while pattern.format(count) in state_dict:
        count += 1
    return count


def _check_program(program: Any, constants: int, engines: int) -> list:
    """Validate a loaded program's structure; the resolved target of each PyTorch step (None for engines)."""
    def bad(what: str) -> steps_mod.StepError:
        return steps_mod.StepError(f"not a torch2x hybrid program: {what}")

    if not isinstance(program, dict) or program.get("version") != PROGRAM_VERSION:
        raise bad(f"expected a dict with version {PROGRAM_VERSION}")
    steps_mod.setup()  # functions and objects plugins register for saved programs (detection post-processing)
    for key, kind in (("num_inputs", int), ("steps", list), ("outputs", list), ("output_spec", list)):
        if not isinstance(program.get(key), kind):
            raise bad(f"{key!r} missing or not a {kind.__name__}")
    known = set(range(program["num_inputs"]))
    targets = []
    for i, step in enumerate(program["steps"]):
        if not isinstance(step, dict) or not isinstance(step.get("outputs"), list):
            raise bad(f"step {i} is malformed")
        if "engine" in step:
            if not (isinstance(step["engine"], int) and 0 <= step["engine"] < engines):
                raise bad(f"step {i} names engine {step.get('engine')!r} of {engines}")
            reads = step.get("inputs")
            targets.append(None)
        else:
            if not isinstance(step.get("fn"), str):
                raise bad(f"step {i} has no function name")
            targets.append(steps_mod.resolve(step["fn"]))
            for name in steps_mod.classes([step.get("args"), step.get("kwargs")]):
                if not steps_mod.is_registered_object(name):
                    raise steps_mod.StepError(f"step {i} takes an object {name!r} that no module registered in this "
                                              "process (torch2x.steps.register_plain_object); refusing to load it")
            reads = steps_mod.references([step.get("args"), step.get("kwargs")])
        if not isinstance(reads, list) or any(v not in known for v in reads):
            raise bad(f"step {i} reads a value no earlier step makes")
        _check_constants([step.get("args"), step.get("kwargs")], constants, bad)
        known.update(step["outputs"])
    if any(v not in known for v in steps_mod.references(program["outputs"])):
        raise bad("an output is a value no step makes")
    _check_constants(program["outputs"], constants, bad)
    return targets


def _check_constants(value: Any, count: int, bad: Callable) -> None:
    if isinstance(value, dict):
        for kind, body in value.items():
            if kind == "const" and not (isinstance(body, int) and 0 <= body < count):
                raise bad(f"a step reads constant {body!r} of {count}")
            if kind != "const":
                _check_constants(body, count, bad)
    elif isinstance(value, list):
        for v in value:
            _check_constants(v, count, bad)


def finish(module: Any, inputs: list, analysis: Analysis, in_tensors: list, in_spec: Any, out_tensors: list,
           out_spec: Any, options: dict, started: float) -> HybridNetwork:
    """Plan the segments of an analysis pass, build each segment's network, and assemble the program."""
    used = analysis.plan(options.get("min_block_size", 1))
    records = [analysis.records[i] for i in sorted(analysis.records)]
    outputs = [analysis.encoder.encode(t) for t in out_tensors]
    wanted: dict[int, set] = {k: set() for k in used}

    def segment_of(vid: int) -> Optional[int]:
        producer = analysis.values[vid].producer
        r = analysis.records.get(producer) if producer is not None else None
        return r.segment if r is not None and not r.torch else None

    for r in records:
        for vid in r.reads:
            s = segment_of(vid)
            if s is not None and (r.torch or r.segment != s):
                wanted[s].add(vid)
    for vid in steps_mod.references(outputs):
        s = segment_of(vid)
        if s is not None:
            wanted[s].add(vid)
    segments, program_steps = [], []
    for k in [-1, *used]:
        if k >= 0:
            net, seg_inputs, seg_outputs = _segment_network(module, inputs, analysis, k, sorted(wanted[k]), in_tensors,
                                                            in_spec, options)
            program_steps.append({"engine": len(segments), "inputs": seg_inputs, "outputs": seg_outputs})
            segments.append(net)
        for r in records:
            if r.torch and r.segment == k:
                program_steps.append({**r.step, "outputs": list(r.produces), "call": r.index})
    program = {"version": PROGRAM_VERSION, "num_inputs": len(in_tensors), "steps": program_steps,
               "outputs": outputs, "output_spec": out_spec}
    constants = _used_constants(program, analysis.encoder.constants)
    for r in records:  # the report: every call in PyTorch, also those folded by min_block_size
        if r.torch and r.why.startswith("in a segment of fewer"):
            analysis.report.add_unsupported(r.qualname, r.path, f"runs in PyTorch: {r.why}", "")
    analysis.report.num_layers = sum(s.network.num_layers for s in segments)
    analysis.report.segments = segment_rows(program, records, segments, analysis.values)
    return HybridNetwork(segments, program, constants, analysis.report, records, time.perf_counter() - started,
                         options.get("min_block_size", 1))


def _used_constants(program: dict, constants: list) -> list:
    """Renumber the constants the program reads (converted calls encoded for folding read others)."""
    remap: dict[int, int] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"const"}:
                remap.setdefault(value["const"], len(remap))
                return {"const": remap[value["const"]]}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    program["steps"] = [{k: (walk(v) if k in ("args", "kwargs") else v) for k, v in s.items()}
                        for s in program["steps"]]
    program["outputs"] = walk(program["outputs"])
    order = sorted(remap, key=remap.get)
    return [constants[i].clone().contiguous() for i in order]


def _segment_network(module: Any, inputs: list, analysis: Analysis, k: int, wanted: list, in_tensors: list,
                     in_spec: Any, options: dict) -> tuple:
    """One more forward pass that converts segment ``k``'s calls into their own network."""
    from .network import ConvertedNetwork, new_context
    from .tracer import Tracer

    started = time.perf_counter()
    builder, network, ctx = new_context(module, options)
    report = ConversionReport()
    clones = [t.clone() for t in in_tensors]
    planner = SegmentPass(ctx, analysis, k, clones, wanted)
    with torch.no_grad(), Tracer(ctx, module if isinstance(module, torch.nn.Module) else None, report) as tracer:
        tracer.hybrid = planner
        module(*unflatten(in_spec, clones))
    ctx.begin_call("", "output")
    out_names = []
    for vid in wanted:
        itensor = planner.captured.get(vid)
        if itensor is None:
            raise HybridError(f"segment {k} did not make value v{vid}: a planning bug")
        if itensor.is_network_input or itensor.is_network_output:
            itensor = ctx.network.add_identity(itensor).get_output(0)
        itensor.name = f"v{vid}"
        network.mark_output(itensor)
        out_names.append(itensor.name)
    in_names = [f"v{vid}" for vid in planner.inputs]
    ranges = {}
    for vid, name in zip(planner.inputs, in_names):
        bounds = analysis.values[vid].bounds
        if any(lo != hi for lo, hi in bounds):
            opt = tuple(analysis.values[vid].shape)
            ranges[name] = (tuple(lo for lo, _ in bounds), opt, tuple(hi for _, hi in bounds))
    converted = ConvertedNetwork(builder, network, in_names, out_names, report, _flat_spec(len(in_names)),
                                 _flat_spec(len(out_names)), options.get("max_workspace_size"),
                                 options.get("precision", "fp32"), [],
                                 time.perf_counter() - started, [ranges] if ranges else [], ctx._keepalive)
    if options.get("build_options") is not None:  # every segment's engine is built with the conversion's options
        converted.build_options = options["build_options"]
    return converted, list(planner.inputs), list(wanted)


def _flat_spec(count: int) -> list:
    return ["list", [["tensor", i] for i in range(count)]]

