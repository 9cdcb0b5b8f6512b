"""PyTorch steps of a hybrid module as plain data: a named function, its encoded arguments, its outputs.

A step is saved as ``{"fn": qualified name, "args": ..., "kwargs": ..., "outputs": [value ids]}`` where
tensors are references (``{"ref": id}``: a model input or an earlier step's output) or constants kept as
tensors beside the program (``{"const": k}``), sizes read from data-dependent tensors are recipes over
references (``{"size": ...}``), and everything else is a plain value tagged with its type. Nothing is
pickled: on load the name is resolved against an allow-list (:func:`resolve`), the functions the tracer
intercepts: ``torch.*``, ``torch.nn.functional.*``, ``torch.special/linalg/fft.*``, ``torch.Tensor``
methods, and names registered with :func:`torch2x.tracer.register_target` or ``traceable`` (torchvision
ops, ``plugin_op``s) in the loading process. Example::

    encoder = Encoder(ref_of={id(x): 0})
    step = {"fn": "torch.fft.rfft", "args": encoder.encode((x,)), "kwargs": encoder.encode({}), "outputs": [1]}
    run_step(step, values={0: x}, constants=encoder.constants)   # -> torch.fft.rfft(x)
"""
from __future__ import annotations

import math
from typing import Any, Optional
from collections.abc import Callable

import torch

from .shapes import TracedInt


class StepError(ValueError):
    """A PyTorch step cannot be saved (an argument without a plain form) or loaded (a name outside the
    allow-list, a malformed entry)."""


# --- encoding -----------------------------------------------------------------------------------
_DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16, torch.int32,
    torch.int64, torch.bool, torch.complex64, torch.complex128)}


# Objects a step may take as plain data (a torchvision detection head passed as a method's ``self``):
# type -> (name, to_plain), name -> from_plain. See register_plain_object.
_PLAIN_TYPES: dict = {}
_PLAIN_BUILDERS: dict = {}
# Steps whose outputs' first dim a rule bounds (data-dependent functions run whole): qualname -> rule.
STEP_BOUNDS: dict = {}


def register_plain_object(cls: type, name: str, to_plain: Callable[[Any], Any],
                          from_plain: Callable[[Any], Any]) -> None:
    """Let steps take instances of ``cls`` as arguments: saved as ``{"object": [name, to_plain(obj)]}`` (plain
    data only) and rebuilt on load with ``from_plain(data)``. Example (torch2x.plugins.detection)::

        register_plain_object(RoIHeads, "torchvision RoIHeads.postprocess_detections self",
                              lambda m: self_state(step, m), lambda state: minimal_self(step, state))
    """
    _PLAIN_TYPES[cls] = (name, to_plain)
    _PLAIN_BUILDERS[name] = from_plain


_SETUP: list = []  # registrations made when hybrid execution first needs them (see on_demand)


def on_demand(register: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``register()`` (idempotent: it may run more than once) before the first hybrid conversion or
    saved-program load of this process, not at import: e.g. intercepting torchvision's detection
    post-processing as whole steps, which imports torchvision. Returns ``register``."""
    _SETUP.append(register)
    return register


def setup() -> None:
    """Make every :func:`on_demand` registration. Hybrid conversions and saved-program loads call this each
    time: the registrations are idempotent, and one may have been undone since (a context manager that
    intercepts the same functions for a while)."""
    for register in _SETUP:
        register()


WHOLE_STEPS: dict[str, str] = {}  # qualname -> why a registered function runs whole in PyTorch


def register_whole_step(qualname: str, why: str) -> None:
    """``qualname`` (a function the tracer intercepts, with no converter) runs whole in PyTorch because
    ``why``: the reason the hybrid report gives instead of "no converter"."""
    WHOLE_STEPS[qualname] = why


def register_step_bound(qualname: str, rule: Callable[[tuple, dict], int]) -> None:
    """``rule(args, kwargs)`` bounds dim 0 of the outputs of the step ``qualname`` that vary with the data
    (a function run whole in PyTorch, whose output count no per-op rule knows)."""
    STEP_BOUNDS[qualname] = rule


class Encoder:
    """Turns call arguments into plain data. ``ref_of(tensor)`` gives the value id of a tensor computed
    by the traced program (or None: the tensor is a constant and is stored in ``constants``);
    ``size_ref(network tensor name)`` the value id behind a traced size's dim."""

    def __init__(self, ref_of: Callable[[torch.Tensor], Optional[int]],
                 size_ref: Optional[Callable[[str], Optional[int]]] = None):
        self.ref_of = ref_of
        self.size_ref = size_ref or (lambda name: None)
        self.constants: list = []
        self._constant_ids: dict[int, int] = {}

    def encode(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            ref = self.ref_of(value)
            if ref is not None:
                return {"ref": ref}
            if id(value) not in self._constant_ids:
                self._constant_ids[id(value)] = len(self.constants)
                self.constants.append(value.detach())
            return {"const": self._constant_ids[id(value)]}
        if isinstance(value, TracedInt):
            return {"size": self._size(value)}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, torch.Size):
            return {"shape": [self.encode(v) for v in value]}
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return {"list": [self.encode(v) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": [[k, self.encode(v)] for k, v in value.items()]}
        if isinstance(value, slice):
            return {"slice": [self.encode(value.start), self.encode(value.stop), self.encode(value.step)]}
        if value is Ellipsis:
            return {"ellipsis": True}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).replace("torch.", "")}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if isinstance(value, (torch.memory_format, torch.layout)):
            return {"torch": str(value).replace("torch.", "")}
        if type(value) in _PLAIN_TYPES:
            name, to_plain = _PLAIN_TYPES[type(value)]
            return {"object": [name, self.encode(to_plain(value))]}
        raise StepError(f"an argument of type {type(value).__name__} ({_short_repr(value)}) has no plain form")

    def _size(self, size: Any) -> Any:
        if not isinstance(size, TracedInt):
            return int(size)
        kind, a, b = size.expr
        if kind == "dim":
            ref = self.size_ref(a.name)
            if ref is None:  # a size of an intermediate network tensor: the example's value is all we know
                return int(size)
            return ["dim", ref, int(b)]
        return [kind, self._size(a), self._size(b)]


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decode(value: Any, values: dict, constants: list) -> Any:
    """The inverse of :meth:`Encoder.encode`, reading references from ``values`` (value id -> tensor)."""
    if not isinstance(value, dict):
        return value
    (kind, body), = value.items()
    if kind == "ref":
        return values[body]
    if kind == "const":
        return constants[body]
    if kind == "size":
        return _size_value(body, values)
    if kind == "float":
        return float(body)
    if kind == "shape":
        return torch.Size([decode(v, values, constants) for v in body])
    if kind == "tuple":
        return tuple(decode(v, values, constants) for v in body)
    if kind == "list":
        return [decode(v, values, constants) for v in body]
    if kind == "dict":
        return {k: decode(v, values, constants) for k, v in body}
    if kind == "slice":
        return slice(*(decode(v, values, constants) for v in body))
    if kind == "ellipsis":
        return Ellipsis
    if kind == "dtype" and body in _DTYPES:
        return _DTYPES[body]
    if kind == "device":
        return torch.device(body)
    if kind == "torch" and isinstance(getattr(torch, body, None), (torch.memory_format, torch.layout)):
        return getattr(torch, body)
    if kind == "object" and isinstance(body, list) and len(body) == 2:
        if body[0] not in _PLAIN_BUILDERS:
            raise StepError(f"the saved program takes an object {body[0]!r} that no module registered in this process")
        return _PLAIN_BUILDERS[body[0]](decode(body[1], values, constants))
    raise StepError(f"malformed step argument {_short_repr(value)}")


_SIZE_OPS = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__, "floordiv": int.__floordiv__,
             "mod": int.__mod__, "min": min, "max": max}


def _size_value(recipe: Any, values: dict) -> int:
    if isinstance(recipe, int):
        return recipe
    kind, a, b = recipe
    if kind == "dim":
        return int(values[a].shape[b])
    if kind not in _SIZE_OPS:
        raise StepError(f"malformed size recipe {recipe!r}")
    return _SIZE_OPS[kind](_size_value(a, values), _size_value(b, values))


def classes(value: Any) -> list:
    """The names of the plain objects an encoded argument rebuilds (see :func:`register_plain_object`)."""
    if isinstance(value, dict):
        own = [value["object"][0]] if isinstance(value.get("object"), list) and value["object"] else []
        return own + [c for v in value.values() for c in classes(v)]
    if isinstance(value, list):
        return [c for v in value for c in classes(v)]
    return []


def references(value: Any) -> list:
    """The value ids an encoded argument reads (tensors and the tensors behind sizes)."""
    out: list = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for kind, body in v.items():
                if kind == "ref":
                    out.append(body)
                elif kind == "size":
                    walk_size(body)
                elif kind != "const":
                    walk(body)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    def walk_size(recipe: Any) -> None:
        if isinstance(recipe, list):
            if recipe[0] == "dim":
                out.append(recipe[1])
            else:
                walk_size(recipe[1])
                walk_size(recipe[2])

    walk(value)
    return out


# --- the allow-list --------------------------------------------------------------------------------
_ALLOWED: dict = {}  # (registered targets, traceable names) -> the table they give


def _allowed() -> dict:
    """Qualified name -> (kind, callable or attribute name): what a saved step may call."""
    from . import tracer

    import sys

    # (a module registered by name counts once it is imported)
    key = (len(tracer.TRACEABLE), tuple(not isinstance(owner, str) or owner in sys.modules
                                        for owner, _, _ in tracer._EXTRA_TARGETS))
    if key not in _ALLOWED:
        _ALLOWED.clear()
        _ALLOWED[key] = _allowed_now()
    return _ALLOWED[key]


def _allowed_now() -> dict:
    import types

    from . import tracer

    table: dict = {}
    for owner, name, qualname, is_property in tracer.targets():
        if not isinstance(owner, (type, types.ModuleType, torch._ops._OpNamespace)):
            continue  # a method of one object: another process cannot find that object by name
        if is_property:
            table[qualname] = ("property", name)
        else:
            fn = owner.__dict__.get(name) if isinstance(owner, type) else None
            fn = fn if fn is not None else getattr(owner, name)
            table[qualname] = ("call", getattr(fn, "__torch2x_original__", fn))
    for qualname, fn in tracer.TRACEABLE.items():
        if _named(fn):
            table[qualname] = ("call", fn)
    return table


def _named(fn: Any) -> bool:
    """A module-level function (not a lambda, a closure or a method of an object): found again by name."""
    qualname = getattr(fn, "__qualname__", "")
    return callable(fn) and "<" not in qualname and getattr(fn, "__self__", None) is None


def is_registered_object(name: str) -> bool:
    """Whether objects saved under ``name`` can be rebuilt in this process."""
    return name in _PLAIN_BUILDERS


def is_allowed(qualname: str) -> bool:
    """Whether a step calling ``qualname`` can be saved and loaded in this process."""
    return qualname in _allowed()


def why_not_allowed(qualname: str) -> str:
    """Why ``qualname`` cannot be a saved step (for the conversion's error)."""
    from . import tracer

    fn = tracer.TRACEABLE.get(qualname)
    if fn is not None and not _named(fn):
        return (f"{qualname} wraps {getattr(fn, '__qualname__', fn)!r}, a lambda, closure or bound method, which "
                "another process cannot find by name")
    return f"{qualname} is a method of one object, or not a function torch2x can name in a saved program"


def resolve(qualname: str) -> tuple:
    """``(kind, target)`` for a saved step's function name, or :class:`StepError` when it is not allowed."""
    entry = _allowed().get(qualname)
    if entry is None:
        raise StepError(f"the saved program calls {qualname!r}, which is not a torch function, a Tensor method or a "
                        "name registered with torch2x (register_target, traceable, plugin_op) in this process; "
                        "refusing to load it (import the module that registers it first, if it is yours)")
    return entry


def run_step(step: dict, values: dict, constants: list, target: Optional[tuple] = None) -> list:
    """Run one saved step: call its function on the decoded arguments; returns its tensor outputs in order."""
    kind, fn = target or resolve(step["fn"])
    args = decode(step["args"], values, constants)
    kwargs = decode(step["kwargs"], values, constants)
    if step.get("inplace") and args and isinstance(args[0], torch.Tensor):
        args = (args[0].clone(), *args[1:])  # the value before the write stays readable under its own id
    if kind == "property":
        out = getattr(args[0], fn)
    else:
        out = fn(*args, **kwargs)
    from .tracer import tensor_leaves

    outputs = tensor_leaves(out)
    if step.get("inplace") and not outputs:
        outputs = [args[0]]
    if len(outputs) != len(step["outputs"]):
        raise StepError(f"{step['fn']} returned {len(outputs)} tensors, "
                        f"the saved program expects {len(step['outputs'])}")
    return outputs


# --- sizes a data-dependent step can produce --------------------------------------------------------
_NUMEL_BOUNDED = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "where", "nonzero_static"}
_BOXES_BOUNDED = {"nms", "batched_nms"}


def output_bounds(qualname: str, args: tuple, kwargs: dict, outputs: list, bounds_of: Callable) -> list:
    """Per output, per dim, ``(low, high)``: the sizes this step's outputs can take at run time.

    ``bounds_of(tensor)`` gives an input's own per-dim bounds. A data-dependent op's varying dim is bounded
    by what the op can prove: ``nonzero``/``masked_select``/``unique``/``where(cond)`` by the input's element
    count, ``nms``/``batched_nms`` by the number of boxes, boolean-mask indexing by the mask's element count.
    Any other output dim equal to a varying input dim (the same example size) follows that dim; the rest
    are fixed at the example's size.
    """
    from .tracer import leaves

    tensors = [v for v in leaves((args, kwargs)) if isinstance(v, torch.Tensor)]
    short = qualname.rsplit(".", 1)[-1]
    varying: dict[int, tuple] = {}
    for t in tensors:
        for size, (lo, hi) in zip(t.shape, bounds_of(t)):
            if lo != hi:
                low, high = varying.get(int(size), (lo, hi))
                varying[int(size)] = (min(low, lo), max(high, hi))
    data_dim = None  # (which dim of each output varies with the data, its upper bound)
    if short in _NUMEL_BOUNDED and not (short == "where" and len(args) + len(kwargs) > 1):
        data_dim = (0, max((_max_numel(t, bounds_of) for t in tensors), default=0))
    elif short in _BOXES_BOUNDED and tensors:
        data_dim = (0, bounds_of(tensors[0])[0][1])
    elif qualname in STEP_BOUNDS:
        data_dim = (0, int(STEP_BOUNDS[qualname](args, kwargs)))
    elif short in ("__getitem__", "index") and len(args) > 1:
        data_dim = _mask_dim(args[0], args[1], bounds_of)
    result = []
    for t in outputs:
        dims = []
        for d, size in enumerate(t.shape):
            if data_dim is not None and d == data_dim[0]:
                dims.append((0, max(int(size), data_dim[1])))
            else:
                dims.append(varying.get(int(size), (int(size), int(size))))
        result.append(dims)
    return result


def _max_numel(t: torch.Tensor, bounds_of: Callable) -> int:
    return math.prod(hi for _, hi in bounds_of(t))


def _mask_dim(x: Any, index: Any, bounds_of: Callable) -> Optional[tuple]:
    """``x[..., mask]``: the output dim a boolean mask becomes, bounded by the mask's element count."""
    index = index if isinstance(index, tuple) else (index,)
    position = 0
    for item in index:
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            return position, _max_numel(item, bounds_of)
        if item is None or isinstance(item, (slice, torch.Tensor)):
            position += 1
        elif item is Ellipsis:
            return None
    return None
