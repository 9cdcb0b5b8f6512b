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
* A ``F.linear`` reading a layer norm's output (:data:`NORMALIZATIONS`) is smoothed ([SQ] in
  :mod:`torch2x.calibration`): the cache holds its factors ``s``, the quantizer multiplies the input
  by ``1/s`` in front of its Q/DQ (layer ``name/input/smooth``) and the weight's input channels by
  ``s``. The product is unchanged in exact arithmetic; only the rounding moves from the activation's
  few outlier channels to the weight, which is quantized per output channel anyway.

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
from typing import Any, Optional, Union
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from .calibration import (CalibrationCache, HistogramCollector, RowErrorCollector, relative_candidates,
                          scale_from_amax, smoothing_factors, weight_scales)
from .context import ConversionContext
from .flavour import trt
from .registry import Call, lookup, signature_of
from .report import ConversionReport
from .structure import flatten
from .tracer import Tracer

ALGORITHMS = ("entropy", "percentile", "max", "relative")
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

# Calls whose output is a normalized activation: a linear layer reading it is smoothed ([SQ] in
# torch2x/calibration.py), since its outlier channels are few and fixed (the norm's affine weights
# make them) and 1/s could fold into the norm's affine. Eval-mode dropout passes the mark on.
NORMALIZATIONS = ("torch.nn.functional.layer_norm", "torch.layer_norm", "torch.nn.functional.rms_norm")
_PASS_THROUGH = ("torch.nn.functional.dropout", "torch.dropout", "torch.Tensor.contiguous")
SMOOTHING_ALPHA = 0.5


def row_dim(call_name: str, operand: str) -> int:
    """The dim an operand is contracted along: a row of the "relative" calibration is a vector along it."""
    if operand in ("other", "mat2"):
        return -2
    return 1 if ".conv" in call_name else -1


class _Recorder(Tracer):
    """A tracer that converts nothing: per intercepted call it counts the call's name as a
    conversion would (``ConversionContext.begin_call`` for every call that reads a traced tensor
    and has a converter) and hands each activation operand of a quantizable call to
    ``record(key, call, operand, value, normalized)``; ``normalized`` says the value is a layer
    norm's output.

    Differences from a conversion only where a strict conversion fails anyway: a call whose
    converter raises still produces traced outputs here, and reads of a convolution output after
    its batch norm was folded are not reported."""

    def __init__(self, module: Optional[torch.nn.Module], record: Callable[..., None]):
        super().__init__(ConversionContext(None), module, ConversionReport())
        self.record = record
        self._normalized: dict = {}  # id -> tensor (kept so that the id is not reused)

    def start(self, tensors: list) -> None:
        self.ctx.begin_call("", "input")  # as network._add_inputs does
        for t in tensors:
            self.ctx.bind(t, _TRACED)

    def _is_normalized(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and self._normalized.get(id(value)) is value

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
            self.record(activation_key(ctx.call_name, operand, names), call, operand, value,
                        self._is_normalized(value))
        normalized = qualname in NORMALIZATIONS or (qualname in _PASS_THROUGH
                                                    and self._is_normalized(args[0] if args else None))
        for t in outputs:
            ctx.bind(t, _TRACED)
            if normalized:
                self._normalized[id(t)] = t
        return out


def _batches(calibration_data: Iterable[Any]) -> Iterable[list]:
    for batch in calibration_data:
        yield [batch] if isinstance(batch, torch.Tensor) else list(batch)


def _run(module: Any, batches: list, record: Callable[..., None]) -> None:
    mod = module if isinstance(module, torch.nn.Module) else None
    for batch in batches:
        tensors, _ = flatten(batch)
        recorder = _Recorder(mod, record)
        recorder.start(tensors)
        with torch.no_grad(), recorder:
            module(*batch)


def _smoothable(call: Call, operand: str, value: torch.Tensor, normalized: bool) -> bool:
    weight = call.bound().get("weight")
    return (normalized and call.name == "torch.nn.functional.linear" and operand == "input" and value.dim() >= 2
            and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == value.shape[-1])


def calibrate(module: Any, calibration_data: Iterable[Any], algorithm: str = "entropy",
              collector: Optional[HistogramCollector] = None, smoothing: bool = True) -> CalibrationCache:
    """Run ``module`` in float32 on each calibration batch and compute the ``amax`` of every
    quantizable activation, keyed by layer name.

    ``calibration_data``: batches, each a list/tuple of positional inputs (like ``inputs`` of
    :func:`torch2x.build_network`) or a single tensor. Example::

        cache = calibrate(model.eval(), [torch.randn(8, 3, 224, 224) for _ in range(32)], "entropy")
        cache.amax["layer1.0.conv1/conv2d"]

    With ``smoothing`` (the default), a linear layer reading a layer norm's output gets per-channel
    smoothing factors ``s`` ([SQ] in :mod:`torch2x.calibration`, alpha 0.5) in ``cache.smooth``; its
    ``amax`` is then that of ``x / s``. Such models take a second pass over the data, which is
    therefore held in a list; so does ``algorithm="relative"``, which needs every range first.
    ``collector`` receives the histograms (of ``x / s`` where smoothed): its ``compute(algorithm)``
    gives the cache of another histogram algorithm without running the model again.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown calibration_algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    collector = HistogramCollector() if collector is None else collector
    batches = []
    for batch in _batches(calibration_data):
        tensors, _ = flatten(batch)
        if any(t.dtype == torch.float64 for t in tensors):
            raise TypeError("calibration batch holds float64 tensors: pass float32 like the example inputs")
        batches.append(batch)
    if not batches:
        raise ValueError("calibration_data holds no batch")

    channel_amax: dict = {}  # smoothable key -> (max|x| per input channel, max|W| per input channel)

    def first(key: str, call: Call, operand: str, value: torch.Tensor, normalized: bool) -> None:
        collector.collect(key, value)
        if smoothing and _smoothable(call, operand, value, normalized):
            x = value.detach().float().abs().reshape(-1, value.shape[-1]).amax(0).numpy().astype(np.float64)
            w = call.bound()["weight"].detach().float().abs().amax(0).numpy().astype(np.float64)
            seen = channel_amax.get(key)
            channel_amax[key] = (x if seen is None else np.maximum(seen[0], x), w)

    _run(module, batches, first)
    smooth = {k: smoothing_factors(x, w, SMOOTHING_ALPHA) for k, (x, w) in channel_amax.items()}
    for key in smooth:
        collector.discard(key)  # collected again as x / s
    rows = None
    if algorithm == "relative":
        ranges = {k: collector.running_max(k) for k in collector.keys()}
        ranges.update({k: float(np.max(channel_amax[k][0] / s)) for k, s in smooth.items()})
        rows = RowErrorCollector({k: relative_candidates(a) for k, a in ranges.items()})
    if smooth or rows is not None:
        factors = {k: torch.as_tensor(s, dtype=torch.float32) for k, s in smooth.items()}

        def second(key: str, call: Call, operand: str, value: torch.Tensor, normalized: bool) -> None:
            if key in factors:
                value = value.detach().float() / factors[key]
                collector.collect(key, value)
            if rows is not None:
                rows.collect(key, value, row_dim(call.name, operand))

        _run(module, batches, second)
    collector.smooth = {k: [float(v) for v in s] for k, s in smooth.items()}
    if rows is not None:
        return CalibrationCache({k: rows.amax(k) for k in collector.keys()}, collector.smooth)
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
                       itensor: trt.ITensor) -> trt.ITensor:
        names = QUANTIZABLE.get(call.name, ())
        value = call.bound().get(operand)
        if (operand not in names or itensor.dtype not in _FLOATS or not isinstance(value, torch.Tensor)
                or not ctx.is_traced(value)):
            return itensor
        key = activation_key(ctx.call_name, operand, names)
        scale = self.activation_scale(key)
        if scale is None:
            return itensor
        base = f"{ctx.call_name}/{operand}"
        smooth = self.cache.smooth.get(key)
        if smooth is not None:
            # x / s, the tensor the scale was calibrated on (the weight got the factors, _weights)
            inverse = (1.0 / torch.tensor(smooth, dtype=torch.float64)).float()
            with ctx.layer_names(f"{base}/smooth/factors"):
                factors = ctx.constant(inverse.reshape((1,) * (len(itensor.shape) - 1) + (-1,)), itensor.dtype)
            with ctx.layer_names(f"{base}/smooth"):
                itensor = ctx.network.add_elementwise(itensor, factors, trt.ElementWiseOperation.PROD).get_output(0)
        return qdq(ctx, itensor, _array(ctx, torch.tensor(scale)), base, None)[0]

    def quantized_weights(self, ctx: ConversionContext, weight: torch.Tensor, dtype: trt.DataType,
                          axis: int = 0) -> trt.ITensor:
        """``weight`` (a torch tensor) as a per-channel Q/DQ'd network tensor of type ``dtype``."""
        return self._weights(ctx, weight, dtype, axis)[0]

    def _weights(self, ctx: ConversionContext, weight: torch.Tensor, dtype: trt.DataType, axis: int) -> tuple:
        w = weight.detach().to("cpu", torch.float32)
        smooth = self.cache.smooth.get(ctx.call_name)
        if smooth is not None:
            # A smoothed linear layer (its input is x / s): the weight's input channels, its last dim, times s.
            w = w * torch.tensor(smooth, dtype=torch.float32)
        base = f"{ctx.call_name}/weight"
        values = _array(ctx, w)
        with ctx.layer_names(base):
            const = ctx.network.add_constant(values.shape, values)
        out, scale_layer = qdq(ctx, const.get_output(0), _array(ctx, weight_scales(w, axis)), base, axis % w.dim(),
                               dtype)
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


def qdq(ctx: ConversionContext, itensor: trt.ITensor, scale: np.ndarray, base: str,
        axis: Optional[int], dtype: Optional[trt.DataType] = None) -> tuple:
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


def qdq_scales(network: trt.INetworkDefinition) -> dict:
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
