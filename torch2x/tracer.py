"""Tracing by monkey-patching: one forward pass, every torch call seen and converted.

While a :class:`Tracer` is active on a thread, calls to ``torch.*``,
``torch.nn.functional.*`` and ``torch.Tensor`` methods/operators made on that
thread are intercepted: the real call runs (so shapes, dtypes and values are the
real ones), then, if an argument is a traced tensor, the registered converter adds
the layers. Calls made inside an intercepted call are not converted again. Other
threads always go straight to the original function, and every patch is restored
when the last active tracer exits, also on errors.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import sys
import threading
import types
from typing import Any, Optional
from collections.abc import Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode

from . import layout
from .context import ConversionContext, ConversionError
from .dtypes import FLOAT64_NOTE
from .flavour import trt
from .layout import Channels
from .registry import COMPOSITES, Call, composite_of, lookup, signature_of
from .report import ConversionReport, UnsupportedWithPlaceholder, describe_value
from .shapes import TracedInt

log = logging.getLogger("torch2x")
_local = threading.local()
_install_lock = threading.Lock()
_install_count = 0
_saved: list = []  # (owner, name, original attribute or _ABSENT)
_ABSENT = object()
_ORIGINAL_NAMES: dict[int, str] = {}  # id(original function) -> qualified name, for calls around the patches
_PATCHED_NAMES: dict[int, str] = {}  # id(installed wrapper) -> qualified name; emptied with the patches

# Tensor methods that are not computations, or whose result we must see through
# (iterating calls unbind inside; the unbind must be converted, not the iteration).
_SKIP_TENSOR = {
    "__init__", "__new__", "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__repr__",
    "__str__", "__format__", "__hash__", "__sizeof__", "__reduce__", "__reduce_ex__", "__setstate__",
    "__getstate__", "__deepcopy__", "__dir__", "__class__", "__init_subclass__", "__subclasshook__",
    "__torch_function__", "__torch_dispatch__", "__array__", "__array_wrap__", "__array_priority__",
    "__iter__", "__len__", "__contains__", "__dlpack__", "__dlpack_device__", "__reversed__",
    "__cuda_array_interface__", "register_hook", "backward", "data_ptr", "storage", "untyped_storage",
    "__eq__", "__ne__",  # replaced below by explicit wrappers (dunder comparisons are hashed by containers)
}
_TENSOR_DUNDERS = {
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__",
    "__truediv__", "__rtruediv__", "__itruediv__", "__div__", "__rdiv__", "__idiv__", "__floordiv__",
    "__rfloordiv__", "__ifloordiv__", "__mod__", "__rmod__", "__imod__", "__pow__", "__rpow__", "__ipow__",
    "__matmul__", "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__", "__and__", "__rand__",
    "__iand__", "__or__", "__ror__", "__ior__", "__xor__", "__rxor__", "__ixor__", "__lshift__",
    "__rshift__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__getitem__", "__setitem__",
    "__bool__", "__int__", "__float__", "__index__",
}
_TENSOR_PROPERTIES = {"T", "mT", "H", "mH", "data", "real", "shape"}
# Reads of a tensor's sizes: with dynamic dims they return traced sizes (torch2x.shapes) instead of ints.
_SIZE_READS = {"torch.Tensor.shape", "torch.Tensor.size", "torch.Tensor.numel"}
_SKIP_FUNCTIONS = {
    "is_tensor", "is_storage", "compile", "load", "save", "typename", "set_printoptions", "manual_seed",
    "seed", "initial_seed", "get_default_dtype", "set_default_dtype", "is_grad_enabled", "get_rng_state",
    "set_rng_state", "is_floating_point", "is_complex", "is_nonzero", "numel", "cond", "vmap",
    "has_torch_function", "has_torch_function_unary", "has_torch_function_variadic", "handle_torch_function",
    "boolean_dispatch", "assert_int_or_pair", "_assert",
}
# Private torch functions that public modules call on their fused paths (nn.MultiheadAttention in eval;
# nn.TransformerEncoder packs padded batches into nested tensors, which must be reported, not missed).
_PRIVATE_TORCH = {"_native_multi_head_attention", "_transformer_encoder_layer_fwd", "_nested_tensor_from_mask"}
# Intercepted by the bypass watch only: assigning __getitem__ on torch.Tensor gives the type a sequence
# slot, and torch then takes 0-d tensors for sequences (torch.tensor([x[0], x[1]]) fails inside torch).
_WATCH_ONLY = {"__getitem__", "__setitem__"}
# Calls whose Python result is read from tensor values: the trace freezes it.
DATA_DEPENDENT = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"}


def _is_function(obj: Any) -> bool:
    return isinstance(obj, (types.BuiltinFunctionType, types.FunctionType, types.MethodDescriptorType,
                            types.WrapperDescriptorType))


_EXTRA_TARGETS: list = []  # (owner or module name, attribute, qualified name) from register_target


def register_target(owner: Any, name: str, qualname: str) -> None:
    """Also intercept ``owner.<name>`` as ``qualname`` while tracing: for functions outside torch's
    namespaces (torchvision ops, ``torch.ops.<lib>`` custom ops), converted by ``@converter(qualname)``.

    ``owner`` is an object or a module's dotted name; a module not imported when tracing starts is
    skipped (nothing in the traced model can call it). Patch every module the callers look the name
    up in. Example::

        register_target("torchvision.ops.deform_conv", "deform_conv2d", "torchvision.ops.deform_conv2d")
    """
    _EXTRA_TARGETS.append((owner, name, qualname))


TRACEABLE: dict[str, Callable] = {}  # qualified name -> the function ``traceable`` wrapped


def traceable(qualname: str) -> Callable[[Callable], Callable]:
    """Decorator: calls of a Python function go through the tracer as ``qualname``, wherever it is
    looked up from (``from x import f`` included)."""

    def wrap(fn: Callable) -> Callable:
        TRACEABLE[qualname] = fn
        return _wrap(fn, qualname)

    return wrap


def current() -> Optional[Tracer]:
    """The tracer converting on this thread, or None (for code that drives a forward pass itself, such as
    the ``torch.compile`` backend running a Dynamo graph node by node)."""
    return getattr(_local, "tracer", None)


@contextlib.contextmanager
def module_scope(path: str) -> Iterator[None]:
    """Attribute the calls made inside to module ``path`` (layer names, report rows) when the module itself
    is not called: a Dynamo graph has inlined its modules and keeps each node's module path as metadata."""
    tracer = current()
    if tracer is None:
        yield
        return
    tracer._path_stack.append(path)
    try:
        yield
    finally:
        tracer._path_stack.pop()


def targets() -> list:
    """Every (owner, attribute, qualified name, is a property) the tracer wraps."""
    out = list(_torch_targets())
    for owner, name, qualname in _EXTRA_TARGETS:
        owner = sys.modules.get(owner) if isinstance(owner, str) else owner
        if owner is not None and getattr(owner, name, None) is not None:
            out.append((owner, name, qualname, False))
    return out


@functools.cache
def _torch_targets() -> tuple:
    """The torch namespaces' targets: scanned once per process (the scan costs more than the patching)."""
    out = []
    for owner, prefix in ((torch, "torch"), (torch.nn.functional, "torch.nn.functional"),
                          (torch.special, "torch.special"), (torch.linalg, "torch.linalg"), (torch.fft, "torch.fft")):
        for name in dir(owner):
            if (name.startswith("_") and not (owner is torch and name in _PRIVATE_TORCH)) or name in _SKIP_FUNCTIONS:
                continue
            obj = getattr(owner, name, None)
            if _is_function(obj) and not inspect.isclass(obj):
                out.append((owner, name, f"{prefix}.{name}", False))
    for name in dir(torch.Tensor):
        if name in _SKIP_TENSOR or (name.startswith("_") and name not in _TENSOR_DUNDERS):
            continue
        static = inspect.getattr_static(torch.Tensor, name, None)
        if name in _TENSOR_PROPERTIES and static is not None:
            out.append((torch.Tensor, name, f"torch.Tensor.{name}", True))
        elif _is_function(static) or isinstance(static, types.BuiltinFunctionType):
            out.append((torch.Tensor, name, f"torch.Tensor.{name}", False))
    for name in ("__eq__", "__ne__"):
        out.append((torch.Tensor, name, f"torch.Tensor.{name}", False))
    return tuple(out)


def _wrap(original: Callable, qualname: str) -> Callable:
    def wrapper(*args, **kwargs):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.busy:
            return original(*args, **kwargs)
        return tracer.on_call(original, qualname, args, kwargs)

    try:
        functools.update_wrapper(wrapper, original)
    except (AttributeError, TypeError):
        pass
    wrapper.__torch2x_original__ = original
    return wrapper


def _wrap_property(descriptor: Any, qualname: str) -> property:
    getter = descriptor.__get__

    def get(self):
        tracer = getattr(_local, "tracer", None)
        if tracer is None or tracer.busy:
            return getter(self, type(self))
        return tracer.on_call(lambda t: getter(t, type(t)), qualname, (self,), {})

    def set_(self, value):
        descriptor.__set__(self, value)

    return property(get, set_ if hasattr(descriptor, "__set__") else None, doc=getattr(descriptor, "__doc__", None))


def _install() -> None:
    global _install_count
    with _install_lock:
        if _install_count == 0:
            try:
                for owner, name, qualname, is_property in targets():
                    if owner is torch.Tensor and name in _WATCH_ONLY:
                        _ORIGINAL_NAMES.setdefault(id(getattr(owner, name)), qualname)
                        continue
                    original = owner.__dict__.get(name, _ABSENT)
                    current = inspect.getattr_static(owner, name)
                    patched = (_wrap_property(current, qualname) if is_property
                               else _wrap(getattr(owner, name), qualname))
                    _saved.append((owner, name, original))
                    if not is_property:  # Python functions hand either one to __torch_function__
                        _ORIGINAL_NAMES.setdefault(id(getattr(owner, name)), qualname)
                        _PATCHED_NAMES[id(patched)] = qualname
                    setattr(owner, name, patched)
            except BaseException:
                _restore_all()
                raise
        _install_count += 1


def _restore_all() -> None:
    _PATCHED_NAMES.clear()  # the wrappers die with the patches, and their ids may be reused
    while _saved:
        owner, name, original = _saved.pop()
        if original is _ABSENT:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
        else:
            setattr(owner, name, original)


def _uninstall() -> None:
    global _install_count
    with _install_lock:
        _install_count -= 1
        if _install_count == 0:
            _restore_all()


def leaves(value: Any) -> Iterator[Any]:
    """Every leaf of nested tuples, lists and dicts (and the bounds of slices), depth first."""
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, slice):  # x[:, :n] with a traced n
        yield from (value.start, value.stop, value.step)
    else:
        yield value


def tensor_leaves(value: Any) -> list:
    """The tensors among the leaves of nested tuples, lists and dicts."""
    return [v for v in leaves(value) if isinstance(v, torch.Tensor)]


def _short(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


def _is_inplace(qualname: str) -> bool:
    short = _short(qualname)
    if short.startswith("__"):
        return short == "__setitem__" or (short.startswith("__i")
                                          and short not in ("__index__", "__invert__", "__int__"))
    return short.endswith("_") and qualname.startswith("torch.Tensor.")


class _BypassWatch(TorchFunctionMode):
    """Sees every torch function call on this thread, however it was referenced; the tracer's own
    (patched) calls are marked busy, so what is left reached torch around the patches."""

    def __init__(self, tracer: Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.tracer.busy or getattr(_local, "tracer", None) is not self.tracer:
            return func(*args, **kwargs)
        return self.tracer.on_bypass(func, args, kwargs)


def composite_disagrees(produced: list, expected: list) -> Optional[str]:
    """Why a composite's real results ``produced`` are not PyTorch's ``expected`` ones (None when they
    agree: same count and shapes, equal integers and bools, floats within 1e-4 relative error with the
    same non-finite values)."""
    if len(produced) != len(expected):
        return f"the composite returned {len(produced)} tensors for {len(expected)} outputs"
    for p, t in zip(produced, expected):
        if p.shape != t.shape:
            return f"the composite's result has shape {tuple(p.shape)}, PyTorch's {tuple(t.shape)}"
        p = p.to(t.dtype)
        if not t.is_floating_point():
            if not torch.equal(p, t):
                return "the composite's result differs from PyTorch's on this input"
            continue
        p, t = p.double(), t.double()
        finite = torch.isfinite(t)
        if (not torch.equal(finite, torch.isfinite(p))
                or not torch.equal(p[~finite].nan_to_num(), t[~finite].nan_to_num())):
            return "the composite's non-finite values differ from PyTorch's on this input"
        scale = t[finite].norm().item()
        err = (p[finite] - t[finite]).norm().item() / (scale if scale > 0 else 1.0)
        if err > 1e-4:
            return f"the composite's result differs from PyTorch's on this input (relative error {err:.2g})"
    return None


def _checked_channels(ctx: ConversionContext, t: torch.Tensor, ch: Channels, probed: Optional[list],
                      index: int) -> Channels:
    """A converter's result in channel layout, checked against the real output as network tensors are."""
    shape = ch.canonical_shape()
    if len(shape) != t.dim() or any(d >= 0 and d != s for d, s in zip(shape, t.shape)):
        raise ConversionError(f"converter bug: network shape {shape} (channel layout), PyTorch gives {tuple(t.shape)}")
    if probed is not None:
        Tracer._check_dynamic_dims(t, types.SimpleNamespace(shape=shape), probed[index])
    if ch.itensor.dtype == trt.DataType.FLOAT and t.dtype == torch.float32:
        return ch  # (float32 results stay so until a reduced op reads them)
    return layout.cast(ctx, ch, ctx.dtype_for(t.dtype))


class Tracer:
    """Context manager that converts the torch calls of one forward pass on this thread."""

    def __init__(self, ctx: ConversionContext, module: Optional[torch.nn.Module], report: ConversionReport):
        self.ctx = ctx
        self.module = module
        self.report = report
        self.busy = False
        self.poisoned: dict[int, torch.Tensor] = {}  # outputs of unconvertible calls, and what derives from them
        self._stale_bases: dict[int, tuple] = {}  # base tensor id -> (base, ids of views written in place)
        self._path_stack: list[str] = []
        self._retired_seen = 0
        self.probe: Optional[list] = None  # (qualname, output shapes) per call at other input sizes
        self._probe_index = 0
        self.on_top_module_done: Optional[Callable[[str], None]] = None  # progress over top-level modules
        self._hooks: list = []
        self.module_outputs: list = []  # (module path, [network tensor or None], [id]) in call order
        self._in_composite: set = set()  # ops whose composite is running
        self.calls = 0  # intercepted calls so far: a call's number names it across passes of the same model
        self.hybrid: Any = None  # hybrid execution's planner for this pass (torch2x.hybrid), or None

    # --- module paths ---------------------------------------------------------------
    @property
    def module_path(self) -> str:
        return self._path_stack[-1] if self._path_stack else ""

    def _add_hooks(self) -> None:
        if self.module is None:
            return
        for path, sub in self.module.named_modules():
            def pre(mod, args, _path=path):
                if getattr(_local, "tracer", None) is self:
                    self._path_stack.append(_path)

            def post(mod, args, output, _path=path):
                if getattr(_local, "tracer", None) is self:
                    if self._path_stack and self._path_stack[-1] == _path:
                        self._path_stack.pop()
                    # network tensors as they are now: a later in-place op rebinds the torch tensor
                    if self.on_top_module_done is not None and _path and "." not in _path:
                        self.on_top_module_done(_path)
                    ts = tensor_leaves(output)
                    # (a value held in channel layout only is recorded as such: making it plain would add a layer)
                    self.module_outputs.append((_path, [self.ctx.peek(t) or self.ctx.held(t) for t in ts],
                                                [id(t) for t in ts]))

            self._hooks.append(sub.register_forward_pre_hook(pre))
            self._hooks.append(sub.register_forward_hook(post))

    def __enter__(self) -> Tracer:
        if getattr(_local, "tracer", None) is not None:
            raise RuntimeError("a torch2x conversion is already running on this thread")
        _install()
        try:
            self._add_hooks()
        except BaseException:
            _uninstall()
            raise
        _local.tracer = self
        self._watch = _BypassWatch(self)
        self._watch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._watch.__exit__(*exc)
        _local.tracer = None
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        _uninstall()

    # --- the interception ------------------------------------------------------------------
    def _poison(self, tensors: list) -> None:
        for t in tensors:
            self.poisoned[id(t)] = t

    def is_poisoned(self, t: torch.Tensor) -> bool:
        return self.poisoned.get(id(t)) is t

    def _example(self, args: tuple, kwargs: dict) -> str:
        parts = [describe_value(a) for a in args] + [f"{k}={describe_value(v)}" for k, v in kwargs.items()]
        text = ", ".join(parts)
        return text if len(text) <= 120 else text[:117] + "..."

    def _reads_stale(self, tensors: list) -> bool:
        for t in tensors:
            base = t._base if t._base is not None else t
            entry = self._stale_bases.get(id(base))
            if entry is not None and entry[0] is base and id(t) not in entry[1]:
                return True
        return False

    def on_call(self, original: Callable, qualname: str, args: tuple, kwargs: dict) -> Any:
        self.busy = True  # the real call and all bookkeeping run unobserved by the bypass watch
        try:
            out = original(*args, **kwargs)
            return self._convert(qualname, original, args, kwargs, out)
        finally:
            self.busy = False

    def on_bypass(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        """A torch function reached without passing a patched attribute (a reference taken before
        tracing, like ``from torch.nn.functional import relu``): if it computes from traced tensors,
        its result cannot be converted and must not silently become a constant."""
        self.busy = True
        try:
            out = func(*args, **kwargs)
            qualname = _ORIGINAL_NAMES.get(id(func)) or _PATCHED_NAMES.get(id(func))
            if qualname is not None:  # a patched function reached through an old reference: convert it
                return self._convert(qualname, func, args, kwargs, out)
            self._unknown_call(func, args, kwargs, out)
            return out
        finally:
            self.busy = False

    def _unknown_call(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        """A torch function the tracer has no name for computed from traced tensors: reported, poisoned."""
        outputs = tensor_leaves(out)
        if outputs and any(self.ctx.has(t) or self.is_poisoned(t) for t in tensor_leaves((args, kwargs))):
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            if self.hybrid is not None:  # nothing names it for a saved program: refused there
                self.hybrid.fallback(self, None, name, args, kwargs, outputs, "called through a reference taken "
                                     "before tracing, which torch2x cannot name")
                return
            self.report.add_unsupported(
                name, self.module_path, "called through a reference taken before tracing (e.g. "
                "`from torch.nn.functional import relu`), which torch2x cannot patch: call it through "
                "its module (F.relu, torch.relu, x.relu())", self._example(args, kwargs))
            self._poison(outputs)

    def involved(self, qualname: str, args: tuple, kwargs: dict, out: Any) -> Optional[tuple]:
        """(traced inputs, poisoned inputs, outputs) of a call, or None when it reads no traced tensor
        and no traced size. The outputs of an in-place op that returns nothing (``__setitem__``) are its
        first argument."""
        values = list(leaves((args, kwargs)))
        inputs = [v for v in values if isinstance(v, torch.Tensor)]
        traced = [t for t in inputs if self.ctx.has(t)]
        poisoned = [t for t in inputs if self.is_poisoned(t)]
        if not traced and not poisoned and not any(isinstance(v, TracedInt) for v in values):
            return None
        outputs = tensor_leaves(out)
        if _is_inplace(qualname) and not outputs:
            outputs = [args[0]]
        return traced, poisoned, outputs

    def _unsupported(self, index: Optional[int], qualname: str, args: tuple, kwargs: dict, outputs: list,
                     reason: str) -> None:
        """A call the network cannot compute: reported and its outputs poisoned, or with hybrid execution
        handed to the planner, which runs it in PyTorch."""
        if self.hybrid is not None:
            self.hybrid.fallback(self, index, qualname, args, kwargs, outputs, reason)
            return
        self.report.add_unsupported(qualname, self.module_path, reason, self._example(args, kwargs))
        self._poison(outputs)

    def _convert(self, qualname: str, original: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        ctx = self.ctx
        index = self.calls
        self.calls += 1
        probed = self._next_probe(qualname)
        if qualname in _SIZE_READS:
            if self.hybrid is not None:
                self.hybrid.size_read(self, args[0])
            return self._sizes(qualname, args, kwargs, out)
        if self.hybrid is not None and self.hybrid.skip(self, index, qualname, args, kwargs, out):
            return out
        involved = self.involved(qualname, args, kwargs, out)
        if involved is None:
            return out
        traced, poisoned, outputs = involved
        inplace = _is_inplace(qualname)
        path = self.module_path
        if not outputs:
            if _short(qualname) in DATA_DEPENDENT and traced:
                self.report.add_data_dependent(qualname, path, self._example(args, kwargs))
            return out
        if poisoned:
            # unsupported on its own account too: list it, not just the first cause
            if lookup(qualname) is None and composite_of(qualname) is None:
                self.report.add_unsupported(qualname, path, "no converter", self._example(args, kwargs))
            self._poison(outputs)
            return out
        if self._reads_stale(traced):
            self._unsupported(index, qualname, args, kwargs, outputs, "reads a tensor that was modified in place "
                              "through a view; clone before the in-place op")
            return out
        retired = [ctx.retired[id(t)][1] for t in traced if ctx.retired.get(id(t), (None,))[0] is t]
        if retired:
            self._unsupported(index, qualname, args, kwargs, outputs, retired[0])
            return out
        conv = lookup(qualname)
        if conv is None and qualname not in self._in_composite and composite_of(qualname) is not None:
            return self._composite(index, qualname, args, kwargs, out, outputs, probed)
        if conv is None:
            self._unsupported(index, qualname, args, kwargs, outputs, "no converter")
            return out
        for t in traced:
            ctx.uses[id(t)] = ctx.uses.get(id(t), 0) + 1
        call = Call(qualname, conv.signature or signature_of(original), args, kwargs, out, path)
        ctx.begin_call(path, call.op)
        ctx.fp32_region = ctx.policy.runs_in_fp32(qualname, path, conv.fp32)
        placeholder = None
        try:
            try:
                result = conv.fn(ctx, call)
            except UnsupportedWithPlaceholder as exc:  # reported below, but its outputs stand in: not poisoned
                result, placeholder = exc.outputs, exc
            ctx.fp32_region = False
            produced = list(result) if isinstance(result, (list, tuple)) else [result]
            if len(produced) != len(outputs):
                raise ConversionError(f"the converter returned {len(produced)} tensors for {len(outputs)} outputs")
            bindings = []
            for t, it in zip(outputs, produced):
                if it is None:
                    raise ConversionError("the converter did not produce every output")
                if isinstance(it, Channels):
                    bindings.append((t, _checked_channels(ctx, t, it, probed, len(bindings))))
                    if self.hybrid is not None:
                        self.hybrid.check_output(traced, args, kwargs, t, it.canonical_shape())
                    continue
                it = ctx.trt(it)
                shape = tuple(it.shape)
                if len(shape) != t.dim() or any(d >= 0 and d != s for d, s in zip(shape, t.shape)):
                    raise ConversionError(f"converter bug: network shape {shape}, PyTorch gives {tuple(t.shape)}")
                if probed is not None:
                    self._check_dynamic_dims(t, it, probed[len(bindings)])
                if self.hybrid is not None:
                    self.hybrid.check_output(traced, args, kwargs, t, shape)
                expected = ctx.dtype_for(t.dtype)
                if not (it.dtype == trt.DataType.FLOAT and t.dtype == torch.float32):
                    it = ctx.cast(it, expected)  # (float32 results stay so until a reduced op reads them)
                bindings.append((t, it))
        except Exception as exc:  # noqa: BLE001 -- any failure becomes a report entry, never a deep traceback
            log.debug("converter for %s failed at %s", qualname, path or "<root>", exc_info=True)
            reason = (str(exc) if isinstance(exc, (ConversionError, TypeError, KeyError))
                      else f"{type(exc).__name__}: {exc}")
            if (not isinstance(exc, ConversionError)
                    and any(isinstance(d, TracedInt) for t in traced for d in ctx.dims(t))):
                reason = f"cannot handle a dynamic dimension ({reason})"
            self._unsupported(index, qualname, args, kwargs, outputs, reason)
            return out
        finally:
            ctx.fp32_region = False
        ctx.note_absorbed([it for _, it in bindings])
        for t, it in bindings:
            ctx.bind(t, it)
            if t._base is not None and id(t._base) in self._stale_bases:  # a view taken after the write
                self._stale_bases[id(t._base)][1].add(id(t))
        if len(ctx.retired) != self._retired_seen:  # module outputs whose value was folded away: not comparable
            self._retired_seen = len(ctx.retired)
            gone = {id(t) for t, _ in ctx.retired.values()}
            self.module_outputs = [(p, [None if i in gone else n for i, n in zip(ids, names)], ids)
                                   for p, names, ids in self.module_outputs]
        if inplace and isinstance(args[0], torch.Tensor) and args[0]._base is not None:
            self._written_through_view(args[0])
        if placeholder is not None:
            if self.hybrid is not None:  # the op runs in PyTorch instead of its placeholder
                self.hybrid.fallback(self, index, qualname, args, kwargs, outputs, str(placeholder))
                return out
            self.report.add_unsupported(qualname, path, str(placeholder), self._example(args, kwargs), placeholder=True)
            return out
        self._note_narrowed(qualname, outputs)
        self.report.converted_calls += 1
        if self.hybrid is not None:
            self.hybrid.converted(self, index, qualname, args, kwargs, outputs)
        return out

    def _note_narrowed(self, qualname: str, outputs: list) -> None:
        """A converted call whose PyTorch result is float64 computes in float32 in the network: say so."""
        if any(t.dtype == torch.float64 for t in outputs):
            self.report.add_note(f"{qualname}: {FLOAT64_NOTE}")

    def _composite(self, index: int, qualname: str, args: tuple, kwargs: dict, out: Any, outputs: list,
                   probed: Optional[list]) -> Any:
        """Convert a call without a converter through its composite (``torch2x.composite``): run the
        composite under tracing, check its real result against PyTorch's, bind the call's outputs to the
        composite's network values. Anything that goes wrong inside reports the call itself."""
        path = self.module_path
        inner = ConversionReport()
        # The probe pass and hybrid execution's passes see the call as one: its parts convert as a unit, or
        # the whole call is unsupported (or runs in PyTorch), and they do not count in the call numbering.
        saved = self.report, self.probe, self.hybrid, self.calls
        self.report, self.probe, self.hybrid, self.busy = inner, None, None, False
        self._in_composite.add(qualname)  # a composite calling its own op reports it instead of recursing
        try:
            result, reason = composite_of(qualname)(*args, **kwargs), None
        except Exception as exc:  # noqa: BLE001 -- a composite refusing its arguments, or failing: reported
            log.debug("composite for %s failed at %s", qualname, path or "<root>", exc_info=True)
            result = None
            reason = str(exc) if isinstance(exc, ConversionError) else f"{type(exc).__name__}: {exc}"
        finally:
            (self.report, self.probe, self.hybrid, self.calls), self.busy = saved, True
            self._in_composite.discard(qualname)
        self.report.merge_notes(inner)
        produced = tensor_leaves(result)
        if reason is None and inner.data_dependent:  # a composite must not freeze the example's values
            reason = "reads tensor values in Python (" + ", ".join(inner.data_dependent) + ")"
        if reason is None:
            reason = ("; ".join(f"{u.op}: {u.reason}" for u in inner.unsupported.values()) or
                      composite_disagrees(produced, outputs))
        if reason is None and not all(self.ctx.has(p) for p in produced):
            # computed around the tracer: binding it would freeze the example's values into a constant
            reason = "its result was computed outside the tracer (calls torch2x cannot see)"
        bindings = []
        if reason is None:
            try:
                for i, (t, p) in enumerate(zip(outputs, produced)):
                    it = self.ctx.trt(p)
                    if probed is not None:
                        self._check_dynamic_dims(t, it, probed[i])
                    if not (it.dtype == trt.DataType.FLOAT and t.dtype == torch.float32):
                        it = self.ctx.cast(it, self.ctx.dtype_for(t.dtype))
                    bindings.append((t, it))
            except ConversionError as exc:
                reason = str(exc)
        if reason is not None:
            # (a reference found in torch._refs is our attempt, not something the user registered)
            reason = (f"through its composite: {reason}" if qualname in COMPOSITES else
                      f"no converter (nor does its torch._refs reference convert: {reason})")
            self._unsupported(index, qualname, args, kwargs, outputs, reason)
            return out
        for t, it in bindings:
            self.ctx.bind(t, it)
        self._note_narrowed(qualname, outputs)
        self.report.converted_calls += 1 + inner.converted_calls
        if self.hybrid is not None:
            self.hybrid.converted(self, index, qualname, args, kwargs, outputs)
        return out

    def _sizes(self, qualname: str, args: tuple, kwargs: dict, out: Any) -> Any:
        """``x.shape``, ``x.size(dim)`` or ``x.numel()`` with a traced size for each dynamic dim of ``x``."""
        if not self.ctx.has(args[0]):
            return out
        dims = self.ctx.dims(args[0])
        if not any(isinstance(d, TracedInt) for d in dims):
            return out
        if qualname == "torch.Tensor.numel":
            return math.prod(dims)
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:
            return torch.Size(dims)
        return dims[dim] if isinstance(dim, int) else tuple(dims[d] for d in dim)

    def _next_probe(self, qualname: str) -> Optional[list]:
        """The probe pass's output shapes for this call (see torch2x.dynamic), or None without a probe.
        Both passes number every call they see, so the n-th call here is the probe's n-th call."""
        if self.probe is None:
            return None
        if self._probe_index >= len(self.probe) or self.probe[self._probe_index][0] != qualname:
            log.warning("the probe pass at other input sizes took another path at %s (%s): dynamic dims are "
                        "not checked from here on", qualname, self.module_path or "<root>")
            self.probe = None
            return None
        self._probe_index += 1
        return self.probe[self._probe_index - 1][1]

    @staticmethod
    def _check_dynamic_dims(t: torch.Tensor, itensor: Any, probed: tuple) -> None:
        """Dims whose size differs at the probe's input sizes must be dynamic (-1) in the network too."""
        if len(probed) != t.dim():
            raise ConversionError(f"the output's rank changes with the input size ({t.dim()} vs {len(probed)})")
        fixed = [d for d in range(t.dim()) if probed[d] != t.shape[d] and itensor.shape[d] >= 0]
        if fixed:
            raise ConversionError(f"cannot handle a dynamic dimension: output dims {fixed} are fixed at "
                                  f"{[int(t.shape[d]) for d in fixed]} in the network but vary with the input")

    def _written_through_view(self, view: torch.Tensor) -> None:
        """An in-place op changed ``view``: write its new value into the traced base as well. Other views
        of that base taken earlier keep their old network value, so reading them is reported (and the
        base too, when the write cannot be expressed)."""
        base = view._base
        entry = self._stale_bases.setdefault(id(base), (base, set()))
        entry[1].add(id(view))
        if self.ctx.lookup(base) is None:
            return
        try:
            self.ctx.bind(base, self.ctx.write_through(view, base))
            entry[1].add(id(base))
        except ConversionError as exc:
            log.debug("cannot write %s through to its base: %s", self.module_path, exc)

    def reads_stale(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s network value missed an in-place write made through another view."""
        return self._reads_stale([tensor])
