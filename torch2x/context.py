"""The conversion context: torch values to network tensors, layer naming, and the shared layer helpers.

Converters reach TensorRT only through a context: ``ctx.network.add_*`` (each layer
is named ``module.path/op`` automatically), ``ctx.trt(value)`` for any torch tensor,
parameter or Python scalar, and the helpers below for casts, broadcasting, reshapes
and axes. Nothing here is specific to one op.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .dtypes import to_torch, to_trt
from .flavour import trt
from .precision import PrecisionPolicy

ITensor = "trt.ITensor"


def sizes(value: Any) -> tuple:
    """The dims of a torch tensor (or network tensor) as ints: the one place converters read sizes, so
    that dynamic shapes can later return traced sizes here."""
    return tuple(int(s) for s in value.shape)


class ConversionError(RuntimeError):
    """A converter cannot express this call (an argument combination TensorRT has no layer for...)."""


class _NamedNetwork:
    """``INetworkDefinition`` whose ``add_*`` methods name each new layer after the call being converted."""

    def __init__(self, network: "trt.INetworkDefinition", ctx: "ConversionContext"):
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

    def __init__(self, network: "trt.INetworkDefinition", policy: Optional[PrecisionPolicy] = None):
        self.raw_network = network
        self.network = _NamedNetwork(network, self)
        self.policy = policy or PrecisionPolicy()
        self.module_path = ""
        self.op = "op"
        self.fp32_region = False  # inside a converter that keeps float32 under reduced precision
        self._tensors: dict[int, tuple] = {}  # id(torch tensor) -> (tensor kept alive, ITensor)
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
        self._call_name = "op"
        self._call_layers = 0
        self.quantizer: Any = None  # a torch2x.quantization.Quantizer in an int8 conversion

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

    @contextmanager
    def layer_names(self, name: str) -> Iterator[None]:
        """Layers added inside the block are named ``name``, ``name.1``...; then the call's naming resumes."""
        saved = self._call_name, self._call_layers
        self._call_name, self._call_layers = name, 0
        try:
            yield
        finally:
            self._call_name, self._call_layers = saved

    def _name_layer(self, layer: "trt.ILayer") -> None:
        name = self._call_name if self._call_layers == 0 else f"{self._call_name}.{self._call_layers}"
        self._call_layers += 1
        layer.name = name
        for k in range(layer.num_outputs):
            layer.get_output(k).name = name if layer.num_outputs == 1 else f"{name}:{k}"

    # --- torch tensors <-> network tensors ------------------------------------------
    def bind(self, tensor: torch.Tensor, itensor: "trt.ITensor") -> None:
        """Record that ``tensor`` (a real torch value of the traced pass) is ``itensor`` in the network."""
        self._tensors[id(tensor)] = (tensor, itensor)
        if any(d < 0 for d in itensor.shape):  # dynamic dims: remember the example's sizes for reshapes
            self._example_sizes[itensor.name] = tuple(tensor.shape)

    def lookup(self, tensor: Any) -> Optional["trt.ITensor"]:
        """The network tensor of a traced torch tensor, or None for anything else."""
        entry = self._tensors.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def is_traced(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and self.lookup(value) is not None

    def dtype_for(self, dtype: torch.dtype) -> "trt.DataType":
        """The network type that holds values PyTorch computes in ``dtype``, under the precision policy."""
        if dtype.is_floating_point:
            return trt.DataType.FLOAT if self.fp32_region else self.policy.float_type(dtype)
        return to_trt(dtype)

    def trt(self, value: Any, dtype: Optional[Union[torch.dtype, "trt.DataType"]] = None) -> "trt.ITensor":
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
        elif isinstance(value, (bool, int, float, np.number)):
            return self.scalar(value, dtype)
        elif hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "name"):  # already an ITensor
            itensor = value
        else:
            raise ConversionError(f"{self.op}: cannot turn {type(value).__name__} into a network tensor")
        return itensor if dtype is None else self.cast(itensor, dtype)

    def trt_shaped(self, value: Any, shape: Sequence[int]) -> "trt.ITensor":
        """``self.trt(value)`` reshaped to ``shape`` (same element count). A tensor that is not traced
        (a weight) becomes a constant already in that shape, made once per shape: no shuffle layer.
        Example: ``ctx.trt_shaped(linear.bias, (1, 1, out_features))`` to add to a rank-3 tensor.
        """
        shape = tuple(int(s) for s in shape)
        if isinstance(value, torch.Tensor) and self.lookup(value) is None:
            return self._tensor_constant(value, shape)
        return self.reshape(self.trt(value), shape)

    def _tensor_constant(self, tensor: torch.Tensor, shape: Optional[tuple] = None) -> "trt.ITensor":
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

    def constant(self, value: Union[torch.Tensor, np.ndarray, Sequence], dtype: "trt.DataType") -> "trt.ITensor":
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

    def weights(self, value: Union[torch.Tensor, np.ndarray], dtype: "trt.DataType") -> "trt.Weights":
        """Host weights (a layer's kernel or bias) in network type ``dtype``, kept alive until the build."""
        t = torch.as_tensor(value).detach().to("cpu", to_torch(dtype))
        array = np.ascontiguousarray(t.numpy())
        self._keepalive.append(array)
        return trt.Weights(array)

    def quantize_input(self, call: Any, operand: str, itensor: "trt.ITensor") -> "trt.ITensor":
        """In an int8 conversion, ``itensor`` (the network value of ``call``'s argument ``operand``)
        through a calibrated Quantize/Dequantize pair when the call and operand are quantizable
        (``torch2x.quantization.QUANTIZABLE``, a traced float value); otherwise ``itensor`` itself.
        Example: ``x = ctx.quantize_input(call, "input", ctx.trt(call.arg("input")))``."""
        return itensor if self.quantizer is None else self.quantizer.quantize_input(self, call, operand, itensor)

    def quantized_weights(self, weight: torch.Tensor, dtype: "trt.DataType", axis: int = 0) -> "trt.ITensor":
        """A weight (parameter) as a network tensor of type ``dtype``; in an int8 conversion through a
        Quantize/Dequantize pair per output channel along ``axis`` (``max|w| / 127``)."""
        if self.quantizer is None or self.is_traced(weight):
            return self.trt(weight, dtype)
        return self.quantizer.quantized_weights(self, weight, dtype, axis)

    def write_through(self, view: torch.Tensor, base: torch.Tensor) -> "trt.ITensor":
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

    def scalar(self, value: Union[bool, int, float], dtype: Optional["trt.DataType"] = None) -> "trt.ITensor":
        """A rank-0 constant; its type is ``dtype`` or follows Python's (float -> policy float, int -> int64)."""
        if dtype is None:
            dtype = (trt.DataType.BOOL if isinstance(value, bool) else
                     trt.DataType.INT64 if isinstance(value, (int, np.integer)) else self.dtype_for(torch.float32))
        key = (float(value), str(type(value)), dtype)
        if key not in self._constants:
            self._constants[key] = (None, self.constant(np.array(value), dtype))
        return self._constants[key][1]

    # --- shared layer helpers ----------------------------------------------------------
    def cast(self, itensor: "trt.ITensor", dtype: Union["trt.DataType", torch.dtype]) -> "trt.ITensor":
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
            self._casts[key] = out
            self._cast_sources[out.name] = itensor
        return self._casts[key]

    def reshape(self, itensor: "trt.ITensor", shape: Sequence[int]) -> "trt.ITensor":
        """``itensor`` reshaped to ``shape``, the example's sizes (no layer when it already has them).

        With dynamic dims (-1 in ``itensor.shape``), a reshape that keeps the leading dims up to the last
        dynamic one copies them at run time (``reshape_dims`` 0 placeholders), so flatten/view after a
        dynamic batch follow the batch; any other reshape of a dynamic dim is a ConversionError.
        """
        shape = tuple(int(s) for s in shape)
        current = tuple(itensor.shape)
        if len(current) == len(shape) and all(c == s for c, s in zip(current, shape) if c >= 0):
            return itensor  # the same shape (a dynamic dim then holds the example's size too)
        layer = self.network.add_shuffle(itensor)
        if all(d >= 0 for d in current):
            layer.reshape_dims = shape
            layer.zero_is_placeholder = False  # torch never means "copy this dim" by 0
            return layer.get_output(0)
        example = self._example_sizes.get(itensor.name)
        keep = max(i for i, d in enumerate(current) if d < 0) + 1
        if (example is None or example[:keep] != shape[:keep] or 0 in shape
                or math.prod(shape[keep:]) != math.prod(current[keep:])):
            raise ConversionError(f"cannot reshape {example or current} to {shape} when dims "
                                  f"{[i for i, d in enumerate(current) if d < 0]} are dynamic")
        layer.reshape_dims = (0,) * keep + shape[keep:]
        layer.zero_is_placeholder = True
        return layer.get_output(0)

    def permute(self, itensor: "trt.ITensor", order: Sequence[int]) -> "trt.ITensor":
        """``itensor`` with its axes in ``order`` (no layer for the identity order)."""
        order = tuple(int(o) for o in order)
        if order == tuple(range(len(order))):
            return itensor
        layer = self.network.add_shuffle(itensor)
        layer.first_transpose = order
        return layer.get_output(0)

    def slice(self, itensor: "trt.ITensor", start: Sequence[int], shape: Sequence[int],
              stride: Optional[Sequence[int]] = None, mode: Optional["trt.SampleMode"] = None,
              fill: Any = None) -> "trt.ITensor":
        """A static slice: output ``[i0, i1, ...]`` reads input ``[start[k] + i_k * stride[k]]`` on each axis.

        Negative strides walk backwards from ``start`` (``ctx.slice(x, [n - 1], [n], [-1])`` flips
        a 1-D ``x``). ``mode`` (a ``trt.SampleMode``) says what out-of-range coordinates read:
        FILL reads ``fill`` (a Python scalar, default 0), REFLECT/CLAMP/WRAP are torch's
        reflect/replicate/circular padding. No layer when the slice is the identity.
        Example: ``ctx.slice(x, (0, 1), (2, 3), (1, 2))`` is ``x[0:2, 1:7:2]``.
        """
        rank = len(itensor.shape)
        start = tuple(int(s) for s in start)
        shape = tuple(int(s) for s in shape)
        stride = (1,) * rank if stride is None else tuple(int(s) for s in stride)
        if (mode is None and start == (0,) * rank and shape == tuple(itensor.shape)
                and all(st == 1 or n <= 1 for st, n in zip(stride, shape))):
            return itensor
        layer = self.network.add_slice(itensor, start, shape, stride)
        if mode is not None:
            layer.mode = mode
        if mode == trt.SampleMode.FILL and fill:  # TensorRT fills with 0 without a fill input
            layer.set_input(4, self.scalar(fill, itensor.dtype))
        return layer.get_output(0)

    def expand(self, itensor: "trt.ITensor", shape: Sequence[int]) -> "trt.ITensor":
        """``itensor`` broadcast to the static ``shape`` (torch's ``expand``): leading 1s, then a
        stride-0 slice re-reads each size-1 axis. Example: ``ctx.expand(ctx.scalar(0.0), (2, 3))``."""
        shape = tuple(int(s) for s in shape)
        itensor = self.reshape(itensor, (1,) * (len(shape) - len(itensor.shape)) + tuple(itensor.shape))
        if tuple(itensor.shape) == shape:
            return itensor
        stride = [0 if d == 1 and s != 1 else 1 for d, s in zip(itensor.shape, shape)]
        return self.network.add_slice(itensor, (0,) * len(shape), shape, stride).get_output(0)

    def broadcast(self, *itensors: "trt.ITensor") -> list:
        """The tensors at one rank (leading size-1 dims added), as TensorRT's elementwise layers need."""
        rank = max(len(t.shape) for t in itensors)
        return [t if len(t.shape) == rank else self._prepend_ones(t, rank - len(t.shape)) for t in itensors]

    def _prepend_ones(self, itensor: "trt.ITensor", count: int) -> "trt.ITensor":
        if all(d >= 0 for d in itensor.shape):
            return self.reshape(itensor, (1,) * count + tuple(itensor.shape))
        layer = self.network.add_shuffle(itensor)  # 0 placeholders copy the (dynamic) dims at run time
        layer.reshape_dims = (1,) * count + (0,) * len(itensor.shape)
        layer.zero_is_placeholder = True
        return layer.get_output(0)

    def elementwise(self, a: Any, b: Any, op: "trt.ElementWiseOperation",
                    dtype: Optional["trt.DataType"] = None) -> "trt.ITensor":
        """``a op b`` with both operands cast to ``dtype`` (default: ``a``'s type) and broadcast."""
        ta = self.trt(a) if not isinstance(a, (bool, int, float)) else None
        dtype = dtype or (ta.dtype if ta is not None else self.trt(b).dtype)
        ta = self.trt(a, dtype)
        tb = self.trt(b, dtype)
        ta, tb = self.broadcast(ta, tb)
        return self.network.add_elementwise(ta, tb, op).get_output(0)

    def unary(self, x: Any, op: "trt.UnaryOperation") -> "trt.ITensor":
        return self.network.add_unary(self.trt(x), op).get_output(0)

    def activation(self, x: Any, kind: "trt.ActivationType", alpha: Optional[float] = None,
                   beta: Optional[float] = None) -> "trt.ITensor":
        layer = self.network.add_activation(self.trt(x), kind)
        if alpha is not None:
            layer.alpha = alpha
        if beta is not None:
            layer.beta = beta
        return layer.get_output(0)

    @staticmethod
    def output(layer: "trt.ILayer", index: int = 0) -> "trt.ITensor":
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

    def spatial_layout(self, itensor: "trt.ITensor", spatial: int) -> "trt.ITensor":
        """``itensor`` (``[N,] C, *spatial``) in the ``N, C, *spatial`` layout with 2 or 3 spatial dims
        that TensorRT's convolution and pooling layers take: an unbatched input gets N=1 and a single
        spatial dim gets a trailing dim of 1 (extend the window/stride/padding with 1/1/0).
        Reshape the layer's output back with ``ctx.reshape(out, call.output.shape)``."""
        shape = tuple(itensor.shape)
        if len(shape) == spatial + 1:
            shape = (1,) + shape
        if spatial == 1:
            shape = shape + (1,)
        return self.reshape(itensor, shape)

    @staticmethod
    def shape(itensor: "trt.ITensor") -> tuple:
        """The static shape of a network tensor (every dim is known while shapes are fixed)."""
        return tuple(itensor.shape)
