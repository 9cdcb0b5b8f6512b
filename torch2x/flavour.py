"""Which TensorRT is in use, and every difference between the flavours.

torch2x runs on full TensorRT (``tensorrt``, 10.x strongly typed or 11.x) and on
TensorRT for RTX (``tensorrt_rtx``, 1.x). Nothing outside this module imports a
TensorRT package or asks which flavour is active.

``TORCH2X_TRT=tensorrt|tensorrt_rtx`` forces a flavour; otherwise ``tensorrt`` is
preferred when importable.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

_CANDIDATES = ("tensorrt", "tensorrt_rtx")
_EXTRA = {"tensorrt": "tensorrt", "tensorrt_rtx": "rtx"}


def _import_flavour() -> tuple[str, ModuleType]:
    forced = os.environ.get("TORCH2X_TRT", "").strip()
    if forced:
        if forced not in _CANDIDATES:
            raise ImportError(
                f"TORCH2X_TRT={forced!r} is not a TensorRT flavour; use one of {', '.join(_CANDIDATES)}"
            )
        try:
            return forced, importlib.import_module(forced)
        except ImportError as exc:
            raise ImportError(
                f"TORCH2X_TRT={forced} but {forced} cannot be imported ({exc}); "
                f"install it with: pip install 'torch2x[{_EXTRA[forced]}]'"
            ) from exc
    errors = []
    for name in _CANDIDATES:
        try:
            return name, importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError(
        "torch2x needs TensorRT and found none ("
        + "; ".join(errors)
        + "). Install full TensorRT with: pip install 'torch2x[tensorrt]' "
        "(needs NVIDIA's download server), or TensorRT for RTX with: pip install 'torch2x[rtx]'"
    )


NAME, trt = _import_flavour()
VERSION: str = trt.__version__
IS_RTX: bool = NAME == "tensorrt_rtx"
MAJOR: int = int(VERSION.split(".")[0])
# Plugin layers exist on full TensorRT only; the Python plugin API (tensorrt.plugin) from 10.6.
SUPPORTS_PLUGINS: bool = hasattr(trt.INetworkDefinition, "add_plugin_v3")


def create_network(builder: "trt.Builder") -> "trt.INetworkDefinition":
    """A strongly typed network on every flavour.

    TensorRT 10.x needs the STRONGLY_TYPED flag; 11.x and TensorRT-RTX are always
    strongly typed and accept the flag for compatibility.
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if flag is None else 1 << int(flag)
    return builder.create_network(flags)


def describe() -> str:
    """``"tensorrt_rtx 1.7.1.116"``: the flavour and version, for errors and metadata."""
    return f"{NAME} {VERSION}"


_LAYER_CLASSES: dict = {}


def concrete_layer(layer: "trt.ILayer") -> "trt.ILayer":
    """Give a layer from ``network.get_layer(i)`` its concrete class so its attributes read back."""
    if not _LAYER_CLASSES:
        for attr in dir(trt):
            cls = getattr(trt, attr)
            if isinstance(cls, type) and attr.startswith("I") and attr.endswith("Layer"):
                _LAYER_CLASSES[attr[1:-5].upper().replace("_", "")] = cls
        _LAYER_CLASSES.update(  # LayerType names that do not match their class name
            ELEMENTWISE=trt.IElementWiseLayer, SOFTMAX=trt.ISoftMaxLayer,
            PLUGINV2=getattr(trt, "IPluginV2Layer", None), PLUGINV3=getattr(trt, "IPluginV3Layer", None),
            CONDITION=getattr(trt, "IConditionLayer", None),
            CONDITIONALINPUT=getattr(trt, "IIfConditionalInputLayer", None),
            CONDITIONALOUTPUT=getattr(trt, "IIfConditionalOutputLayer", None),
        )
    cls = _LAYER_CLASSES.get(layer.type.name.replace("_", ""))
    if cls is not None:
        layer.__class__ = cls
    return layer
