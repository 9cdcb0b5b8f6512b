"""INT8 by explicit quantization: calibration passes and the Q/DQ layers the converters add.

TensorRT 11 has no calibrators and no INT8 builder flag: a network runs in INT8 where it holds
``IQuantizeLayer -> IDequantizeLayer`` pairs in front of a layer's inputs (explicit quantization),
and the builder fuses the pairs with the layer into INT8 kernels. torch2x adds them itself:

* :func:`calibrate` runs the model in float32 on calibration batches and records, per
  quantizable call, the activation operands in a :class:`~torch2x.calibration.HistogramCollector`,
  keyed by the layer name the conversion gives that call (:func:`activation_key`).
* :class:`Quantizer` turns the calibrated ``amax`` into Q/DQ layers while converting: activations
  per tensor (``scale = amax / 127``), weights per output channel (symmetric max). Converters reach
  it through ``ctx.quantize_input`` and ``ctx.quantized_weights``; biases stay float.

Quantizable calls (:data:`QUANTIZABLE`): convolutions and transposed convolutions, ``F.linear``,
and matrix products (``matmul``/``mm``/``bmm``/``@``) with a traced operand. Calls are named by
:meth:`ConversionContext.begin_call` in both passes: the calibration pass is a :class:`Tracer`
whose per-call step names calls and records instead of converting, so the names agree by
construction (the same patches, module hooks, "already inside a call" rule and name counter).

Not done: residual adds are not quantized (TensorRT's INT8 conv + add fusion wants a Q/DQ on the
add's other input with its own scale); attention through ``F.scaled_dot_product_attention`` stays
in the float type; weights computed in the forward pass are not quantized.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .calibration import CalibrationCache, HistogramCollector, scale_from_amax, weight_scales
from .context import ConversionContext
from .flavour import trt
from .registry import Call, lookup, signature_of
from .report import ConversionReport
from .structure import flatten
from .tracer import Tracer

ALGORITHMS = ("entropy", "percentile", "max")
_FLOATS = (trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.BF16)

_CONV = ("input",)
_MATMUL = ("input", "other")
_MM = ("input", "mat2")
# qualified torch name -> the parameters (as the converter's signature names them) whose traced
# values are quantized activations.
QUANTIZABLE: dict = {
    **{f"{p}.conv{n}d": _CONV for n in (1, 2, 3) for p in ("torch", "torch.nn.functional")},
    **{f"{p}.conv_transpose{n}d": _CONV for n in (1, 2, 3) for p in ("torch", "torch.nn.functional")},
    "torch.nn.functional.linear": _CONV,
    **{name: _MATMUL for name in ("torch.matmul", "torch.Tensor.matmul", "torch.Tensor.__matmul__",
                                  "torch.linalg.matmul")},
    **{name: _MM for name in ("torch.mm", "torch.Tensor.mm", "torch.bmm", "torch.Tensor.bmm")},
}


def activation_key(layer_name: str, operand: str, operands: Sequence[str]) -> str:
    """The calibration key of one activation operand of the call named ``layer_name``: the layer
    name itself for the first operand (``layer1.0.conv1/conv2d``), ``name:operand`` for the others
    (``encoder.layer.0.attention/matmul:other``)."""
    return layer_name if operand == operands[0] else f"{layer_name}:{operand}"


def activation_operands(call: Call, is_traced: Callable[[Any], bool]) -> list:
    """``(parameter name, torch tensor)`` of each activation operand of ``call`` to quantize: its
    quantizable parameters holding a traced floating-point tensor."""
    names = QUANTIZABLE.get(call.name)
    if names is None:
        return []
    bound = call.bound()
    return [(n, bound[n]) for n in names if isinstance(bound.get(n), torch.Tensor)
            and bound[n].is_floating_point() and is_traced(bound[n])]


# --- calibration --------------------------------------------------------------------------------
class _Traced:
    """The recorder's stand-in for a network tensor: "this torch value derives from an input"."""

    shape: tuple = ()
    name = "traced"


_TRACED = _Traced()


class _Recorder(Tracer):
    """A tracer that converts nothing: per intercepted call it counts the call's name as a
    conversion would (``ConversionContext.begin_call`` for every call that reads a traced tensor
    and has a converter) and records the activation operands of quantizable calls.

    Differences from a conversion only where a strict conversion fails anyway: a call whose
    converter raises still produces traced outputs here, and reads of a convolution output after
    its batch norm was folded are not reported."""

    def __init__(self, module: Optional[torch.nn.Module], collector: HistogramCollector):
        super().__init__(ConversionContext(None), module, ConversionReport())
        self.collector = collector

    def start(self, tensors: list) -> None:
        self.ctx.begin_call("", "input")  # as network._add_inputs does
        for t in tensors:
            self.ctx.bind(t, _TRACED)

    def _convert(self, qualname: str, original: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        ctx = self.ctx
        involved = self.involved(qualname, args, kwargs, out)
        if involved is None or not involved[2]:
            return out
        _, poisoned, outputs = involved
        conv = lookup(qualname)
        if poisoned or conv is None:
            self._poison(outputs)
            return out
        call = Call(qualname, conv.signature or signature_of(original), args, kwargs, out, self.module_path)
        ctx.begin_call(call.module_path, call.op)
        names = QUANTIZABLE.get(qualname, ())
        for operand, value in activation_operands(call, ctx.is_traced):
            self.collector.collect(activation_key(ctx.call_name, operand, names), value)
        for t in outputs:
            ctx.bind(t, _TRACED)
        return out


def _batches(calibration_data: Iterable[Any]) -> Iterable[list]:
    for batch in calibration_data:
        yield [batch] if isinstance(batch, torch.Tensor) else list(batch)


def calibrate(module: Any, calibration_data: Iterable[Any], algorithm: str = "entropy",
              collector: Optional[HistogramCollector] = None) -> CalibrationCache:
    """Run ``module`` in float32 on each calibration batch and compute the ``amax`` of every
    quantizable activation, keyed by layer name.

    ``calibration_data``: batches, each a list/tuple of positional inputs (like ``inputs`` of
    :func:`torch2x.build_network`) or a single tensor. Example::

        cache = calibrate(model.eval(), [torch.randn(8, 3, 224, 224) for _ in range(32)], "entropy")
        cache.amax["layer1.0.conv1/conv2d"]
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown calibration_algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    collector = HistogramCollector() if collector is None else collector
    mod = module if isinstance(module, torch.nn.Module) else None
    count = 0
    for batch in _batches(calibration_data):
        tensors, _ = flatten(batch)
        if any(t.dtype == torch.float64 for t in tensors):
            raise TypeError("calibration batch holds float64 tensors: pass float32 like the example inputs")
        recorder = _Recorder(mod, collector)
        recorder.start(tensors)
        with torch.no_grad(), recorder:
            module(*batch)
        count += 1
    if count == 0:
        raise ValueError("calibration_data holds no batch")
    return collector.compute(algorithm)


# --- Q/DQ layers ------------------------------------------------------------------------------------
class Quantizer:
    """Adds the Q/DQ layers of one INT8 conversion from a :class:`CalibrationCache`.

    Activations: ``x -> IQuantizeLayer(scale) -> IDequantizeLayer(scale)`` back to ``x``'s type, one
    float32 rank-0 scale constant ``amax / 127``. Weights: a float32 constant, quantized per output
    channel along ``axis`` with ``max|w| / 127`` and dequantized to the layer's type.
    """

    def __init__(self, cache: CalibrationCache, source: str = "calibration cache"):
        self.cache = cache
        self.source = source
        self.missing: list = []  # activation keys the cache has no scale for
        self._deferred: list = []  # (FoldableConvolution, kernel constant layer, scale constant layer)

    def activation_scale(self, key: str) -> Optional[float]:
        """``amax / 127`` of ``key``, or None (remembered for :meth:`finalize`) when the cache lacks it."""
        if key not in self.cache.amax:
            self.missing.append(key)
            return None
        amax = self.cache.amax[key]
        if isinstance(amax, list):
            raise ValueError(f"the {self.source} holds per-channel values for activation {key!r}")
        return float(scale_from_amax(amax))

    def quantize_input(self, ctx: ConversionContext, call: Call, operand: str,
                       itensor: "trt.ITensor") -> "trt.ITensor":
        names = QUANTIZABLE.get(call.name, ())
        value = call.bound().get(operand)
        if (operand not in names or itensor.dtype not in _FLOATS or not isinstance(value, torch.Tensor)
                or not ctx.is_traced(value)):
            return itensor
        key = activation_key(ctx.call_name, operand, names)
        scale = self.activation_scale(key)
        if scale is None:
            return itensor
        return qdq(ctx, itensor, _array(ctx, torch.tensor(scale)), f"{ctx.call_name}/{operand}", None)[0]

    def quantized_weights(self, ctx: ConversionContext, weight: torch.Tensor, dtype: "trt.DataType",
                          axis: int = 0) -> "trt.ITensor":
        """``weight`` (a torch tensor) as a per-channel Q/DQ'd network tensor of type ``dtype``."""
        return self._weights(ctx, weight, dtype, axis)[0]

    def _weights(self, ctx: ConversionContext, weight: torch.Tensor, dtype: "trt.DataType", axis: int) -> tuple:
        w = weight.detach().to("cpu", torch.float32)
        base = f"{ctx.call_name}/weight"
        values = _array(ctx, w)
        with ctx.layer_names(base):
            const = ctx.network.add_constant(values.shape, values)
        out, scale_layer = qdq(ctx, const.get_output(0), _array(ctx, weight_scales(w, axis)), base, axis % w.dim(), dtype)
        return out, const, scale_layer

    def defer_kernel(self, ctx: ConversionContext, foldable: Any) -> None:
        """Give ``foldable.layer`` (a convolution without kernel weights) a Q/DQ'd kernel as input 1
        whose values and per-channel scales :meth:`finalize` takes from ``foldable.weight`` as it is
        then: after a following batch norm has folded into the float weights (quantizing before
        folding would round the unfolded weights, and the fold would rescale the rounding)."""
        out, const, scale_layer = self._weights(ctx, foldable.weight, foldable.layer.get_output(0).dtype, 0)
        foldable.layer.set_input(1, out)
        self._deferred.append((foldable, const, scale_layer))

    def finalize(self, ctx: ConversionContext) -> None:
        """Write the final (folded) kernels and their scales into the deferred kernel constants; raise
        ``ValueError`` naming every layer the calibration had no scale for."""
        if self.missing:
            raise ValueError(f"the {self.source} has no activation scale for layer(s) {', '.join(self.missing)}: "
                             "calibrate again for this model (pass calibration_data=...)")
        for foldable, const, scale_layer in self._deferred:
            w = foldable.weight.detach().to("cpu", torch.float32)
            const.weights = _array(ctx, w)
            scale_layer.weights = _array(ctx, weight_scales(w, 0))
        self._deferred.clear()


def _array(ctx: ConversionContext, t: torch.Tensor) -> np.ndarray:
    """float32 numpy values kept alive until the build (TensorRT keeps a pointer to constant weights)."""
    array = np.ascontiguousarray(torch.as_tensor(t).detach().to("cpu", torch.float32).numpy())
    ctx._keepalive.append(array)
    return array


def qdq(ctx: ConversionContext, itensor: "trt.ITensor", scale: np.ndarray, base: str,
        axis: Optional[int], dtype: Optional["trt.DataType"] = None) -> tuple:
    """``itensor -> Quantize(int8) -> Dequantize(dtype or itensor's type)`` sharing one float32 scale
    constant (rank 0: per tensor; rank 1: per channel along ``axis``). Layers: ``base/scale``,
    ``base/quantize``, ``base/dequantize``. Returns the dequantized tensor and the scale's layer."""
    with ctx.layer_names(f"{base}/scale"):
        scale_layer = ctx.network.add_constant(scale.shape, scale)
    s = scale_layer.get_output(0)
    with ctx.layer_names(f"{base}/quantize"):
        q = ctx.network.add_quantize(itensor, s, trt.DataType.INT8)
        if axis is not None:
            q.axis = axis
    with ctx.layer_names(f"{base}/dequantize"):
        dq = ctx.network.add_dequantize(q.get_output(0), s, dtype or itensor.dtype)
        if axis is not None:
            dq.axis = axis
    return dq.get_output(0), scale_layer


def prepare(module: Any, *, calibration_data: Optional[Iterable[Any]] = None, calibration_algorithm: str = "entropy",
            calibration_cache: Union[str, Path, None] = None) -> Quantizer:
    """The quantizer of an ``int8=True`` conversion: calibrate on ``calibration_data`` (and save to
    ``calibration_cache`` when given), or load ``calibration_cache`` when no data is given."""
    if calibration_data is not None:
        cache = calibrate(module, calibration_data, calibration_algorithm)
        if calibration_cache is not None:
            cache.save(calibration_cache)
        return Quantizer(cache, "calibration")
    if calibration_cache is not None and Path(calibration_cache).exists():
        return Quantizer(CalibrationCache.load(calibration_cache), f"calibration cache {str(calibration_cache)!r}")
    missing = "" if calibration_cache is None else f" (calibration_cache={str(calibration_cache)!r} does not exist)"
    raise ValueError("int8=True needs activation ranges: pass calibration_data=<batches of inputs> to "
                     f"calibrate, or calibration_cache=<path of a saved calibration>{missing}")


def qdq_scales(network: "trt.INetworkDefinition") -> dict:
    """``{quantize layer name: scale (numpy float32)}`` read back from a network: what a conversion
    from a calibration cache must reproduce."""
    producers = {}
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for k in range(layer.num_outputs):
            producers[layer.get_output(k).name] = layer
        layers.append(layer)
    scales = {}
    for layer in layers:
        if layer.type == trt.LayerType.QUANTIZE:
            const = producers[layer.get_input(1).name]
            const.__class__ = trt.IConstantLayer
            scales[layer.name] = np.array(const.weights, dtype=np.float32).copy()
    return scales
