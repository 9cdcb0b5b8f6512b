"""The converter registry: which function converts which torch call.

Example::

    @converter("torch.nn.functional.leaky_relu", "torch.Tensor.leaky_relu",
               signature="input, negative_slope=0.01, inplace=False")
    def leaky_relu(ctx, call):
        layer = ctx.network.add_activation(ctx.trt(call.arg("input")), trt.ActivationType.LEAKY_RELU)
        layer.alpha = call.arg("negative_slope")
        return ctx.output(layer)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional
from collections.abc import Callable

_MISSING = object()


@dataclass
class Converter:
    """A registered converter for one torch name."""

    name: str
    fn: Callable
    signature: Optional[inspect.Signature]
    fp32: bool  # the op runs in float32 under a reduced-precision policy (softmax, norms, exp/log/pow...)


CONVERTERS: dict[str, Converter] = {}


def _parse_signature(text: str) -> inspect.Signature:
    namespace: dict = {}
    exec(f"def _sig({text}): pass", {"inf": float("inf")}, namespace)  # noqa: S102 (our own literal strings)
    return inspect.signature(namespace["_sig"])


def converter(*names: str, signature: Optional[str] = None, fp32: bool = False) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx, call)`` as the converter of each torch name in ``names``.

    ``signature`` is the torch signature as Python parameter text, with the tensor
    (``self`` for ``Tensor`` methods) first, named as torch names it (usually
    ``input``). Without it, the signature of the Python function behind the first
    name is used (``torch.nn.functional.*`` functions have one). ``fp32=True``
    keeps the op in float32 when the network runs in reduced precision.
    A converter may be decorated several times, for aliases with other signatures.
    """

    def register(fn: Callable) -> Callable:
        sig = _parse_signature(signature) if signature is not None else None
        for name in names:
            CONVERTERS[name] = Converter(name, fn, sig, fp32)
        return fn

    return register


COMPOSITES: dict[str, Callable] = {}


def composite(*names: str) -> Callable[[Callable], Callable]:
    """Register a plain Python function, written with torch calls and taking the op's own arguments, as
    what each torch name in ``names`` computes. When a traced call has no converter, the tracer runs the
    function under tracing (its torch calls are converted as usual) and binds the call's result to the
    network value of the function's result; the forward pass keeps PyTorch's own result, and a composite
    whose result differs from it on the example is reported instead of bound. Example::

        @composite("torch.logaddexp", "torch.Tensor.logaddexp")
        def logaddexp(input, other):
            m = torch.maximum(input, other)
            return m + torch.log1p(torch.exp(-torch.abs(input - other)))
    """

    def register(fn: Callable) -> Callable:
        for name in names:
            COMPOSITES[name] = fn
        return fn

    return register


def composite_of(name: str) -> Optional[Callable]:
    """The composite registered for a qualified torch name; else PyTorch's own reference implementation
    of the op (``torch._refs``, written with torch calls), when it has one; else None."""
    fn = COMPOSITES.get(name)
    return fn if fn is not None else _reference(name)


_REF_MODULES = {"torch": "torch._refs", "torch.Tensor": "torch._refs",
                "torch.nn.functional": "torch._refs.nn.functional", "torch.special": "torch._refs.special",
                "torch.linalg": "torch._refs.linalg", "torch.fft": "torch._refs.fft"}


def _reference(name: str) -> Optional[Callable]:
    import importlib

    owner, _, short = name.rpartition(".")
    module = _REF_MODULES.get(owner)
    if module is None or short.startswith("_") or short.endswith("_"):  # (in-place ops stay unsupported)
        return None
    try:
        fn = getattr(importlib.import_module(module), short, None)
    except ImportError:
        return None
    # a Python function written with torch calls; not an op overload (which would run the op itself again)
    return fn if inspect.isfunction(fn) else None


def lookup(name: str) -> Optional[Converter]:
    """The converter registered for a qualified torch name, or None."""
    return CONVERTERS.get(name)


class Call:
    """One intercepted torch call: its name, bound arguments, real outputs and module path."""

    def __init__(self, name: str, signature: Optional[inspect.Signature], args: tuple, kwargs: dict,
                 output: Any, module_path: str):
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.output = output
        self.module_path = module_path
        self._bound: Optional[dict] = None
        self._signature = signature

    @property
    def op(self) -> str:
        """The short op name used in layer names: ``torch.nn.functional.conv2d`` -> ``conv2d``."""
        return self.name.rsplit(".", 1)[-1].strip("_") or self.name

    def bound(self) -> dict:
        """All arguments by parameter name, defaults applied."""
        if self._bound is None:
            if self._signature is None:
                raise TypeError(f"no signature is known for {self.name}; pass signature= to @converter")
            try:
                b = self._signature.bind(*self.args, **self.kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.name}: arguments do not fit the converter's signature: {exc}") from None
            b.apply_defaults()
            self._bound = dict(b.arguments)
        return self._bound

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        """The argument named ``name`` (as torch names it), or ``default`` when absent."""
        values = self.bound()
        if name in values:
            return values[name]
        if default is _MISSING:
            raise KeyError(f"{self.name} has no argument {name!r}")
        return default

    def has(self, name: str) -> bool:
        """Whether the call binds ``name`` to something other than None."""
        return self.bound().get(name) is not None


def signature_of(original: Callable) -> Optional[inspect.Signature]:
    """The Python signature of a torch function, when it has one (``torch.nn.functional`` does)."""
    try:
        return inspect.signature(original)
    except (TypeError, ValueError):
        return None
