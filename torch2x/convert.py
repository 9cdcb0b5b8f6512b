"""``torch2x(module, inputs)``: build the network, build the engine, wrap it in a TRTModule."""
from __future__ import annotations

from typing import Any, Optional
from collections.abc import Iterable, Sequence

from . import engine_cache as cache_mod
from .build_options import BuildOptions
from .hybrid import HybridNetwork
from .network import build_network
from .runtime import module_from_network


def torch2x(module: Any, inputs: Sequence[Any], *, fp16: bool = False, bf16: bool = False,
            input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
            max_workspace_size: Optional[int] = None, strict: bool = True,
            keep_fp32: Optional[Iterable[str]] = None, progress: Optional[bool] = None,
            int8: bool = False, calibration_data: Optional[Iterable[Any]] = None,
            calibration_algorithm: str = "entropy", calibration_cache: Any = None,
            dynamic_shapes: Any = None, fallback: bool = False, torch_executed_ops: Iterable[str] = (),
            torch_executed_modules: Iterable[str] = (), min_block_size: int = 1, build_options: Any = None,
            engine_cache: Optional[str] = None, **build_option_fields: Any) -> Any:
    """Convert ``module`` (called as ``module(*inputs)``) into a TensorRT engine wrapped in a TRTModule.

    Example::

        model_trt = torch2x(model.eval(), [torch.randn(1, 3, 224, 224)], fp16=True)
        torch.save(model_trt.state_dict(), "model_trt.pth")

    Raises :class:`UnsupportedOperatorError` (with ``.report``) when calls cannot be
    converted; see :func:`report` to list them without raising. ``progress`` shows conversion and
    engine-build progress (default: only on a terminal). ``int8``, ``calibration_data``,
    ``calibration_algorithm`` and ``calibration_cache``: INT8 by explicit quantization, see
    :func:`torch2x.build_network`. ``dynamic_shapes``: input ranges and optimization profiles, likewise.

    ``fallback=True``: calls TensorRT cannot run (and those named in ``torch_executed_ops`` or inside
    ``torch_executed_modules``) run in PyTorch between engines; the result is then a
    :class:`~torch2x.hybrid.HybridModule` (saved and loaded through ``state_dict`` like a TRTModule), or the
    plain TRTModule when every call converts. See :mod:`torch2x.hybrid`.

    Build options: ``build_options`` (a :class:`~torch2x.build_options.BuildOptions` or a dict) and/or its
    fields as keywords (``optimization_level=5``, ``strip_weights=True``, ``compute_capabilities=["8.9"]``,
    ``builder_options={"TF32": False}``...); one this TensorRT lacks is refused by name.
    ``engine_cache="dir"`` (default ``$TORCH2X_ENGINE_CACHE``) reuses an engine built before for the same
    weights, code, inputs and options (see :mod:`torch2x.engine_cache`); ``model_trt.report.engine_cache``
    says whether it came from the cache. Hybrid conversions (``fallback=True``) are not cached.
    """
    options = BuildOptions.of(build_options, **build_option_fields)
    conversion = dict(fp16=fp16, bf16=bf16, input_names=input_names, output_names=output_names,
                      max_workspace_size=max_workspace_size, strict=strict, keep_fp32=keep_fp32, int8=int8,
                      calibration_algorithm=calibration_algorithm, calibration_cache=calibration_cache,
                      dynamic_shapes=dynamic_shapes, build_options=options)
    hybrid = dict(fallback=fallback, torch_executed_ops=torch_executed_ops,
                  torch_executed_modules=torch_executed_modules, min_block_size=min_block_size)
    cache_dir, cache_key = (None if fallback else cache_mod.directory(engine_cache)), None
    if cache_dir is not None:
        if calibration_data is not None:
            calibration_data = list(calibration_data)  # hashed for the key, then read by the calibration
        cache_key = cache_mod.conversion_key(module, inputs, {**conversion, "calibration_data": calibration_data})
        cached = cache_mod.load(cache_dir, cache_key)
        if cached is not None:
            return cached
    converted = build_network(module, inputs, progress=progress, calibration_data=calibration_data, **conversion,
                              **hybrid)
    if isinstance(converted, HybridNetwork):
        hybrid_module = converted.to_module(converted.build_engines(progress))
        hybrid_module.report = converted.report
        return hybrid_module
    engine = converted.build_engine(progress)
    trt_module = module_from_network(converted, engine)
    trt_module.report = converted.report
    if cache_dir is not None:
        path = cache_mod.store(cache_dir, cache_key, trt_module)
        trt_module.report.engine_cache = f"engine built and stored in the cache ({path})"
    return trt_module
