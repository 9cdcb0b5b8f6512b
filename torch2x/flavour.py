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
# The fused attention layer (IAttention): full TensorRT from 10.14, TensorRT-RTX 1.x. add_attention_v2 (a
# CausalMaskKind instead of a causal flag) exists on TensorRT 11 and TensorRT-RTX; on 10.x only add_attention.
_HAS_ATTENTION_V2: bool = hasattr(trt.INetworkDefinition, "add_attention_v2")
HAS_ATTENTION_LAYER: bool = _HAS_ATTENTION_V2 or hasattr(trt.INetworkDefinition, "add_attention")


def create_network(builder: trt.Builder) -> trt.INetworkDefinition:
    """A strongly typed network on every flavour.

    TensorRT 10.x needs the STRONGLY_TYPED flag; 11.x and TensorRT-RTX are always
    strongly typed and accept the flag for compatibility.
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if flag is None else 1 << int(flag)
    return builder.create_network(flags)


def add_attention(
    network: trt.INetworkDefinition, query: trt.ITensor, key: trt.ITensor, value: trt.ITensor,
    *, causal: bool = False, mask: trt.ITensor | None = None,
) -> trt.IAttention:
    """A fused attention ``softmax(query @ key^T (+ mask)) @ value`` on any flavour that has one.

    ``query`` is ``[B, Hq, Sq, D]``, ``key`` and ``value`` are ``[B, Hkv, Skv, D]`` with ``Hq % Hkv == 0``
    (grouped-query attention); the output is ``[B, Hq, Sq, D]``. TensorRT does not scale the scores:
    multiply ``query`` by ``1/sqrt(D)`` (or the model's scale) first.

    ``causal=True``: query ``i`` attends to keys ``0..i`` (``CausalMaskKind.UPPER_LEFT``, the diagonal
    anchored at the top-left corner, which is PyTorch's ``is_causal`` also when ``Sq != Skv``).
    ``mask`` is a 4-d ``[a0, a1, Sq, Skv]`` tensor, ``a0``/``a1`` broadcast over batch and heads: a bool
    mask is True where a query may attend; a float mask (of ``query``'s type) is added to the scores.
    TensorRT takes a causal flag or a mask, not both.

    ``network`` may be the conversion context's naming wrapper: the call goes through its
    ``add_attention*`` so the attention is named like any layer. The attention is marked
    decomposable so TensorRT may build it from separate kernels where it has no fused one (without
    that, a CPU-only build of a float32 attention fails with "not supported by a dedicated kernel").
    In the network it appears as two layers, ``ATTENTION_INPUT`` and ``ATTENTION_OUTPUT``; the output
    is ``attention.get_output(0)``. Example::

        scaled = network.add_elementwise(q, inv_sqrt_d, trt.ElementWiseOperation.PROD).get_output(0)
        out = add_attention(network, scaled, k, v, causal=True).get_output(0)
    """
    if not HAS_ATTENTION_LAYER:
        raise NotImplementedError(
            f"{describe()} has no attention layer (IAttention arrived in TensorRT 10.14); "
            "express attention with matrix multiplies and a softmax, or upgrade TensorRT"
        )
    if causal and mask is not None:
        raise ValueError(
            "TensorRT's attention takes a causal flag or a mask, not both: fold the causal triangle into the mask"
        )
    if mask is not None:
        if len(mask.shape) != 4:
            raise ValueError(f"the attention mask must be 4-d [a0, a1, Sq, Skv], got shape {tuple(mask.shape)}")
        if mask.dtype not in (trt.DataType.BOOL, query.dtype):
            # TensorRT accepts the network and fails in the build with a Myelin type error.
            raise ValueError(
                f"a float attention mask must have the query's type {query.dtype}, got {mask.dtype}: cast it first"
            )
    softmax = trt.AttentionNormalizationOp.SOFTMAX
    if _HAS_ATTENTION_V2:
        kind = trt.CausalMaskKind.UPPER_LEFT if causal else trt.CausalMaskKind.NONE
        attention = network.add_attention_v2(query, key, value, softmax, kind)
    else:
        attention = network.add_attention(query, key, value, softmax, bool(causal))
    if attention is None:
        raise ValueError(
            f"TensorRT refused the attention of query {tuple(query.shape)}, key {tuple(key.shape)}, "
            f"value {tuple(value.shape)} (the TensorRT log says why)"
        )
    attention.decomposable = True
    if mask is not None:
        attention.mask = mask  # IAttention::setMask; the mask is input 3 of the ATTENTION_INPUT layer
        if attention.mask is None:  # setMask reports a refusal to the log only
            raise ValueError(f"TensorRT refused the attention mask of shape {tuple(mask.shape)} (see its log)")
    return attention


def describe() -> str:
    """``"tensorrt_rtx 1.7.1.116"``: the flavour and version, for errors and metadata."""
    return f"{NAME} {VERSION}"


_LAYER_CLASSES: dict = {}


def concrete_layer(layer: trt.ILayer) -> trt.ILayer:
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


# Build options (torch2x.build_options) this flavour lacks, with why; checked on tensorrt_rtx 1.7.1 on a CPU:
# its timing-cache calls are documented no-ops, setHardwareCompatibilityLevel() only logs "unsupported in
# TensorRT-RTX", and VERSION_COMPATIBLE fails the build needing libnvinfer_lean, which its wheel lacks.
_RTX_REFUSALS = {
    "timing_cache": "TensorRT-RTX has no timing cache (its timing-cache calls are no-ops); it picks tactics on the "
                    "target GPU at run time",
    "hardware_compatibility": "TensorRT-RTX ignores hardware compatibility levels; choose ahead-of-time targets with "
                              "compute_capabilities instead",
    "version_compatible": "TensorRT-RTX cannot build version-compatible engines (the build needs libnvinfer_lean, "
                          "which tensorrt_rtx does not ship)",
}
_FULL_REFUSALS = {
    "compute_capabilities": "compute_capabilities are TensorRT-RTX ahead-of-time targets; full TensorRT builds for "
                            "the GPU it runs on (see hardware_compatibility)",
}


def builder_option_refusal(option: str) -> str:
    """Why this flavour has no build option ``option`` (a :class:`torch2x.build_options.BuildOptions` field),
    or ``""`` when it has it."""
    return (_RTX_REFUSALS if IS_RTX else _FULL_REFUSALS).get(option, "")


def set_compute_capabilities(config: trt.IBuilderConfig, targets: list) -> None:
    """TensorRT-RTX's ahead-of-time targets: ``["8.9", "12.0"]``, ``["SM89"]`` or ``["current"]`` (the GPU
    of the building machine). Raises ValueError naming a target this TensorRT-RTX does not know."""
    known = {k: v for k, v in trt.ComputeCapability.__members__.items() if k != "NONE"}
    chosen = []
    for target in targets:
        key = str(target).upper().replace(".", "")
        key = key if key in known else "SM" + key
        if key not in known:
            raise ValueError(f"build option compute_capabilities: {target!r} is not a target of {describe()}; "
                             f"known: {', '.join(k if k == 'CURRENT' else k[2:-1] + '.' + k[-1] for k in known)}")
        chosen.append(known[key])
    config.num_compute_capabilities = len(chosen)
    for index, capability in enumerate(chosen):
        config.set_compute_capability(capability, index)
