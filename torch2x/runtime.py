"""TRTModule: a serialized engine as an ``nn.Module`` whose state_dict loads with ``weights_only=True``.

Executing an engine needs an NVIDIA GPU and a TensorRT that can deserialize it;
everything else (saving, loading, input checks) works anywhere.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Optional

import torch

from . import flavour
from .dtypes import to_torch
from .structure import flatten, unflatten

_META_KEYS = ("input_names", "output_names", "input_dtypes", "output_dtypes", "input_shapes", "output_shapes",
              "input_spec", "output_spec", "flavour", "trt_version", "build_device", "precision", "profiles")


class TRTModuleError(RuntimeError):
    """A TRTModule cannot run: no engine, no CUDA device, an engine this TensorRT cannot load..."""


class TRTModule(torch.nn.Module):
    """Runs a TensorRT engine on the current CUDA stream.

    Example::

        model_trt = torch2x(model, [x])
        torch.save(model_trt.state_dict(), "model_trt.pth")
        restored = TRTModule()
        restored.load_state_dict(torch.load("model_trt.pth", weights_only=True))
        y = restored(x.cuda())

    The engine is deserialized on first use. Its state_dict holds the engine as a
    uint8 tensor and its description (I/O names, dtypes, shapes, nesting, the
    TensorRT flavour and version, the build device) as plain values.
    """

    def __init__(self, engine: Optional[bytes] = None, use_cuda_graph: bool = False, **meta: Any):
        super().__init__()
        self.engine_bytes: Optional[bytes] = engine
        self.meta: dict = {k: meta.get(k) for k in _META_KEYS}
        self.use_cuda_graph = use_cuda_graph
        # bytes of streamable weights kept on the GPU (an engine built with weight_streaming=True); None: TensorRT's
        # default (all of them). Set before the first forward.
        self.weight_streaming_budget: Optional[int] = None
        self.device: Optional[torch.device] = None  # the CUDA device to run on; None: the inputs' device
        self._engine = None
        self._contexts = threading.local()  # one execution context per thread: several streams at once
        self._lock = threading.Lock()

    # --- devices: an engine lives on one CUDA device ------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> TRTModule:
        """Like ``nn.Module.to`` for a CUDA device; a TensorRT engine cannot run on CPU or change dtype."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None:
            raise TRTModuleError(f"a TensorRT engine's input and output types are fixed at build time; "
                                 f"convert again (e.g. fp16=True) instead of .to({dtype})")
        if device is not None:
            self._set_device(device)
        return self

    def cuda(self, device: Any = None) -> TRTModule:
        if device is None:
            device = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return self._set_device(torch.device("cuda", device) if isinstance(device, int) else torch.device(device))

    def cpu(self) -> TRTModule:
        return self._set_device(torch.device("cpu"))

    def _set_device(self, device: torch.device) -> TRTModule:
        device = torch.device(device)
        if device.type != "cuda":
            raise TRTModuleError(f"TRTModule runs TensorRT engines on CUDA devices and cannot move to {device}; "
                                 "to run on CPU, keep the PyTorch model (or check the network with "
                                 "torch2x.build_network(...).interpret)")
        if device != self.device:
            self.device = device
            self._engine = None  # deserialized again on the new device at first use
            self._contexts = threading.local()
        return self

    # --- state dict -----------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.engine_bytes is None:
            raise TRTModuleError("this TRTModule holds no engine to save")
        destination[prefix + "engine"] = torch.frombuffer(bytearray(self.engine_bytes), dtype=torch.uint8)
        for key in _META_KEYS:
            destination[prefix + key] = self.meta[key]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        engine = state_dict.get(prefix + "engine")
        if engine is None:
            missing_keys.append(prefix + "engine")
            return
        self.engine_bytes = bytes(engine.cpu().numpy().tobytes())
        for key in _META_KEYS:
            if prefix + key in state_dict:
                self.meta[key] = state_dict[prefix + key]
            else:
                missing_keys.append(prefix + key)
        self._engine = None
        self._contexts = threading.local()

    # --- deployment files ----------------------------------------------------------------
    def save_engine(self, path: str) -> str:
        """Write the raw plan to ``path`` and its I/O description to ``path + '.json'`` (for trtexec, C++)."""
        if self.engine_bytes is None:
            raise TRTModuleError("this TRTModule holds no engine to save")
        with open(path, "wb") as f:
            f.write(self.engine_bytes)
        description = {k: self.meta[k] for k in _META_KEYS}
        with open(path + ".json", "w", encoding="utf-8") as f:
            json.dump(description, f, indent=2)
        return path + ".json"

    # --- execution ------------------------------------------------------------------
    def _load_engine(self):
        with self._lock:
            if self._engine is None:  # on the current CUDA device (forward enters the inputs' device)
                if self.engine_bytes is None:
                    raise TRTModuleError("this TRTModule holds no engine: load a state_dict first")
                from .trt_logging import LOGGER

                runtime = flavour.trt.Runtime(LOGGER)
                engine = runtime.deserialize_cuda_engine(self.engine_bytes)
                if engine is None:
                    raise TRTModuleError(
                        f"the engine was built with {self.meta['flavour']} {self.meta['trt_version']} on "
                        f"{self.meta['build_device']}; the installed {flavour.describe()} cannot deserialize it "
                        f"here ({LOGGER.take_errors() or 'no message'}). Rebuild the engine on this machine's "
                        "TensorRT and GPU.")
                if self.weight_streaming_budget is not None:  # ICudaEngine.weight_streaming_budget_v2 (TensorRT 10.1+)
                    engine.weight_streaming_budget_v2 = int(self.weight_streaming_budget)
                self._runtime, self._engine = runtime, engine
        return self._engine

    def example_inputs(self) -> Any:
        """Zero tensors of the engine's input shapes and dtypes (dynamic dims at the first profile's opt
        size), nested like the converted module's inputs: what :meth:`refit` converts the model with."""
        profiles = self.meta.get("profiles") or []
        tensors = []
        for name, shape, dtype in zip(self.meta["input_names"], self.meta["input_shapes"], self.meta["input_dtypes"]):
            if -1 in shape:
                shape = profiles[0][name][1]
            tensors.append(torch.zeros(shape, dtype=getattr(torch, dtype.replace("torch.", ""))))
        return unflatten(self.meta["input_spec"], tensors)

    def refit(self, model: Any, inputs: Any = None, **conversion: Any) -> TRTModule:
        """Put ``model``'s weights into this engine (built with ``strip_weights=True`` or ``refittable=True``)
        through TensorRT's ``Refitter``; needs a GPU, like running the engine. Example::

            model_trt = torch2x(model, [x], strip_weights=True)   # a plan without its weights
            model_trt.refit(model)                                # weights back, on the GPU machine

        The weights come from converting ``model`` again (``inputs``: default :meth:`example_inputs`;
        ``conversion``: the keywords of the original conversion, default the recorded precision), so a
        folded batch norm or a reduced precision is refitted exactly as built.
        """
        from .network import build_network
        from .refit import network_weights, refit_engine
        from .trt_logging import LOGGER

        if inputs is None:
            inputs = list(self.example_inputs())
        precision = str(self.meta.get("precision") or "fp32")
        if "int8" in precision and not conversion:
            raise TRTModuleError("refit of an int8 engine: pass the conversion keywords it was built with "
                                 "(int8=True, calibration_cache=...)")
        for flag in ("fp16", "bf16"):
            conversion.setdefault(flag, flag in precision)
        weights = network_weights(build_network(model, inputs, **conversion).network)
        try:
            engine = self._load_engine()
        except TRTModuleError as exc:
            raise TRTModuleError(f"refit needs the deserialized engine, hence a GPU: {exc}") from None
        try:
            refit_engine(engine, weights, LOGGER)
        except RuntimeError as exc:
            raise TRTModuleError(str(exc)) from None
        self._contexts = threading.local()  # contexts made before the refit may hold the old weights
        return self

    def _execution_context(self):
        context = getattr(self._contexts, "context", None)
        if context is None:
            context = self._load_engine().create_execution_context()
            if context is None:
                raise TRTModuleError("TensorRT could not create an execution context (out of GPU memory?)")
            self._contexts.context = context
        return context

    def check_inputs(self, tensors: list) -> None:
        """Refuse inputs whose count, dtype, rank or fixed dims differ from the engine's, before TensorRT sees them."""
        names = self.meta["input_names"]
        if len(tensors) != len(names):
            raise ValueError(f"TRTModule expects {len(names)} input tensors ({names}), got {len(tensors)}")
        for name, t, dtype, shape in zip(names, tensors, self.meta["input_dtypes"], self.meta["input_shapes"]):
            if str(t.dtype) != dtype:
                raise TypeError(f"input {name!r} has dtype {t.dtype}, the engine takes {dtype}")
            if t.dim() != len(shape) or any(d >= 0 and d != s for d, s in zip(shape, t.shape)):
                raise ValueError(f"input {name!r} has shape {tuple(t.shape)}, the engine takes {tuple(shape)}"
                                 + (" (-1: dynamic)" if -1 in shape else ""))
        self.select_profile(tensors)

    def select_profile(self, tensors: list) -> int:
        """The first optimization profile whose ranges hold every input (0 without dynamic shapes); a clear
        error naming the input, the dim and the allowed range when none does."""
        profiles = self.meta.get("profiles") or []
        if not profiles:
            return 0
        problems = []
        for index, ranges in enumerate(profiles):
            bad = [(name, d, lo[d], hi[d], t.shape[d]) for name, t in zip(self.meta["input_names"], tensors)
                   for lo, _, hi in [ranges[name]] for d in range(t.dim()) if not lo[d] <= t.shape[d] <= hi[d]]
            if not bad:
                return index
            problems.append(bad[0])
        name, d, lo, hi, size = problems[0]
        where = "" if len(profiles) == 1 else f" (and no other of the {len(profiles)} profiles fits)"
        raise ValueError(f"input {name!r} dim {d} is {size}, outside the engine's range [{lo}, {hi}]{where}")

    def forward(self, *inputs: Any) -> Any:
        tensors, _ = flatten(list(inputs))
        self.check_inputs(tensors)
        if not torch.cuda.is_available():
            raise TRTModuleError("TRTModule runs engines on an NVIDIA GPU and no CUDA device is available; "
                                 "use torch2x.build_network(...).interpret(...) to check a network on CPU")
        device = next((t.device for t in tensors if t.is_cuda), None)
        if device is None or any(not t.is_cuda or t.device != device for t in tensors):
            raise ValueError(f"TRTModule inputs must all be on one CUDA device; got {[str(t.device) for t in tensors]}")
        if self.device is not None and device != self.device:
            raise ValueError(f"TRTModule is on {self.device} but its inputs are on {device}")
        with torch.cuda.device(device):
            context = self._execution_context()
            stream = torch.cuda.current_stream(device)
            profile = self.select_profile(tensors)
            if self.meta.get("profiles") and context.active_optimization_profile != profile:
                context.set_optimization_profile_async(profile, stream.cuda_stream)
            if self.use_cuda_graph:
                outputs = self._run_graph(context, stream, tensors)
            else:
                outputs = self._bind_and_run(context, stream, [t.contiguous() for t in tensors], device)
        return unflatten(self.meta["output_spec"], outputs)

    def _bind_and_run(self, context, stream, tensors: list, device) -> list:
        for name, t in zip(self.meta["input_names"], tensors):  # TensorRT reads dense row-major buffers
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
        outputs = []
        for name, dtype in zip(self.meta["output_names"], self.meta["output_dtypes"]):
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=getattr(torch, dtype.replace("torch.", "")), device=device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not context.execute_async_v3(stream.cuda_stream):
            raise TRTModuleError("TensorRT's execute_async_v3 failed (see the torch2x.tensorrt log)")
        return outputs

    def _run_graph(self, context, stream, tensors: list) -> list:
        """Replay a CUDA graph of the enqueue: inputs are copied into static buffers, outputs cloned.

        Captured per thread and input shapes; TensorRT needs one plain enqueue before capture so
        that deferred work (shape-dependent allocations) is done outside the graph."""
        key = tuple(tuple(t.shape) for t in tensors)
        graphs = getattr(self._contexts, "graphs", None)
        if graphs is None:
            graphs = self._contexts.graphs = {}
        if key not in graphs:
            static_in = [t.clone().contiguous() for t in tensors]
            static_out = self._bind_and_run(context, stream, static_in, static_in[0].device)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                if not context.execute_async_v3(stream.cuda_stream):
                    raise TRTModuleError("TensorRT's execute_async_v3 failed during CUDA graph capture")
            graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = graphs[key]
        for buffer, t in zip(static_in, tensors):
            buffer.copy_(t)
        graph.replay()
        return [out.clone() for out in static_out]

    def extra_repr(self) -> str:
        size = len(self.engine_bytes) if self.engine_bytes else 0
        return (f"engine={size} bytes, {self.meta['flavour']} {self.meta['trt_version']}, "
                f"inputs={self.meta['input_names']}")


def module_from_network(converted: Any, engine: bytes) -> TRTModule:
    """The TRTModule of a :class:`ConvertedNetwork` and its serialized engine."""
    net = converted.network
    ins = [net.get_input(i) for i in range(net.num_inputs)]
    outs = [net.get_output(i) for i in range(net.num_outputs)]
    build_device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (ahead-of-time build)"
    return TRTModule(
        engine,
        input_names=[t.name for t in ins], output_names=[t.name for t in outs],
        input_dtypes=[str(to_torch(t.dtype)) for t in ins], output_dtypes=[str(to_torch(t.dtype)) for t in outs],
        input_shapes=[list(t.shape) for t in ins], output_shapes=[list(t.shape) for t in outs],
        input_spec=converted.input_spec, output_spec=converted.output_spec,
        flavour=flavour.NAME, trt_version=flavour.VERSION, build_device=build_device,
        precision=converted.precision,
        profiles=[{name: [list(lo), list(opt), list(hi)] for name, (lo, opt, hi) in p.items()}
                  for p in converted.profiles],
    )
