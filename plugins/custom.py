"""User plugins: a custom op with its shape rule and PyTorch implementation becomes a TensorRT plugin.

Example::

    @torch2x.plugins.plugin_op("mylib::scaled_tanh", shape=lambda x, scale: x.shape)
    def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.tanh(x) * scale

On full TensorRT (``flavour.SUPPORTS_PLUGINS``) each call becomes a plugin layer through
TensorRT's Python plugin API (``tensorrt.plugin``, 10.6+): a ``@trtp.register`` descriptor built
from the shape rule and a ``@trtp.impl`` that runs the PyTorch implementation on TensorRT's
stream. The interpreter runs a plugin layer with the op's PyTorch implementation.

TensorRT-RTX has no plugin layers: the call is reported as needing plugin support (``report.ok`` is False,
strict conversions raise), but the converter raises
:class:`~torch2x.report.UnsupportedWithPlaceholder` with one placeholder constant per output (the output's
shape and type; metadata naming the op, its attributes and its input tensors), so the rest of the model
converts. The interpreter runs each placeholder with the op's PyTorch implementation
(``build_network(..., strict=False).interpret(...)``); engine builds refuse such networks.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Callable, Sequence

import numpy as np
import torch

from torch2x import flavour
from torch2x.context import ConversionError
from torch2x.dtypes import to_torch, to_trt
from torch2x.flavour import trt
from torch2x.registry import CONVERTERS, Converter
from torch2x.report import UnsupportedWithPlaceholder
from torch2x.tracer import register_target, tensor_leaves, traceable

_ATTR_TYPES = (bool, int, float, str)


@dataclass
class PluginOp:
    """A custom op registered with :func:`plugin_op`."""

    name: str  # "namespace::name", the TensorRT plugin id and the torch.library name
    impl: Callable  # the PyTorch implementation
    shape: Callable  # (*args, **kwargs) with tensors -> an output shape, or a list of them
    dtype: Optional[Callable]  # same arguments -> the output dtype(s); default: the first tensor input's
    signature: inspect.Signature
    # parameter names of the tensor inputs and the attributes with their types: from the annotations, else
    # from the first converted call
    tensors: Optional[tuple] = None
    attrs: Optional[dict] = None
    num_outputs: int = 1
    descriptor: Any = field(default=None, repr=False)  # the tensorrt.plugin PluginDef

    def split(self, bound: dict) -> tuple:
        """Bound arguments as (tensor names, {attribute name: value}) in TensorRT's order."""
        tensors = tuple(k for k, v in bound.items() if isinstance(v, torch.Tensor))
        attrs = {}
        for k, v in bound.items():
            if k in tensors:
                continue
            if not isinstance(v, _ATTR_TYPES):
                raise ConversionError(f"{self.name}: argument {k}={v!r} is neither a tensor nor an int, float, "
                                      "bool or str, the attribute types a TensorRT plugin can take")
            attrs[k] = v
        return tensors, attrs

    def output_shapes(self, inputs: Sequence[torch.Tensor], attrs: dict) -> list:
        """The shape of every output for tensor ``inputs`` (meta tensors will do), as tuples."""
        shapes = self.shape(**dict(zip(self.tensors, inputs)), **attrs)
        single = isinstance(shapes, torch.Size) or all(isinstance(d, int) for d in shapes)
        return [tuple(int(d) for d in s) for s in ([shapes] if single else shapes)]

    def output_dtypes(self, inputs: Sequence[torch.Tensor], attrs: dict) -> list:
        """The torch dtype of every output (default: the first tensor input's)."""
        if self.dtype is None:
            return [inputs[0].dtype] * self.num_outputs
        dtypes = self.dtype(**dict(zip(self.tensors, inputs)), **attrs)
        return list(dtypes) if isinstance(dtypes, (tuple, list)) else [dtypes]

    def trt_definition(self, tensors: tuple, attr_types: dict) -> Any:
        """Register the op with ``tensorrt.plugin`` (once) and return its PluginDef.

        ``tensors`` names the tensor parameters, ``attr_types`` maps the attribute parameters to their
        Python types. The descriptor and implementation follow TensorRT's documented schema:
        ``(inp0: TensorDesc, ..., attr0: int, ...) -> Tuple[TensorDesc, ...]`` and
        ``(inp0, ..., attr0, ..., outputs, stream) -> None``."""
        if self.descriptor is not None:
            if (tuple(tensors), dict(attr_types)) != (self.tensors, self.attrs):
                raise ConversionError(f"{self.name}: called with tensor inputs {tensors} and attributes {attr_types}, "
                                      f"but its TensorRT plugin was registered with {self.tensors} and {self.attrs}")
            return self.descriptor
        import tensorrt.plugin as trtp  # full TensorRT 10.6+ only

        namespace, name = self.name.split("::")
        if hasattr(getattr(trtp.op, namespace, None), name):
            raise ValueError(f"{self.name} is already registered with tensorrt.plugin (plugin ids are per process)")
        self.tensors, self.attrs = tensors, attr_types
        op = self

        def describe(*descs, **attr_values):
            # TensorRT calls this first with fake shapes, reading only the output types
            # (get_output_data_types), then with the real shape expressions (get_output_shapes)
            fake = any(_is_fake(d) for desc in descs for d in desc.shape_expr)
            shapes = [(1,) * len(desc.shape_expr) if fake else _constant_dims(desc) for desc in descs]
            metas = [torch.empty(s, dtype=to_torch(d.dtype), device="meta") for s, d in zip(shapes, descs)]
            dtypes = [to_trt(t) for t in op.output_dtypes(metas, attr_values)]
            if fake:
                return tuple(trtp.from_shape_expr(descs[0].shape_expr, dtype=t) for t in dtypes)
            return tuple(trtp.from_shape_expr(s, dtype=t) for s, t in zip(op.output_shapes(metas, attr_values), dtypes))

        def run(*args, stream):
            # TensorRT passes the inputs, the attributes and the tuple of outputs positionally
            count = len(op.tensors)
            inputs = [torch.as_tensor(t, device="cuda") for t in args[:count]]
            attr_values = dict(zip(op.attrs, args[count:-1]))
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                results = op.impl(**dict(zip(op.tensors, inputs)), **attr_values)
                results = [results] if isinstance(results, torch.Tensor) else list(results)
                for out, res in zip(args[-1], results):
                    torch.as_tensor(out, device="cuda").copy_(res)

        tensor_params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=trtp.TensorDesc)
                         for n in tensors]
        attr_params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t)
                       for n, t in attr_types.items()]
        outputs = tuple[(trtp.TensorDesc,) * self.num_outputs]
        describe.__signature__ = inspect.Signature(tensor_params + attr_params, return_annotation=outputs)
        run_params = [p.replace(annotation=inspect.Parameter.empty) for p in tensor_params + attr_params]
        run.__signature__ = inspect.Signature(run_params + [
            inspect.Parameter("outputs", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("stream", inspect.Parameter.POSITIONAL_OR_KEYWORD)])
        trtp.register(self.name)(describe)
        trtp.impl(self.name)(run)
        self.descriptor = getattr(getattr(trtp.op, namespace), name)
        return self.descriptor


PLUGIN_OPS: dict[str, PluginOp] = {}


def _is_fake(dim: Any) -> bool:
    """Whether a tensorrt.plugin ShapeExpr is a placeholder (newer versions say so with ``is_fake``,
    older ones raise on ``is_constant``)."""
    fake = getattr(dim, "is_fake", None)
    if fake is not None:
        return bool(fake)
    try:
        _ = dim.is_constant
    except RuntimeError:
        return True
    return False


def _constant_dims(desc: Any) -> tuple:
    dims = []
    for d in desc.shape_expr:
        if not d.is_constant:
            raise ValueError("torch2x plugins take fixed shapes; a dimension is dynamic")
        dims.append(d.constant_value())
    return tuple(dims)


def plugin_op(name: str, shape: Callable, dtype: Optional[Callable] = None,
              num_outputs: int = 1) -> Callable[[Callable], Callable]:
    """Register a custom op as a TensorRT plugin: decorate its PyTorch implementation.

    ``name`` is ``"namespace::name"`` (TensorRT's plugin id, and the ``torch.library`` name when
    the decorated function is a ``torch.library.custom_op``: calls through ``torch.ops.namespace.name``
    are then converted too). ``shape`` takes the op's arguments (tensors, which may be on the meta
    device) and returns the output shape, or a list of shapes for ``num_outputs`` > 1; ``dtype``
    likewise returns the output dtype(s) (default: the first tensor input's). Tensor arguments
    become plugin inputs; int, float, bool and str arguments become plugin attributes. Example::

        @torch2x.plugins.plugin_op("mylib::scaled_tanh", shape=lambda x, scale: x.shape)
        def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
            return torch.tanh(x) * scale

    On TensorRT-RTX, which has no plugin layers, converting a call reports
    ``"<name> needs plugin support, which tensorrt_rtx lacks"`` and leaves placeholders that only the
    interpreter runs (see the module docstring).
    """
    if name.count("::") != 1 or not all(name.split("::")):
        raise ValueError(f"plugin op name {name!r} must look like 'namespace::name'")

    def register(fn: Callable) -> Callable:
        signature = inspect.signature(getattr(fn, "_init_fn", fn))  # a torch.library CustomOpDef wraps _init_fn
        op = PLUGIN_OPS[name] = PluginOp(name, fn, shape, dtype, signature, num_outputs=num_outputs)
        CONVERTERS[name] = Converter(name, _convert, signature, False)
        annotated = _annotated_split(signature)
        if annotated is not None:
            op.tensors, op.attrs = annotated
            if flavour.SUPPORTS_PLUGINS:
                # registered now, so a process that only deserializes engines finds the plugin creator too
                op.trt_definition(*annotated)
        namespace, short = name.split("::")
        if hasattr(fn, "_init_fn") or _torch_op_exists(namespace, short):
            register_target(getattr(torch.ops, namespace), short, name)
        return traceable(name)(fn)

    return register


def _annotated_split(signature: inspect.Signature) -> Optional[tuple]:
    """(tensor parameter names, {attribute name: type}) from the annotations, or None when one is missing."""
    names = {"Tensor": torch.Tensor, "torch.Tensor": torch.Tensor, **{t.__name__: t for t in _ATTR_TYPES}}
    tensors, attrs = [], {}
    for p in signature.parameters.values():
        kind = names.get(p.annotation, p.annotation) if isinstance(p.annotation, str) else p.annotation
        if kind is torch.Tensor:
            tensors.append(p.name)
        elif kind in _ATTR_TYPES:
            attrs[p.name] = kind
        else:
            return None
    return tuple(tensors), attrs


def _torch_op_exists(namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _convert(ctx, call):
    op = PLUGIN_OPS[call.name]
    tensors, attrs = op.split(call.bound())
    bound = call.bound()
    if not flavour.SUPPORTS_PLUGINS:
        raise UnsupportedWithPlaceholder(
            f"{op.name} needs plugin support, which {flavour.NAME} lacks: rewrite it with torch ops, or run it in "
            "PyTorch between two converted parts of the model (build_network(strict=False) keeps a placeholder "
            "that only the interpreter runs)", _placeholders(ctx, call, op, tensors, attrs))
    definition = op.trt_definition(tensors, {k: type(v) for k, v in attrs.items()})
    inputs = [ctx.trt(bound[n], ctx.dtype_for(bound[n].dtype)) for n in tensors]
    layer = ctx.network.add_plugin(definition(*inputs, **attrs))
    layer.metadata = json.dumps({"torch2x_plugin": op.name, "tensors": list(tensors), "attrs": attrs})
    return [layer.get_output(i) for i in range(layer.num_outputs)]


def _placeholders(ctx, call, op: PluginOp, tensors: tuple, attrs: dict) -> list:
    """One constant of zeros per output of the call, of its network shape and type, whose metadata lets the
    interpreter run ``op.impl`` in its place (see ``torch2x.interpreter.core.placeholder_meta``)."""
    bound = call.bound()
    # identities of its own: _mark_outputs renames a tensor it marks as a network output, which would
    # leave the names in the metadata dangling
    inputs = [ctx.network.add_identity(ctx.trt(bound[n], ctx.dtype_for(bound[n].dtype))).get_output(0)
              for n in tensors]
    outputs = []
    for k, t in enumerate(tensor_leaves(call.output)):
        dtype = ctx.dtype_for(t.dtype)
        # zero bytes are zero in every TensorRT type, bfloat16 included (which numpy cannot hold)
        zeros = np.zeros(t.numel() * to_torch(dtype).itemsize, np.uint8)
        ctx._keepalive.append(zeros)  # TensorRT keeps a pointer to the weights
        layer = ctx.network.add_constant(tuple(t.shape), trt.Weights(dtype, zeros.ctypes.data, t.numel()))
        layer.metadata = json.dumps({"torch2x_plugin": op.name, "placeholder": True, "output": k,
                                     "tensors": list(tensors), "attrs": attrs, "inputs": [i.name for i in inputs]})
        outputs.append(layer.get_output(0))
    return outputs


def run_plugin_layer(name: str, inputs: list, meta: dict) -> list:
    """Run a plugin layer made by :func:`plugin_op` with the op's PyTorch implementation (the interpreter's rule)."""
    op = PLUGIN_OPS.get(name)
    if op is None:
        raise KeyError(f"plugin op {name!r} is not registered in this process: import the module that "
                       "declares it with torch2x.plugins.plugin_op")
    out = op.impl(**dict(zip(meta["tensors"], inputs)), **meta.get("attrs", {}))
    return [out] if isinstance(out, torch.Tensor) else list(out)
