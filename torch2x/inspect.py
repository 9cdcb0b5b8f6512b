"""The optimized engine graph: the kernels TensorRT runs, what they read and write, and a roofline estimate.

Network layer counts say little about latency: TensorRT fuses layers into kernels. TensorRT-RTX's
ahead-of-time build prints the engine it would run, even on a machine without a GPU, when the builder
config asks for ``ProfilingVerbosity.DETAILED`` and the logger passes VERBOSE messages: one line per engine
layer, ``Name: ..., LayerType: ..., Inputs: [...], Constants: [...], Outputs: [...], TacticName: ...,
StreamId: k, Metadata: ...`` where Metadata lists the network layers fused into that kernel. On full
TensorRT, the same records come from ``IEngineInspector`` on the deserialized engine (needs a GPU).

Example::

    info = torch2x.inspect(model.eval(), [torch.randn(1, 3, 224, 224)], gpu="L4")
    print(info)                      # one row per kernel, totals by kind and for the engine
    info.to_json()                   # the same as JSON
    info.kernels[1].module_paths     # ['conv1', 'bn1', 'relu']: the calls fused into the second kernel

The time per kernel is an estimate, not a measurement: launch cost + max(bytes moved / memory bandwidth,
FLOPs / peak throughput), with the GPU's published peaks (a roofline lower bound at batch sizes where
kernels are memory-bound). FLOPs are counted for convolutions and matrix multiplies; every other kernel
counts as memory-bound.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable, Sequence

from . import flavour
from .build_options import BuildOptions
from .flavour import trt
from .trt_logging import LOGGER

# Separator TensorRT puts between the metadata of the network layers fused into one engine layer.
_METADATA_SEPARATOR = "\x1f"
_SYNC_KINDS = {"signal", "wait"}  # stream synchronization entries of the engine graph, not kernels


@dataclass(frozen=True)
class GPU:
    """Published peaks of a GPU, for a roofline estimate (dense tensor-core throughput, no sparsity)."""

    name: str
    bandwidth_gbs: float  # memory bandwidth, GB/s
    tflops: dict  # peak TFLOP/s by compute type: "float32" (TF32 tensor cores, TensorRT's default), "float16", "int8"
    launch_us: float = 3.0  # per kernel: launch and the gap between kernels
    note: str = ""


GPUS: dict = {g.name: g for g in (
    GPU("RTX 4090", 1008, {"float32": 82.6, "float16": 165.2, "int8": 660.6}),
    GPU("RTX 5090", 1792, {"float32": 104.8, "float16": 209.5, "int8": 838.0}),
    GPU("L4", 300, {"float32": 60.0, "float16": 121.0, "int8": 242.0}),
    GPU("A100", 2039, {"float32": 156.0, "float16": 312.0, "int8": 624.0}),
    GPU("H100", 3350, {"float32": 494.7, "float16": 989.4, "int8": 1979.0},
        note="full TensorRT only: TensorRT-RTX engines do not run on compute capability 9.0"),
)}

_DTYPE_BYTES = (  # first match wins: "bfloat16" before "float", "uint8" before "int8"
    ("bfloat", 2), ("bf16", 2), ("half", 2), ("fp16", 2), ("float16", 2), ("fp8", 1), ("fp4", 0.5),
    ("int64", 8), ("int32", 4), ("uint8", 1), ("int8", 1), ("int4", 0.5), ("bool", 1), ("double", 8),
    ("float", 4), ("fp32", 4),
)


def dtype_bytes(datatype: str) -> float:
    """Bytes per element of a TensorRT type as the engine graph spells it (``Float``, ``Half``, ``Row major
    linear FP16 format``...); 4 when it is not recognized."""
    text = datatype.lower()
    return next((size for key, size in _DTYPE_BYTES if key in text), 4)


def _compute_type(datatypes: Iterable[str]) -> str:
    sizes = [dtype_bytes(d) for d in datatypes]
    smallest = min(sizes, default=4)
    return "int8" if smallest <= 1 else "float16" if smallest == 2 else "float32"


@dataclass
class TensorInfo:
    """A tensor an engine kernel reads or writes."""

    name: str
    shape: list
    dtype: str
    format: str = ""
    strides: list | None = None

    @property
    def bytes(self) -> int:
        """Bytes the tensor occupies (its strides' extent, so padded vectorized formats count in full);
        0 for a dynamic shape (``-1`` dims)."""
        if any(d < 0 for d in self.shape):
            return 0
        if self.strides and len(self.strides) == len(self.shape) and all(d > 0 for d in self.shape):
            elements = max([s * d for s, d in zip(self.strides, self.shape, strict=True)] or [1])
        else:
            elements = math.prod(self.shape)
        return int(math.ceil(elements * dtype_bytes(self.dtype)))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype, "format": self.format,
                "bytes": self.bytes}


@dataclass
class Kernel:
    """One kernel of the engine: its kind, the network layers and torch calls it computes, its tensors."""

    index: int
    name: str
    kind: str
    layers: list  # network layer names from the record's Metadata
    calls: list  # those plus calls that added no layer of their own (a folded batch norm)
    inputs: list
    constants: list
    outputs: list
    tactic: str = ""
    stream: int = 0
    flops: int = 0
    time_us: float = 0.0

    @property
    def module_paths(self) -> list:
        """The module paths of the calls this kernel computes (``""`` is the root module), in order."""
        return list(OrderedDict.fromkeys(module_path(c) for c in self.calls if module_path(c) is not None))

    @property
    def bytes_read(self) -> int:
        return sum(t.bytes for t in self.inputs + self.constants)

    @property
    def bytes_written(self) -> int:
        return sum(t.bytes for t in self.outputs)

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "kind": self.kind, "module_paths": self.module_paths,
                "calls": self.calls, "layers": self.layers,
                "inputs": [t.to_dict() for t in self.inputs], "constants": [t.to_dict() for t in self.constants],
                "outputs": [t.to_dict() for t in self.outputs], "tactic": self.tactic, "stream": self.stream,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "flops": self.flops,
                "time_us_estimate": round(self.time_us, 3)}


def module_path(call: str) -> str | None:
    """``layer1.0.conv1`` for the call or layer name ``layer1.0.conv1/conv2d`` (``.1`` suffixes and all);
    the ONNX parser's ``[ONNX Layer: /layer1/layer1.0/conv1/Conv]`` gives ``/layer1/layer1.0/conv1``; None for
    names that are not a call's (weights, ``input``)."""
    if call.startswith("[ONNX Layer: "):
        call = call[len("[ONNX Layer: "):].rstrip("]")
    return call.rsplit("/", 1)[0] if "/" in call else None


@dataclass
class EngineInspection:
    """The kernels of an engine build, with totals (see the module docstring)."""

    kernels: list
    gpu: GPU
    engine_bytes: int = 0
    build_seconds: float = 0.0
    source: str = ""  # "build log" (TensorRT-RTX) or "engine inspector" (full TensorRT)

    def totals(self) -> dict:
        return _totals(self.kernels)

    def by_kind(self) -> dict:
        kinds: dict = {}
        for k in self.kernels:
            kinds.setdefault(k.kind, []).append(k)
        return {kind: _totals(ks) for kind, ks in sorted(kinds.items(), key=lambda kv: -len(kv[1]))}

    def to_dict(self) -> dict:
        return {"flavour": flavour.describe(), "source": self.source, "engine_bytes": self.engine_bytes,
                "gpu": {"name": self.gpu.name, "bandwidth_gbs": self.gpu.bandwidth_gbs, "tflops": self.gpu.tflops,
                        "launch_us": self.gpu.launch_us, "note": self.gpu.note},
                "time_is_estimate": "roofline: launch + max(bytes / bandwidth, flops / peak), not a measurement",
                "kernels": [k.to_dict() for k in self.kernels], "by_kind": self.by_kind(), "total": self.totals()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        rows = [("#", "kind", "est. us", "read KB", "write KB", "output", "module paths")]
        for k in self.kernels:
            out = k.outputs[0] if k.outputs else None
            shape = f"{_short_dtype(out.dtype)}{out.shape} {_short_format(out.format)}".strip() if out else "-"
            paths = ", ".join(p or "<root>" for p in k.module_paths) or "-"
            rows.append((str(k.index), k.kind, f"{k.time_us:.1f}", f"{k.bytes_read / 1e3:.1f}",
                         f"{k.bytes_written / 1e3:.1f}", shape, paths[:80]))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) if i in (0, 2, 3, 4) else c.ljust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append("by kind:")
        for kind, t in self.by_kind().items():
            lines.append(f"  {kind:20s} {t['kernels']:5d} kernels {t['bytes'] / 1e6:9.2f} MB {t['gflops']:9.2f} GFLOP "
                         f"{t['time_us_estimate']:9.1f} us")
        t = self.totals()
        lines.append(f"engine: {t['kernels']} kernels, {t['bytes'] / 1e6:.2f} MB moved "
                     f"({t['bytes_read'] / 1e6:.2f} read, {t['bytes_written'] / 1e6:.2f} written), "
                     f"{t['gflops']:.2f} GFLOP, estimated {t['time_us_estimate'] / 1e3:.3f} ms on {self.gpu.name} "
                     f"(roofline estimate: {self.gpu.bandwidth_gbs:g} GB/s, {self.gpu.launch_us:g} us per launch"
                     f"{'; ' + self.gpu.note if self.gpu.note else ''})")
        if t["dynamic_tensors_not_counted"]:
            lines.append(f"note: {t['dynamic_tensors_not_counted']} tensors have dynamic dims (-1) and count as "
                         "0 bytes and FLOPs: inspect a conversion without dynamic_shapes for the sizes that matter")
        return "\n".join(lines)

    __repr__ = __str__


def _totals(kernels: Sequence[Kernel]) -> dict:
    read = sum(k.bytes_read for k in kernels)
    written = sum(k.bytes_written for k in kernels)
    dynamic = sum(any(d < 0 for d in t.shape) for k in kernels for t in k.inputs + k.constants + k.outputs)
    return {"kernels": len(kernels), "bytes_read": read, "bytes_written": written, "bytes": read + written,
            "gflops": sum(k.flops for k in kernels) / 1e9, "time_us_estimate": sum(k.time_us for k in kernels),
            "dynamic_tensors_not_counted": dynamic}


def _short_dtype(dtype: str) -> str:
    return {"Float": "f32", "Half": "f16", "BFloat16": "bf16", "Int8": "i8", "Int32": "i32", "Int64": "i64",
            "Bool": "bool"}.get(dtype, dtype)


def _short_format(fmt: str) -> str:
    found = re.match(r"\((\w+)\)", fmt)
    return found.group(1) if found else fmt.split(" ")[0] if fmt else ""


# --- the one-line records ------------------------------------------------------------------------
_OPEN, _CLOSE = "[{(", "]})"


def _split_top(text: str, sep: str = ", ") -> list:
    """``text`` split at ``sep`` outside brackets, braces and parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _fields(text: str) -> dict:
    """``Key: value, Key: [ ... ]`` -> {key: raw value}."""
    out = {}
    for part in _split_top(text):
        key, sep, value = part.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _ints(text: str) -> list:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def _tensors(text: str) -> list:
    """A record's ``[ { Name: ..., Dimensions: [...], ... }, ... ]`` as TensorInfo."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    tensors = []
    for item in _split_top(inner):
        if not (item.startswith("{") and item.endswith("}")):
            continue
        f = _fields(item[1:-1])
        dtype, fmt = f.get("Datatype", ""), f.get("Format", "")
        if not dtype and "Format/Datatype" in f:  # full TensorRT's ONELINE format
            dtype = fmt = f["Format/Datatype"]
        tensors.append(TensorInfo(f.get("Name", ""), _ints(f.get("Dimensions", "")), dtype, fmt,
                                  _ints(f["Strides"]) if "Strides" in f else None))
    return tensors


def parse_layer_record(line: str) -> dict | None:
    """One engine layer record (``Name: ..., LayerType: ..., ...``) as a dict with ``name``, ``kind``,
    ``inputs``, ``constants``, ``outputs`` (TensorInfo lists), ``tactic``, ``stream``, ``metadata`` (list of
    network layer names); None for a line that is not one."""
    line = line.strip()
    if not line.startswith("Name: ") or ", LayerType: " not in line:
        return None
    metadata = ""
    head, sep, tail = line.rpartition(", Metadata:")  # last: the metadata may hold any character
    if sep:
        line, metadata = head, tail.strip()
    f = _fields(line)
    stream = _ints(f.get("StreamId", "0"))
    return {"name": f.get("Name", ""), "kind": f.get("LayerType", ""), "inputs": _tensors(f.get("Inputs", "")),
            "constants": _tensors(f.get("Constants", "")), "outputs": _tensors(f.get("Outputs", "")),
            "tactic": f.get("TacticName", f.get("TacticValue", "")), "stream": stream[0] if stream else 0,
            "metadata": [m for m in metadata.split(_METADATA_SEPARATOR) if m]}


def parse_build_log(lines: Iterable[str]) -> list:
    """The engine layer records of a VERBOSE build log (messages, each possibly of several lines), in
    order, without stream synchronization (``signal``/``wait``) entries."""
    records = []
    for message in lines:
        for line in message.splitlines():
            record = parse_layer_record(line)
            if record is not None and record["kind"] not in _SYNC_KINDS:
                records.append(record)
    return records


def parse_inspector_json(text: str) -> list:
    """Records from ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` (full TensorRT)."""
    records = []
    for layer in json.loads(text).get("Layers", []):
        if isinstance(layer, str):  # ProfilingVerbosity.LAYER_NAMES_ONLY: names only
            layer = {"Name": layer}
        kind = str(layer.get("LayerType", ""))
        if kind.lower() in _SYNC_KINDS:
            continue

        records.append({"name": str(layer.get("Name", "")), "kind": kind, "inputs": _json_tensors(layer, "Inputs"),
                        "constants": _json_tensors(layer, "Constants"), "outputs": _json_tensors(layer, "Outputs"),
                        "tactic": str(layer.get("TacticName", layer.get("TacticValue", ""))),
                        "stream": int(layer.get("StreamId", 0) or 0),
                        "metadata": [m for m in str(layer.get("Metadata", "")).split(_METADATA_SEPARATOR) if m]})
    return records


def _json_tensors(layer: dict, key: str) -> list:
    out = []
    for t in layer.get(key, []) or []:
        dtype = str(t.get("Datatype", t.get("Format/Datatype", "")))
        out.append(TensorInfo(str(t.get("Name", "")), [int(d) for d in t.get("Dimensions", [])], dtype,
                              str(t.get("Format", t.get("Format/Datatype", ""))), t.get("Strides")))
    return out


# --- FLOPs and time --------------------------------------------------------------------------------
def kernel_flops(kind: str, inputs: list, constants: list, outputs: list) -> int:
    """Multiply-add FLOPs (x2) of a convolution or matrix-multiply kernel from its shapes; 0 for others."""
    if not outputs or any(d < 0 for d in outputs[0].shape):
        return 0
    out = outputs[0].shape
    lowered = kind.lower()
    if "correlation" in lowered or "conv" in lowered or "fusion" in lowered:  # runtime_fusion: conv + pointwise
        if len(out) < 3:
            return 0
        weights = [t for t in constants + inputs[1:] if len(t.shape) == len(out) and t.shape[0] == out[1]
                   and math.prod(t.shape[1:]) > 1]
        if not weights:
            return 0
        w = max(weights, key=lambda t: math.prod(t.shape))
        return 2 * math.prod(out) * math.prod(w.shape[1:])
    if "gemm" in lowered or "matrixmultiply" in lowered or lowered.startswith("fc"):
        operands = sorted((t for t in inputs + constants if len(t.shape) >= 2 and math.prod(t.shape) > 1),
                          key=lambda t: -math.prod(t.shape))[:2]
        if len(operands) < 2 or len(out) < 2:
            return 0
        m = out[-2]
        a = next((t for t in operands if m in t.shape[-2:]), operands[0])
        rows, cols = a.shape[-2:]
        k = cols if rows == m else rows
        return 2 * math.prod(out) * k
    return 0


def roofline_us(gpu: GPU, nbytes: int, flops: int, compute_type: str) -> float:
    """launch + max(memory time, compute time), in microseconds."""
    memory = nbytes / (gpu.bandwidth_gbs * 1e9) * 1e6
    compute = flops / (gpu.tflops[compute_type] * 1e12) * 1e6 if flops else 0.0
    return gpu.launch_us + max(memory, compute)


def kernels_from_records(records: list, gpu: GPU, absorbed: dict | None = None) -> list:
    """Kernel rows from parsed records: calls from the metadata (plus ``absorbed`` calls, keyed by the layer
    that computes them), FLOPs and the roofline time on ``gpu``."""
    absorbed = absorbed or {}
    kernels = []
    for index, r in enumerate(records):
        calls = []
        for layer in r["metadata"]:
            calls.append(layer)
            calls.extend(absorbed.get(layer, []))
        calls = list(OrderedDict.fromkeys(calls))
        flops = kernel_flops(r["kind"], r["inputs"], r["constants"], r["outputs"])
        k = Kernel(index, r["name"], r["kind"], r["metadata"], calls, r["inputs"], r["constants"], r["outputs"],
                   r["tactic"], r["stream"], flops)
        dtypes = [t.dtype for t in k.inputs + k.constants if math.prod(t.shape) > 1] or [t.dtype for t in k.outputs]
        k.time_us = roofline_us(gpu, k.bytes_read + k.bytes_written, flops, _compute_type(dtypes))
        kernels.append(k)
    return kernels


def gpu_named(name: Any) -> GPU:
    """A built-in GPU by name (case and spaces ignored: ``"rtx4090"``, ``"L4"``), or a :class:`GPU` as is."""
    if isinstance(name, GPU):
        return name
    key = str(name).replace(" ", "").lower()
    for gpu_name, gpu in GPUS.items():
        if gpu_name.replace(" ", "").lower() == key:
            return gpu
    raise ValueError(f"no built-in GPU {name!r}; use one of {', '.join(GPUS)} or pass a torch2x.inspect.GPU")


# --- building with the engine graph in the log ---------------------------------------------------------
def inspect_build(builder: trt.Builder, network: trt.INetworkDefinition, *, gpu: Any = "RTX 4090",
                  profiles: list | None = None, max_workspace_size: int | None = None,
                  options: Any = None, absorbed: dict | None = None) -> EngineInspection:
    """Build ``network`` (any network: ours or the ONNX parser's) and return its engine graph.

    The builder must log to torch2x's logger (``trt.Builder(torch2x.trt_logging.LOGGER)``): on TensorRT-RTX
    the records come from its VERBOSE build log, captured without printing. Layers without metadata get
    their name as metadata for the build (restored afterwards), so each kernel names the layers it fused.
    On full TensorRT the records come from ``IEngineInspector`` on the deserialized engine, which needs a GPU
    (written to TensorRT's documented API; not run on the CPU-only machines torch2x is tested on).
    """
    from .network import engine_config, serialize

    gpu = gpu_named(gpu)
    options = BuildOptions.of(options)
    config = engine_config(builder, network, max_workspace_size, profiles, options)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    named = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.metadata:
            layer.metadata = layer.name
            named.append(layer)
    started = time.perf_counter()
    try:
        if flavour.IS_RTX:
            with LOGGER.capture() as lines:
                plan = serialize(builder, network, config, options, False)
            records, source = parse_build_log(lines), "build log"
        else:
            plan = serialize(builder, network, config, options, False)
            records, source = _inspector_records(plan), "engine inspector"
    finally:
        for layer in named:
            layer.metadata = ""
    if not records:
        raise RuntimeError(f"{flavour.describe()} built the engine but logged no engine layer records; "
                           "this TensorRT may print its engine graph differently")
    return EngineInspection(kernels_from_records(records, gpu, absorbed), gpu, len(plan),
                            time.perf_counter() - started, source)


def _inspector_records(plan: bytes) -> list:  # pragma: no cover -- needs full TensorRT and a GPU
    """Full TensorRT: deserialize the plan and read its layers with ``IEngineInspector`` (JSON)."""
    runtime = trt.Runtime(LOGGER)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError(f"{flavour.describe()} cannot deserialize the engine here to inspect it (full TensorRT "
                           f"reads an engine's kernels from the deserialized engine, which needs a GPU): "
                           f"{LOGGER.take_errors() or 'no message'}")
    inspector = engine.create_engine_inspector()
    return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def inspect_network(converted: Any, gpu: Any = "RTX 4090", options: Any = None) -> EngineInspection:
    """The engine graph of a :class:`~torch2x.network.ConvertedNetwork` (see :func:`inspect`)."""
    return inspect_build(converted.builder, converted.network, gpu=gpu, profiles=converted.profiles,
                         max_workspace_size=converted.max_workspace_size,
                         options=converted.build_options if options is None else options,
                         absorbed=converted.absorbed)


def inspect(module: Any, inputs: Sequence[Any], *, gpu: Any = "RTX 4090", **options: Any) -> EngineInspection:
    """Convert ``module`` and return the optimized engine graph TensorRT builds for it.

    One row per kernel: kind, the module paths of the torch calls it computes, output shape/type/format,
    bytes read and written, and an estimated time on ``gpu`` (one of :data:`GPUS`: "RTX 4090", "RTX 5090",
    "L4", "A100", "H100", or a :class:`GPU`). ``options`` are :func:`torch2x.build_network`'s (``fp16=True``,
    ``build_options={...}``...). Runs where the flavour's builder runs: TensorRT-RTX on a CPU. Example::

        info = torch2x.inspect(torchvision.models.resnet18().eval(), [torch.randn(1, 3, 224, 224)])
        print(info.totals()["kernels"], info.by_kind())
    """
    from .network import ConvertedNetwork, build_network

    converted = build_network(module, inputs, **options)
    if not isinstance(converted, ConvertedNetwork):  # a hybrid conversion (fallback=True): one engine per segment
        raise ValueError("torch2x.inspect shows one engine; this hybrid conversion has several: inspect each with "
                         "build_network(..., fallback=True).segments[i].inspect()")
    return inspect_network(converted, gpu=gpu)
