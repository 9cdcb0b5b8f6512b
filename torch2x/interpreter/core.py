"""Execute a TensorRT network definition layer by layer with PyTorch.

The interpreter reads every layer back from the real ``INetworkDefinition``
(``flavour.concrete_layer`` gives the layer its concrete class) and knows nothing
about how the network was built. Layer semantics live in ``rules_*.py``: one
function per ``LayerType``, registered with :func:`rule`.
"""
from __future__ import annotations

import json
from typing import Optional, Union
from collections.abc import Callable, Iterable, Sequence

import torch

from ..dtypes import to_torch
from ..flavour import concrete_layer, trt

Tensor = torch.Tensor
RuleOutput = Union[Tensor, Sequence[Tensor]]
Rule = Callable[["trt.ILayer", list, "Env"], RuleOutput]

RULES: dict = {}
# The RULES key of placeholder layers (see placeholder_meta), which run on other tensors than their inputs.
PLACEHOLDER = "placeholder"


def layer_type(layer: trt.ILayer) -> trt.LayerType:
    """The ``LayerType`` of a layer, even on classes whose own ``type`` attribute means something else.

    ``IActivationLayer.type`` and ``IPoolingLayer.type`` shadow ``ILayer.type`` with the
    activation / pooling kind once the layer has its concrete class.
    """
    return trt.ILayer.type.__get__(layer)


class UnsupportedLayerError(NotImplementedError):
    """The interpreter has no rule for a layer (or for one setting of it)."""

    def __init__(self, layer: trt.ILayer, detail: str = ""):
        self.layer_name = layer.name
        self.layer_type = str(layer_type(layer)).split(".")[-1]
        msg = f"the interpreter cannot run layer {layer.name!r} of type {self.layer_type}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class InterpreterInputError(ValueError):
    """The inputs given to :func:`interpret` do not fit the network's declared inputs."""


class LayerExecutionError(RuntimeError):
    """A rule failed, or produced a shape that contradicts TensorRT's own shape inference."""


def rule(*layer_types: trt.LayerType) -> Callable[[Rule], Rule]:
    """Register the function that executes layers of these types.

    A rule is ``fn(layer, inputs, env) -> tensor or list of tensors``: ``layer`` has
    its concrete class, ``inputs[k]`` is the value of ``layer.get_input(k)`` (``None``
    for an absent optional input). The interpreter casts each output to the dtype
    TensorRT declares for it, so rules may compute in any convenient dtype.
    """

    def register(fn: Rule) -> Rule:
        for layer_type in layer_types:
            RULES[layer_type] = fn
        return fn

    return register


class Env:
    """What a rule may need beyond its inputs: the device, and a per-layer cache of weights."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cache: dict = {}

    def cached(self, layer: trt.ILayer, key: str, make: Callable[[], Tensor]) -> Tensor:
        """``make()`` once per layer and key (weights read back from TensorRT, moved to the device)."""
        k = (layer.name, key)
        if k not in self._cache:
            self._cache[k] = make()
        return self._cache[k]

    def weights(self, layer: trt.ILayer, attr: str, shape: Optional[Sequence[int]] = None) -> Optional[Tensor]:
        """A layer's ``trt.Weights``/numpy attribute as a torch tensor on the device (``None`` if empty)."""

        def make():
            value = getattr(layer, attr)
            array = value.numpy() if hasattr(value, "numpy") else value
            if array is None or getattr(array, "size", 0) == 0:
                return None
            t = torch.from_numpy(array.copy()).to(self.device)
            return t.reshape(shape) if shape is not None else t

        return self.cached(layer, attr, make)


def placeholder_meta(layer: trt.ILayer) -> Optional[dict]:
    """The metadata of a placeholder layer as a dict, or None for any other layer.

    A converter that cannot express a call on this TensorRT (a plugin op on TensorRT-RTX) may add a
    layer of the call's output shape and type carrying JSON ``metadata`` such as
    ``{"placeholder": true, "inputs": ["lin/linear:0"], ...}``. The interpreter runs it with the rule
    registered for :data:`PLACEHOLDER`, on the values of the tensors named in ``inputs`` instead of the
    layer's own inputs; engine builds refuse such networks. Example::

        placeholder_meta(layer)  # {"placeholder": True, "inputs": [...], "torch2x_plugin": "ns::op", ...}
    """
    text = getattr(layer, "metadata", "")  # ILayer.metadata: TensorRT 10.0+
    if not text or '"placeholder"' not in text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("placeholder") is True else None


def _input_names(layer: trt.ILayer) -> list:
    """The names of the tensors a layer reads (None for absent optional inputs)."""
    meta = placeholder_meta(layer)
    if meta is not None:
        return list(meta.get("inputs", []))
    return [None if t is None else t.name for t in (layer.get_input(k) for k in range(layer.num_inputs))]


def _layers(network: trt.INetworkDefinition) -> list:
    return [concrete_layer(network.get_layer(i)) for i in range(network.num_layers)]


_LOOP_TYPES = {
    getattr(trt.LayerType, n)
    for n in ("TRIP_LIMIT", "RECURRENCE", "ITERATOR", "LOOP_OUTPUT") if hasattr(trt.LayerType, n)
}


def _topological(layers: list, available: set) -> list:
    """Layers in an order where every input is computed first (insertion order when it already is)."""
    ordered, pending, ready = [], [(layer, _input_names(layer)) for layer in layers], set(available)
    while pending:
        remaining = []
        for layer, ins in pending:
            if all(n is None or n in ready for n in ins):
                ordered.append(layer)
                ready.update(layer.get_output(k).name for k in range(layer.num_outputs))
            else:
                remaining.append((layer, ins))
        if len(remaining) == len(pending):
            # A loop body feeds its recurrence layers back: report the loop as unsupported, not as a cycle.
            loops = [lay for lay, _ in remaining if layer_type(lay) in _LOOP_TYPES and layer_type(lay) not in RULES]
            if loops:
                raise UnsupportedLayerError(loops[0], "loops (ILoop) are not supported")
            names = ", ".join(repr(layer.name) for layer, _ in remaining[:5])
            raise LayerExecutionError(f"layers whose inputs are never produced (a cycle or a loop body?): {names}")
        pending = remaining
    return ordered


def _plan_layer(layer: trt.ILayer) -> tuple:
    """(layer, its LayerType or PLACEHOLDER, input names (None for absent inputs), (name, trt dtype, torch dtype,
    shape) per output)."""
    outs = []
    for k in range(layer.num_outputs):
        t = layer.get_output(k)
        try:
            dtype = to_torch(t.dtype)
        except TypeError:
            dtype = None
        try:
            shape = tuple(t.shape)
        except RuntimeError as exc:  # "Could not get tensor shape": TensorRT rejected the layer
            raise LayerExecutionError(
                f"TensorRT cannot infer output {k} of layer {layer.name!r} ({str(layer_type(layer)).split('.')[-1]}): "
                "the network is invalid; TensorRT's log names the reason"
            ) from exc
        outs.append((t.name, t.dtype, dtype, shape))
    kind = PLACEHOLDER if placeholder_meta(layer) is not None else layer_type(layer)
    return layer, kind, _input_names(layer), outs


class Interpreter:
    """A network read back once, runnable many times: ``Interpreter(net)(inputs)``."""

    def __init__(self, network: trt.INetworkDefinition):
        self.network = network
        self.inputs = [network.get_input(i) for i in range(network.num_inputs)]
        self.outputs = [network.get_output(i) for i in range(network.num_outputs)]
        self.layers = _topological(_layers(network), {t.name for t in self.inputs})
        # Everything __call__ needs about each layer, read from TensorRT once: per-run pybind reads
        # dominated the time of networks with many small layers (swin_t: 16,653 layers).
        self._plan = [_plan_layer(layer) for layer in self.layers]
        self._envs: dict = {}

    def _check_inputs(self, feeds: dict) -> None:
        expected = [t.name for t in self.inputs]
        missing = [n for n in expected if n not in feeds]
        extra = [n for n in feeds if n not in expected]
        if missing or extra:
            raise InterpreterInputError(
                f"inputs do not match the network: missing {missing}, unexpected {extra}; "
                f"the network's inputs are {expected}"
            )
        for t in self.inputs:
            value = feeds[t.name]
            if not isinstance(value, torch.Tensor):
                raise InterpreterInputError(f"input {t.name!r} must be a torch.Tensor, got {type(value).__name__}")
            declared = tuple(t.shape)
            if len(declared) != value.dim() or any(d >= 0 and d != s for d, s in zip(declared, value.shape)):
                raise InterpreterInputError(
                    f"input {t.name!r} has shape {tuple(value.shape)} but the network declares {declared} "
                    "(-1 marks a dynamic dimension)"
                )
            if value.dtype != to_torch(t.dtype):
                raise InterpreterInputError(
                    f"input {t.name!r} has dtype {value.dtype} but the network declares {to_torch(t.dtype)}"
                )

    def __call__(self, feeds: dict, capture: Union[None, str, Iterable[str]] = None) -> dict:
        self._check_inputs(feeds)
        values: dict = dict(feeds)
        device = next(iter(feeds.values())).device if feeds else torch.device("cpu")
        env = self._envs.setdefault(device, Env(device))
        for layer, ltype, in_names, out_decls in self._plan:
            fn = RULES.get(ltype)
            if fn is None:
                raise UnsupportedLayerError(layer)
            ins = [None if n is None else values[n] for n in in_names]
            try:
                out = fn(layer, ins, env)
            except (UnsupportedLayerError, LayerExecutionError):
                raise
            except Exception as exc:
                raise LayerExecutionError(
                    f"layer {layer.name!r} ({str(layer_type(layer)).split('.')[-1]}) failed on inputs "
                    f"{[None if v is None else tuple(v.shape) for v in ins]}: {exc}"
                ) from exc
            outs = [out] if isinstance(out, torch.Tensor) else list(out)
            for k, (name, trt_dtype, dtype, shape) in enumerate(out_decls):
                value = outs[k]
                if dtype is None:
                    dtype = to_torch(trt_dtype)  # raises the clear error for types torch cannot hold
                if value.dtype != dtype:
                    value = value.to(dtype)
                if len(shape) != value.dim() or any(d >= 0 and d != s for d, s in zip(shape, value.shape)):
                    raise LayerExecutionError(
                        f"layer {layer.name!r} ({str(layer_type(layer)).split('.')[-1]}) produced output {k} of shape "
                        f"{tuple(value.shape)}, TensorRT infers {shape}"
                    )
                values[name] = value
        result = {t.name: values[t.name] for t in self.outputs}
        if capture == "all":
            result.update({k: v for k, v in values.items() if k not in result})
        elif capture is not None:
            names = [capture] if isinstance(capture, str) else list(capture)
            unknown = [n for n in names if n not in values]
            if unknown:
                raise KeyError(f"no tensor named {unknown} in the network")
            result.update({n: values[n] for n in names})
        return result


def interpret(network: trt.INetworkDefinition, inputs: dict, capture: Union[None, str, Iterable[str]] = None) -> dict:
    """Run a TensorRT network definition with PyTorch ops.

    Example::

        out = interpret(net, {"input_0": torch.randn(1, 3, 224, 224)})["output_0"]

    ``capture="all"`` (or a list of tensor names) also returns intermediate tensors.
    Raises :class:`UnsupportedLayerError` for a layer it has no rule for and
    :class:`InterpreterInputError` when ``inputs`` do not fit the network.
    """
    return Interpreter(network)(inputs, capture)
