"""The conversion context: torch values to network tensors, layer naming, and the shared layer helpers.

Converters reach TensorRT only through a context: ``ctx.network.add_*`` (each layer
is named ``module.path/op`` automatically), ``ctx.trt(value)`` for any torch tensor,
parameter or Python scalar, and the helpers below for casts, broadcasting, reshapes
and axes. Nothing here is specific to one op.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Optional, Union
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from . import layout
from .dtypes import to_torch, to_trt
from .flavour import trt
from .layout import Channels
from .precision import PrecisionPolicy
from .shapes import TracedInt, dim_of, source_dim

ITensor = "trt.ITensor"


def sizes(value: Any) -> tuple:
    """The dims of a torch tensor (or network tensor) as ints: the one place converters read sizes, so
    that dynamic shapes can later return traced sizes here."""
    return tuple(int(s) for s in value.shape)


def _expr_key(size: Any) -> Any:
    """A hashable form of a traced size's recipe (equal recipes share their shape layers)."""
    if not isinstance(size, TracedInt):
        return int(size)
    kind, a, b = size.expr
    return (kind, a.name, b) if kind == "dim" else (kind, _expr_key(a), _expr_key(b))


class ConversionError(RuntimeError):
    """A converter cannot express this call (an argument combination TensorRT has no layer for...)."""


class _NamedNetwork:
    """``INetworkDefinition`` whose ``add_*`` methods name each new layer after the call being converted."""

    def __init__(self, network: trt.INetworkDefinition, ctx: ConversionContext):
        self._network = network
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._network, name)
        if not (name.startswith("add_") and callable(attr)):
            return attr

        def add(*args, **kwargs):
            layer = attr(*args, **kwargs)
            if layer is None:
                raise ConversionError(f"TensorRT refused {name} (see the TensorRT log above for why)")
            self._ctx._name_layer(layer)
            return layer

        return add


class ConversionContext:
    """Maps torch tensors to network tensors while one forward pass is traced."""

    def __init__(self, network: trt.INetworkDefinition, policy: Optional[PrecisionPolicy] = None):
        self.raw_network = network
        self.network = _NamedNetwork(network, self)
        self.policy = policy or PrecisionPolicy()
        self.module_path = ""
        self.token_model = False  # see layout.may_enter
        self.op = "op"
        self.fp32_region = False  # inside a converter that keeps float32 under reduced precision
        self._tensors: dict[int, tuple] = {}  # id(torch tensor) -> (tensor kept alive, ITensor)
        self._channels: dict[int, tuple] = {}  # id(torch tensor) -> (tensor, its value in channel layout)
        self._constants: dict = {}
        self._casts: dict = {}  # (tensor name, dtype) -> cast output; cast output name -> source
        self._cast_sources: dict = {}
        self._layer_names: dict[str, int] = {}
        self._keepalive: list = []
        self._example_sizes: dict[str, tuple] = {}  # network tensor name -> the example's sizes (dynamic dims)
        self.weight_names: dict[int, str] = {}  # id(parameter or buffer) -> its name in the module
        self.uses: dict[int, int] = {}  # id(traced torch tensor) -> how many converted calls read it so far
        self.foldable: dict[str, Any] = {}  # network tensor name -> a layer whose weights a consumer may fold
        self.retired: dict[int, tuple] = {}  # id(torch tensor) -> (tensor, why its network tensor is gone)
        self._producers: dict[str, Any] = {}  # network tensor name -> the layer computing it (see producer())
        self._producers_seen = 0  # layers indexed in _producers so far
        self._call_name = "op"
        self._call_layers = 0
        self.quantizer: Any = None  # a torch2x.quantization.Quantizer in an int8 conversion
        self.absorbed: dict[str, list] = {}  # layer name -> calls that added no layer, computed by that layer
        # Sizes may be anything from 0 up at run time (hybrid execution: counts made by PyTorch steps), so
        # converters must not assume a fixed bound stays inside a dynamic dim as it does in the example.
        self.exact_sizes = False

    # --- naming -------------------------------------------------------------------
    def begin_call(self, module_path: str, op: str) -> None:
        """Layers added from now on belong to ``op`` called in module ``module_path``."""
        self.module_path, self.op = module_path, op
        base = f"{module_path}/{op}" if module_path else op
        n = self._layer_names.get(base, 0)
        self._layer_names[base] = n + 1
        self._call_name = base if n == 0 else f"{base}_{n}"
        self._call_layers = 0

    @property
    def call_name(self) -> str:
        """The name of the call being converted (``layer1.0.conv1/conv2d``, ``_1`` on repeats): its first
        layer's name, and the key of its INT8 calibration."""
        return self._call_name

    def note_absorbed(self, values: list) -> None:
        """After a call: if it added no layer (a batch norm folded into its convolution, a copy, a view),
        the layers producing its output ``values`` compute it; engine inspection names it with them."""
        if self._call_layers:
            return
        for value in values:
            itensor = value.itensor if isinstance(value, Channels) else value
            producer = itensor.name.rsplit(":", 1)[0]  # outputs are named after their layer (see _name_layer)
            calls = self.absorbed.setdefault(producer, [])
            if self._call_name not in calls:
                calls.append(self._call_name)

    @contextmanager
    def layer_names(self, name: str) -> Iterator[None]:
        """Layers added inside the block are named ``name``, ``name.1``...; then the call's naming resumes."""
        saved = self._call_name, self._call_layers
        self._call_name, self._call_layers = name, 0
        try:
            yield
        finally:
            self._call_name, self._call_layers = saved

    def _name_layer(self, layer: trt.ILayer) -> None:
        name = self._call_name if self._call_layers == 0 else f"{self._call_name}.{self._call_layers}"
        self._call_layers += 1
        layer.name = name
        for k in range(layer.num_outputs):
            layer.get_output(k).name = name if layer.num_outputs == 1 else f"{name}:{k}"

    # --- torch tensors <-> network tensors ------------------------------------------
    def bind(self, tensor: torch.Tensor, itensor: Union[trt.ITensor, Channels]) -> None:
        """Record that ``tensor`` (a real torch value of the traced pass) is ``itensor`` in the network, or
        a :class:`torch2x.layout.Channels` value (its canonical tensor is then made when first read)."""
        if isinstance(itensor, Channels):
            self._tensors.pop(id(tensor), None)
            self._channels[id(tensor)] = (tensor, itensor)
            return
        self._channels.pop(id(tensor), None)
        self._tensors[id(tensor)] = (tensor, itensor)
        if any(d < 0 for d in itensor.shape):  # dynamic dims: remember the example's sizes for reshapes
            self._example_sizes[itensor.name] = tuple(tensor.shape)

    def add_input(self, name: str, tensor: torch.Tensor, shape: Sequence[int]) -> trt.ITensor:
        """A network input ``name`` holding ``tensor`` (``shape``: its sizes, -1 where they vary at run time),
        bound to ``tensor`` in the network's compute type; returns the input itself."""
        itensor = self.raw_network.add_input(name, to_trt(tensor.dtype), tuple(shape))
        self.bind(tensor, self.cast(itensor, self.dtype_for(tensor.dtype)))
        return itensor

    def unbind(self, tensor: torch.Tensor) -> None:
        """Forget ``tensor``'s network value (hybrid execution: another segment or PyTorch wrote it in place)."""
        for table in (self._tensors, self._channels):
            entry = table.get(id(tensor))
            if entry is not None and entry[0] is tensor:
                del table[id(tensor)]

    def lookup(self, tensor: Any) -> Optional[trt.ITensor]:
        """The network tensor of a traced torch tensor, or None for anything else."""
        entry = self._tensors.get(id(tensor))
        if entry is not None and entry[0] is tensor:
            return entry[1]
        ch = self.held(tensor)
        if ch is None:
            return None
        key = ("plain", ch.itensor.name, ch.order, id(ch.scale), id(ch.shift))  # copies share one Channels value
        if key not in self._constants:
            self._constants[key] = (ch, layout.materialize(self, tensor, ch))
        itensor = self._constants[key][1]
        self._tensors[id(tensor)] = (tensor, itensor)  # both representations stay valid
        return itensor

    def has(self, tensor: Any) -> bool:
        """Whether ``tensor`` is traced (has a network value), without making any layer."""
        entry = self._tensors.get(id(tensor))
        return (entry is not None and entry[0] is tensor) or self.held(tensor) is not None

    def peek(self, tensor: Any) -> Optional[trt.ITensor]:
        """The canonical network tensor of ``tensor`` if it exists already (None for a value held only
        in channel layout, or not traced)."""
        entry = self._tensors.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def held(self, value: Any) -> Optional[Channels]:
        """``value``'s channel-layout value as it is, without casts (None when it has none)."""
        entry = self._channels.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else None

    def producer(self, itensor: trt.ITensor) -> Optional[trt.ILayer]:
        """The layer whose output ``itensor`` is (None for a network input), for converters that choose
        layers by what TensorRT will fuse them with. Layers are indexed as they are first asked for."""
        network = self.raw_network
        while self._producers_seen < network.num_layers:
            layer = network.get_layer(self._producers_seen)
            for k in range(layer.num_outputs):
                self._producers[layer.get_output(k).name] = layer
            self._producers_seen += 1
        return self._producers.get(itensor.name)

    def is_traced(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and self.has(value)

    @property
    def layouts(self) -> bool:
        """Whether converters may keep values in channel layout (not in int8 conversions, whose Q/DQ
        placement follows the matrix multiplies)."""
        return self.quantizer is None

    def channels(self, value: Any, enter: bool = False, dtype: Any = None) -> Optional[Channels]:
        """``value`` (a traced torch tensor) in channel layout: its own when it has one, else (``enter``) a
        new one made by a shuffle when the value fits, else None. The stored tensor is in ``dtype`` (default:
        the type ``ctx.trt(value)`` would give). See :mod:`torch2x.layout`."""
        if not (self.layouts and isinstance(value, torch.Tensor)):
            return None
        ch = self.held(value)
        if ch is None:
            itensor = self.peek(value)
            if not enter or itensor is None or not layout.can_hold(value, itensor):
                return None
            ch = layout.enter(self, value, itensor)
            self._channels[id(value)] = (value, ch)
        if dtype is None:
            dtype = trt.DataType.FLOAT if self.fp32_region else self.dtype_for(value.dtype)
        elif isinstance(dtype, torch.dtype):
            dtype = self.dtype_for(dtype)
        return layout.cast(self, ch, dtype)

    def dtype_for(self, dtype: torch.dtype) -> trt.DataType:
        """The network type that holds values PyTorch computes in ``dtype``, under the precision policy."""
        if dtype.is_floating_point:
            return trt.DataType.FLOAT if self.fp32_region else self.policy.float_type(dtype)
        return to_trt(dtype)

    def trt(self, value: Any, dtype: Optional[Union[torch.dtype, trt.DataType]] = None) -> trt.ITensor:
        """The network tensor for a traced tensor, a parameter/buffer/other tensor, or a Python scalar.

        Untraced tensors and scalars become constants (each tensor object once).
        ``dtype`` casts the result (a torch dtype goes through the precision policy).
        """
        if isinstance(dtype, torch.dtype):
            dtype = self.dtype_for(dtype)
        if isinstance(value, torch.Tensor):
            itensor = self.lookup(value)
            if itensor is None:
                itensor = self._tensor_constant(value)
            elif self.fp32_region and itensor.dtype in (trt.DataType.HALF, trt.DataType.BF16):
                itensor = self.cast(itensor, trt.DataType.FLOAT)
            elif itensor.dtype == trt.DataType.FLOAT and value.dtype == torch.float32:
                # a float32 result of a kept op is cast down only when a reduced-precision op reads it
                itensor = self.cast(itensor, self.dtype_for(value.dtype))
        elif isinstance(value, TracedInt):  # a size read from a dynamic dim: computed at run time
            itensor = self.reshape(self.shape_value(value), ())
        elif isinstance(value, (bool, int, float, np.number)):
            return self.scalar(value, dtype)
        elif hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "name"):  # already an ITensor
            itensor = value
        else:
            raise ConversionError(f"{self.op}: cannot turn {type(value).__name__} into a network tensor")
        return itensor if dtype is None else self.cast(itensor, dtype)

    def trt_shaped(self, value: Any, shape: Sequence[int]) -> trt.ITensor:
        """``self.trt(value)`` reshaped to ``shape`` (same element count). A tensor that is not traced
        (a weight) becomes a constant already in that shape, made once per shape: no shuffle layer.
        Example: ``ctx.trt_shaped(linear.bias, (1, 1, out_features))`` to add to a rank-3 tensor.
        """
        shape = tuple(int(s) for s in shape)
        if isinstance(value, torch.Tensor) and not self.has(value):
            return self._tensor_constant(value, shape)
        return self.reshape(self.trt(value), shape)

    def _tensor_constant(self, tensor: torch.Tensor, shape: Optional[tuple] = None) -> trt.ITensor:
        key = (id(tensor), self.fp32_region) + ((shape,) if shape is not None else ())
        entry = self._constants.get(key)
        if entry is not None and entry[0] is tensor:
            return entry[1]
        target = self.dtype_for(tensor.dtype)
        name = self.weight_names.get(id(tensor))
        value = tensor if shape is None else tensor.reshape(shape)
        if name is None:
            itensor = self.constant(value, target)
        else:  # a parameter or buffer: its constant is named after it (``layer1.0.conv1.weight``)
            saved = self._call_name, self._call_layers
            self._call_name, self._call_layers = name + ("/fp32" if self.fp32_region else "") + (
                "" if shape is None else "/" + "x".join(map(str, shape))), 0
            try:
                itensor = self.constant(value, target)
            finally:
                self._call_name, self._call_layers = saved
        self._constants[key] = (tensor, itensor)
        return itensor

    def constant(self, value: Union[torch.Tensor, np.ndarray, Sequence], dtype: trt.DataType) -> trt.ITensor:
        """A constant layer holding ``value`` in network type ``dtype``."""
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        t = t.to("cpu")
        torch_dtype = to_torch(dtype)
        # numpy has no bfloat16: hold the float32 values and cast inside the network.
        store = torch.float32 if torch_dtype == torch.bfloat16 else torch_dtype
        if store == torch.float16 and t.is_floating_point():
            # A float32 model's huge finite constants (torch.finfo(torch.float32).min as a mask
            # bias) saturate instead of becoming inf, which would turn 0 * bias into NaN.
            t = torch.where(torch.isfinite(t), t.clamp(-65504.0, 65504.0), t)
        # np.ascontiguousarray makes 0-d arrays 1-d: keep rank-0 constants rank 0.
        array = np.ascontiguousarray(t.to(store).numpy()).reshape(tuple(t.shape))
        self._keepalive.append(array)  # TensorRT keeps a pointer to the weights until the build
        layer = self.network.add_constant(tuple(array.shape), array)
        out = layer.get_output(0)
        return self.cast(out, dtype) if store != torch_dtype else out

    def weights(self, value: Union[torch.Tensor, np.ndarray], dtype: trt.DataType) -> trt.Weights:
        """Host weights (a layer's kernel or bias) in network type ``dtype``, kept alive until the build."""
        t = torch.as_tensor(value).detach().to("cpu", to_torch(dtype))
        array = np.ascontiguousarray(t.numpy())
        self._keepalive.append(array)
        return trt.Weights(array)

    def quantize_input(self, call: Any, operand: str, itensor: trt.ITensor) -> trt.ITensor:
        """In an int8 conversion, ``itensor`` (the network value of ``call``'s argument ``operand``)
        through a calibrated Quantize/Dequantize pair when the call and operand are quantizable
        (``torch2x.quantization.QUANTIZABLE``, a traced float value); otherwise ``itensor`` itself.
        Example: ``x = ctx.quantize_input(call, "input", ctx.trt(call.arg("input")))``."""
        return itensor if self.quantizer is None else self.quantizer.quantize_input(self, call, operand, itensor)

    def quantized_weights(self, weight: torch.Tensor, dtype: trt.DataType, axis: int = 0) -> trt.ITensor:
        """A weight (parameter) as a network tensor of type ``dtype``; in an int8 conversion through a
        Quantize/Dequantize pair per output channel along ``axis`` (``max|w| / 127``)."""
        if self.quantizer is None or self.is_traced(weight):
            return self.trt(weight, dtype)
        return self.quantizer.quantized_weights(self, weight, dtype, axis)

    def write_through(self, view: torch.Tensor, base: torch.Tensor) -> trt.ITensor:
        """``base``'s network value with ``view``'s current one scattered into it: the network side of an
        in-place write through a view (``y[0].add_(1)`` changes ``y``). Positions come from the view's
        real strides, so any view of a contiguous base works."""
        if not (base.is_contiguous() and base.storage_offset() == 0):
            raise ConversionError("writing into a view of a non-contiguous tensor; clone the tensor first")
        positions = torch.arange(base.numel()).as_strided(view.shape, view.stride(), view.storage_offset())
        flat = self.reshape(self.trt(base), (base.numel(),))
        updates = self.reshape(self.trt(view, flat.dtype), (view.numel(),))
        layer = self.network.add_scatter(flat, self.constant(positions.reshape(-1), trt.DataType.INT64), updates,
                                         trt.ScatterMode.ELEMENT)
        layer.axis = 0
        return self.reshape(layer.get_output(0), tuple(base.shape))

    def retire(self, tensor: torch.Tensor, why: str) -> None:
        """``tensor``'s network value was rewritten (a convolution folded with its batch norm): a later
        read of it is reported with ``why`` instead of silently reading the new value."""
        self.retired[id(tensor)] = (tensor, why)

    def scalar(self, value: Union[bool, int, float], dtype: Optional[trt.DataType] = None) -> trt.ITensor:
        """A rank-0 constant; its type is ``dtype`` or follows Python's (float -> policy float, int -> int64)."""
        if isinstance(value, TracedInt):
            return self.trt(value) if dtype is None else self.cast(self.trt(value), dtype)
        if dtype is None:
            dtype = (trt.DataType.BOOL if isinstance(value, bool) else
                     trt.DataType.INT64 if isinstance(value, (int, np.integer)) else self.dtype_for(torch.float32))
        key = (float(value), str(type(value)), dtype)
        if key not in self._constants:
            self._constants[key] = (None, self.constant(np.array(value), dtype))
        return self._constants[key][1]

    def pointwise(self, value: Any, fn: Any) -> Union[trt.ITensor, Channels]:
        """``fn(network tensor)`` for an op that treats every element alike (an activation; None: a copy): on
        a value in channel layout it runs on the stored tensor and the result stays in that layout.
        Example: ``return ctx.pointwise(call.arg("input"), lambda t: ctx.activation(t, Act.RELU))``."""
        ch = self.channels(value)
        if ch is None:
            return self.trt(value) if fn is None else fn(self.trt(value))
        if fn is None:  # the identity: the value as it is, pending affine included
            return ch
        ch = layout.apply_affine(self, ch)
        out = ch.with_tensor(fn(ch.itensor))
        return layout.note(self, out, None, like=ch)

    # --- shared layer helpers ----------------------------------------------------------
    def cast(self, itensor: trt.ITensor, dtype: Union[trt.DataType, torch.dtype]) -> trt.ITensor:
        """``itensor`` in ``dtype``; no layer when it already is, and never a cast straight back."""
        if isinstance(dtype, torch.dtype):
            dtype = self.dtype_for(dtype)
        if itensor.dtype == dtype:
            return itensor
        source = self._cast_sources.get(itensor.name)
        if source is not None and source.dtype == dtype:
            return source
        key = (itensor.name, dtype)
        if key not in self._casts:
            out = self.network.add_cast(itensor, dtype).get_output(0)
            if itensor.name in self._example_sizes:  # same sizes: ``dims`` works on the cast too
                self._example_sizes[out.name] = self._example_sizes[itensor.name]
            self._casts[key] = out
            self._cast_sources[out.name] = itensor
        return self._casts[key]

    def reshape(self, itensor: trt.ITensor, shape: Sequence[Any]) -> trt.ITensor:
        """``itensor`` reshaped to ``shape`` (no layer when it already has it).

        ``shape`` holds ints, at most one -1 (inferred, as in torch) and traced sizes
        (:class:`torch2x.shapes.TracedInt`). A traced size that is the same dim of ``itensor`` is copied at
        run time (a 0 placeholder), a single other unknown becomes -1, and anything else comes from shape
        layers. Given only the example's ints for a tensor with dynamic dims (-1 in ``itensor.shape``),
        leading dims equal to the example's are copied and trailing static dims kept, and one remaining
        dim is inferred; a reshape that cannot be read that way is a ConversionError.
        """
        shape = tuple(s if isinstance(s, TracedInt) else int(s) for s in shape)
        current = tuple(itensor.shape)
        if len(shape) == len(current) and all(self._same_dim(itensor, i, s) for i, s in enumerate(shape)):
            return itensor
        example: Optional[tuple] = shape
        if -1 in shape and any(d < 0 for d in current):
            known = self._example_sizes.get(itensor.name)
            rest = math.prod(int(s) for s in shape if s != -1)
            example = None if known is None else tuple(math.prod(known) // rest if s == -1 else int(s) for s in shape)
        return self._noted(self._reshape(itensor, shape), example)

    def _same_dim(self, itensor: trt.ITensor, axis: int, size: Any) -> bool:
        """Whether ``size`` names ``itensor``'s dim ``axis`` as it is: its static size, or for a dynamic dim
        -1, that dim traced, or the example's size (converters that pass ``tuple(x.shape)`` or the output's
        example sizes for an unchanged layout)."""
        d = itensor.shape[axis]
        if d >= 0:
            return size == d
        if isinstance(size, TracedInt):
            return source_dim(size) == (itensor.name, axis)
        example = self._example_sizes.get(itensor.name)
        return size == -1 or example is None or size == example[axis]

    def _reshape(self, itensor: trt.ITensor, shape: tuple) -> trt.ITensor:
        current = tuple(itensor.shape)
        if not any(isinstance(s, TracedInt) for s in shape) and -1 not in shape:
            if all(d >= 0 for d in current):
                return self._shuffle_to(itensor, shape, copy_zeros=False)  # torch never means "copy" by 0
            shape = self._dynamic_target(itensor, shape)
        if 0 in shape and all(d >= 0 for d in current):
            return self._shuffle_to(itensor, shape, copy_zeros=False)  # a real empty dim
        return self._shuffle_to(itensor, self._placeholders(itensor, shape), copy_zeros=True)

    def _noted(self, itensor: trt.ITensor, example: Optional[Sequence[int]]) -> trt.ITensor:
        """``itensor``, with the example's sizes remembered when it has dynamic dims (for ``dims``)."""
        if example is not None and any(d < 0 for d in itensor.shape):
            self._example_sizes[itensor.name] = tuple(int(d) for d in example)
        return itensor

    def _shuffle_to(self, itensor: trt.ITensor, shape: tuple, copy_zeros: bool) -> trt.ITensor:
        """A shuffle to ``shape``: static ints (-1 is inferred; 0 copies the input's dim when
        ``copy_zeros``) or, with traced sizes, a shape tensor."""
        layer = self.network.add_shuffle(itensor)
        if any(isinstance(s, TracedInt) for s in shape):
            layer.set_input(1, self.shape_tensor(shape))
        else:
            layer.reshape_dims = shape
        layer.zero_is_placeholder = copy_zeros
        return layer.get_output(0)

    # --- sizes that follow dynamic dims ---------------------------------------------------
    def dims(self, value: Any) -> tuple:
        """The sizes of a traced torch tensor or a network tensor: ints for static dims, and for
        dynamic ones (-1 in the network) :class:`torch2x.shapes.TracedInt` holding the example's size.
        Compute output sizes from these and pass them to ``reshape``/``expand``/``slice``.
        Example: ``b, s, _ = ctx.dims(x); ctx.reshape(ctx.trt(x), (b, s, heads, -1))``."""
        itensor = self.peek(value) if isinstance(value, torch.Tensor) else value
        if itensor is None:
            ch = self.held(value)
            if ch is not None:  # held in channel layout only: its sizes are the stored tensor's, rearranged
                stored = self.dims(ch.itensor)
                return tuple(stored[ch.order.index(axis)] for axis in range(ch.rank))
            return tuple(int(d) for d in value.shape)
        example = value.shape if isinstance(value, torch.Tensor) else self._example_sizes.get(itensor.name)
        if example is None:
            if all(d >= 0 for d in itensor.shape):
                return tuple(int(d) for d in itensor.shape)
            raise ConversionError(f"converter bug: the example's sizes of the dynamic tensor {itensor.name} "
                                  "are unknown")
        return tuple(int(d) if d >= 0 else dim_of(int(example[i]), itensor, i) for i, d in enumerate(itensor.shape))

    def shape_value(self, size: Any) -> trt.ITensor:
        """A size (int or traced) as a 1-element INT64 network tensor, computed by shape layers (made once)."""
        if not isinstance(size, TracedInt):
            return self._int64s([int(size)])
        key = ("size", _expr_key(size))
        if key in self._constants:
            return self._constants[key][1]
        kind, a, b = size.expr
        if kind == "dim":
            out = self.slice(self.shape_of(a), (b,), (1,))
        elif kind == "mod":  # TensorRT has no integer modulo: a - (a // b) * b, floor semantics as Python's
            floor = self.elementwise(self.shape_value(a), self.shape_value(b), trt.ElementWiseOperation.FLOOR_DIV)
            out = self.elementwise(self.shape_value(a),
                                   self.elementwise(floor, self.shape_value(b), trt.ElementWiseOperation.PROD),
                                   trt.ElementWiseOperation.SUB)
        else:
            op = {"add": trt.ElementWiseOperation.SUM, "sub": trt.ElementWiseOperation.SUB,
                  "mul": trt.ElementWiseOperation.PROD, "floordiv": trt.ElementWiseOperation.FLOOR_DIV,
                  "min": trt.ElementWiseOperation.MIN, "max": trt.ElementWiseOperation.MAX}[kind]
            out = self.elementwise(self.shape_value(a), self.shape_value(b), op)
        self._constants[key] = (size, out)
        return out

    def shape_of(self, itensor: trt.ITensor) -> trt.ITensor:
        """``itensor``'s run-time shape as a 1-D INT64 tensor (one shape layer per tensor)."""
        key = ("shape", itensor.name)
        if key not in self._constants:
            self._constants[key] = (None, self.cast(self.network.add_shape(itensor).get_output(0), trt.DataType.INT64))
        return self._constants[key][1]

    def shape_tensor(self, sizes: Sequence[Any]) -> trt.ITensor:
        """``sizes`` (ints and traced sizes) as a 1-D INT64 network tensor: runs of ints become one constant."""
        pieces: list = []
        run: list = []
        for s in sizes:
            if isinstance(s, TracedInt):
                if run:
                    pieces.append(self._int64s(run))
                    run = []
                pieces.append(self.shape_value(s))
            else:
                run.append(int(s))
        if run:
            pieces.append(self._int64s(run))
        if len(pieces) == 1:
            return pieces[0]
        layer = self.network.add_concatenation(pieces)
        layer.axis = 0
        return layer.get_output(0)

    def _int64s(self, values: Sequence[int]) -> trt.ITensor:
        """Static sizes as a 1-D INT64 constant."""
        return self.constant(np.array(values, dtype=np.int64), trt.DataType.INT64)

    def _placeholders(self, itensor: trt.ITensor, shape: tuple) -> tuple:
        """``shape`` with traced sizes that repeat ``itensor``'s dim at the same position as 0, and a
        single other unknown as -1, so the reshape needs no shape layers."""
        name = itensor.name
        out = [0 if source_dim(s) == (name, i) else s for i, s in enumerate(shape)]
        unknown = [i for i, s in enumerate(out) if isinstance(s, TracedInt) or s == -1]
        if len(unknown) == 1:
            out[unknown[0]] = -1
        elif -1 in out and self.exact_sizes:
            # a count from a PyTorch step (MIN of sizes) beside a -1: TensorRT cannot prove the count is not
            # another wildcard, so the -1 is computed too. (Elsewhere TensorRT's own inference of the -1 keeps
            # sizes provably equal, which its attention layer checks.)
            i = out.index(-1)
            out[i] = math.prod(self.dims(itensor)) // math.prod(s for j, s in enumerate(shape) if j != i)
        return tuple(out)

    def _dynamic_target(self, itensor: trt.ITensor, shape: tuple) -> tuple:
        """The example's target ``shape`` for an ``itensor`` with dynamic dims: leading and trailing dims
        equal to the example's follow the input (traced sizes), one remaining dim is inferred (-1)."""
        current = tuple(itensor.shape)
        dims = self.dims(itensor)
        example = tuple(int(d) for d in dims)
        out: list = list(shape)
        lead = 0
        while lead < min(len(current), len(shape)) and example[lead] == shape[lead]:
            out[lead] = dims[lead]
            lead += 1
        trail = 0
        while trail < min(len(current), len(shape)) - lead and example[-1 - trail] == shape[-1 - trail]:
            out[len(shape) - 1 - trail] = dims[len(current) - 1 - trail]
            trail += 1
        middle_in, middle_out = current[lead:len(current) - trail], shape[lead:len(shape) - trail]
        if any(d < 0 for d in middle_in):
            if len(middle_out) != 1:
                raise ConversionError(f"cannot reshape {example} to {shape} when dims "
                                      f"{[i for i, d in enumerate(current) if d < 0]} are dynamic")
            out[lead] = -1
        return tuple(out)

    def shuffle(self, itensor: trt.ITensor, reshape: Optional[Sequence[Any]] = None,
                first: Optional[Sequence[int]] = None, second: Optional[Sequence[int]] = None,
                copy_zeros: bool = False) -> trt.ITensor:
        """One shuffle layer: transpose ``first``, reshape to ``reshape`` (ints, one -1, traced sizes; with
        ``copy_zeros`` a 0 copies the transposed input's dim at that position, static or dynamic), transpose
        ``second`` (None skips a step). With dynamic dims a single unknown size is inferred and more come from
        shape layers. Example: ``ctx.shuffle(x, (b, s, heads, -1), second=(0, 2, 1, 3))``."""
        layer = self.network.add_shuffle(itensor)
        dims = self._known_dims(itensor)  # the example's sizes, to remember the output's (None: unknown)
        if first is not None:
            layer.first_transpose = tuple(first)
            dims = None if dims is None else tuple(dims[o] for o in first)
        if reshape is not None:
            shape = tuple(reshape)
            unknown = [i for i, v in enumerate(shape) if isinstance(v, TracedInt) or v == -1]
            resolved = shape if not copy_zeros else None if dims is None else tuple(
                dims[i] if v == 0 else v for i, v in enumerate(shape))
            if -1 not in shape:
                dims = resolved
            elif resolved is not None:
                rest = math.prod(int(v) for v in resolved if v != -1)
                dims = tuple(math.prod(int(d) for d in dims) // rest if v == -1 else v for v in resolved)
            if len(unknown) == 1:
                shape = tuple(-1 if i == unknown[0] else int(v) for i, v in enumerate(shape))
            if any(isinstance(v, TracedInt) for v in shape):
                layer.set_input(1, self.shape_tensor(shape))
            else:
                layer.reshape_dims = tuple(int(v) for v in shape)
            layer.zero_is_placeholder = copy_zeros
        if second is not None:
            layer.second_transpose = tuple(second)
            dims = None if dims is None else tuple(dims[o] for o in second)
        return self._noted(layer.get_output(0), dims)

    def _known_dims(self, itensor: trt.ITensor) -> Optional[tuple]:
        """``dims(itensor)``, or None when it has dynamic dims whose example sizes nobody recorded."""
        try:
            return self.dims(itensor)
        except ConversionError:
            return None

    def arange(self, length: Any, dtype: trt.DataType = None) -> trt.ITensor:
        """``0, 1, ..., length - 1`` as a 1-D tensor (INT64 by default); a traced ``length`` gives a fill
        layer whose size follows the input, a static one a constant."""
        dtype = dtype or trt.DataType.INT64
        if not isinstance(length, TracedInt):
            return self.constant(torch.arange(int(length)), dtype)
        layer = self.network.add_fill((int(length),), trt.FillOperation.LINSPACE, dtype)
        layer.set_input(0, self.shape_tensor([length]))
        layer.alpha, layer.beta = 0, 1
        return self._noted(layer.get_output(0), (int(length),))

    def permute(self, itensor: trt.ITensor, order: Sequence[int]) -> trt.ITensor:
        """``itensor`` with its axes in ``order`` (no layer for the identity order)."""
        order = tuple(int(o) for o in order)
        if order == tuple(range(len(order))):
            return itensor
        layer = self.network.add_shuffle(itensor)
        layer.first_transpose = order
        example = self.dims(itensor)
        return self._noted(layer.get_output(0), [example[o] for o in order])

    def slice(self, itensor: trt.ITensor, start: Sequence[int], shape: Sequence[int],
              stride: Optional[Sequence[int]] = None, mode: Optional[trt.SampleMode] = None,
              fill: Any = None) -> trt.ITensor:
        """A static slice: output ``[i0, i1, ...]`` reads input ``[start[k] + i_k * stride[k]]`` on each axis.

        Negative strides walk backwards from ``start`` (``ctx.slice(x, [n - 1], [n], [-1])`` flips
        a 1-D ``x``). ``mode`` (a ``trt.SampleMode``) says what out-of-range coordinates read:
        FILL reads ``fill`` (a Python scalar, default 0), REFLECT/CLAMP/WRAP are torch's
        reflect/replicate/circular padding. No layer when the slice is the identity.
        Example: ``ctx.slice(x, (0, 1), (2, 3), (1, 2))`` is ``x[0:2, 1:7:2]``.
        """
        rank = len(itensor.shape)
        start = tuple(v if isinstance(v, TracedInt) else int(v) for v in start)
        shape = tuple(v if isinstance(v, TracedInt) else int(v) for v in shape)
        stride = (1,) * rank if stride is None else tuple(int(s) for s in stride)
        whole = all(n == d if d >= 0 else source_dim(n) == (itensor.name, i)
                    for i, (n, d) in enumerate(zip(shape, itensor.shape)))
        if (mode is None and start == (0,) * rank and whole and len(shape) == rank
                and all(st == 1 or n <= 1 for st, n in zip(stride, shape))):
            return itensor
        layer = self.network.add_slice(itensor, tuple(int(v) for v in start), tuple(int(v) for v in shape), stride)
        if any(isinstance(v, TracedInt) for v in start):
            layer.set_input(1, self.shape_tensor(start))
        if any(isinstance(v, TracedInt) for v in shape):
            layer.set_input(2, self.shape_tensor(shape))
        if mode is not None:
            layer.mode = mode
        if mode == trt.SampleMode.FILL and fill:  # TensorRT fills with 0 without a fill input
            layer.set_input(4, self.scalar(fill, itensor.dtype))
        return self._noted(layer.get_output(0), shape)

    def expand(self, itensor: trt.ITensor, shape: Sequence[Any]) -> trt.ITensor:
        """``itensor`` broadcast to ``shape`` (torch's ``expand``; ints or traced sizes): leading 1s, then
        a stride-0 slice re-reads each size-1 axis. Example: ``ctx.expand(ctx.scalar(0.0), (2, 3))``."""
        shape = tuple(v if isinstance(v, TracedInt) else int(v) for v in shape)
        itensor = self.broadcast_rank(itensor, len(shape))
        current = tuple(itensor.shape)
        if all(c == s if c >= 0 else source_dim(s) == (itensor.name, i)
               for i, (c, s) in enumerate(zip(current, shape))):
            return itensor
        if any(c < 0 and not isinstance(s, TracedInt) and s != 1 for c, s in zip(current, shape)):
            # torch expands only size-1 dims, so a dynamic dim's target (given as the example's size) is itself
            shape = tuple(d if c < 0 else s for d, c, s in zip(self.dims(itensor), current, shape))
        stride = [0 if d == 1 and s != 1 else 1 for d, s in zip(current, shape)]
        return self.slice(itensor, (0,) * len(shape), shape, stride)

    def broadcast_rank(self, itensor: trt.ITensor, rank: int) -> trt.ITensor:
        """``itensor`` with leading size-1 dims up to ``rank`` (dynamic dims are copied at run time)."""
        count = rank - len(itensor.shape)
        if count <= 0:
            return itensor
        return self.reshape(itensor, (1,) * count + self.dims(itensor))

    def broadcast(self, *itensors: trt.ITensor) -> list:
        """The tensors at one rank (leading size-1 dims added), as TensorRT's elementwise layers need."""
        rank = max(len(t.shape) for t in itensors)
        return [self.broadcast_rank(t, rank) for t in itensors]

    def elementwise(self, a: Any, b: Any, op: trt.ElementWiseOperation,
                    dtype: Optional[trt.DataType] = None) -> trt.ITensor:
        """``a op b`` with both operands cast to ``dtype`` (default: ``a``'s type) and broadcast."""
        ta = self.trt(a) if not isinstance(a, (bool, int, float)) else None
        dtype = dtype or (ta.dtype if ta is not None else self.trt(b).dtype)
        ta = self.trt(a, dtype)
        tb = self.trt(b, dtype)
        ta, tb = self.broadcast(ta, tb)
        return self.network.add_elementwise(ta, tb, op).get_output(0)

    def unary(self, x: Any, op: trt.UnaryOperation) -> trt.ITensor:
        return self.network.add_unary(self.trt(x), op).get_output(0)

    def activation(self, x: Any, kind: trt.ActivationType, alpha: Optional[float] = None,
                   beta: Optional[float] = None) -> trt.ITensor:
        layer = self.network.add_activation(self.trt(x), kind)
        if alpha is not None:
            layer.alpha = alpha
        if beta is not None:
            layer.beta = beta
        return layer.get_output(0)

    @staticmethod
    def output(layer: trt.ILayer, index: int = 0) -> trt.ITensor:
        """The ``index``-th output of ``layer``: what most converters return."""
        return layer.get_output(index)

    @staticmethod
    def axis(dim: int, rank: int) -> int:
        """A torch dim (possibly negative) as a TensorRT axis, with a clear error when out of range."""
        d = int(dim)
        if not -max(rank, 1) <= d < max(rank, 1):
            raise ConversionError(f"dim {dim} is out of range for a tensor of rank {rank}")
        return d % max(rank, 1)

    @classmethod
    def axes_mask(cls, dims: Union[int, Iterable[int], None], rank: int) -> int:
        """A TensorRT axes bitmask for torch ``dims`` (None: every axis)."""
        if dims is None:
            dims = range(rank)
        elif isinstance(dims, int):
            dims = [dims]
        mask = 0
        for d in dims:
            mask |= 1 << cls.axis(d, rank)
        return mask

    def spatial_layout(self, itensor: trt.ITensor, spatial: int) -> trt.ITensor:
        """``itensor`` (``[N,] C, *spatial``) in the ``N, C, *spatial`` layout with 2 or 3 spatial dims
        that TensorRT's convolution and pooling layers take: an unbatched input gets N=1 and a single
        spatial dim gets a trailing dim of 1 (extend the window/stride/padding with 1/1/0).
        Reshape the layer's output back with ``ctx.reshape(out, call.output.shape)``."""
        shape = self.dims(itensor)
        if len(shape) == spatial + 1:
            shape = (1,) + shape
        if spatial == 1:
            shape = shape + (1,)
        return self.reshape(itensor, shape)

    @staticmethod
    def shape(itensor: trt.ITensor) -> tuple:
        """The static shape of a network tensor (every dim is known while shapes are fixed)."""
        return tuple(itensor.shape)
