"""TensorRT's build options as one value passed from ``torch2x()``/the CLI down to the builder config.

Each option maps to the flavour's ``IBuilderConfig`` (see :func:`torch2x.flavour.builder_option_refusal` for
what a flavour lacks); an option the flavour lacks is refused by name before anything is built. Example::

    options = BuildOptions(optimization_level=5, max_aux_streams=0, builder_options={"TF32": False})
    engine = torch2x.build_network(model, [x]).build_engine(options=options)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

from . import flavour
from .flavour import trt


class BuildOptionError(ValueError):
    """A build option this TensorRT does not have, or a value it cannot take; the message names the option."""


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings beyond the network itself (all optional; None keeps TensorRT's default).

    - ``optimization_level``: 0-5, ``IBuilderConfig.builder_optimization_level`` (higher: longer build,
      possibly faster engine).
    - ``timing_cache``: a file path; loaded before the build when it exists and saved back after it (full
      TensorRT: TensorRT-RTX's timing cache calls are no-ops, so it is refused there).
    - ``strip_weights``: a weight-stripped plan (``BuilderFlag.STRIP_PLAN`` with ``REFIT_IDENTICAL``); put the
      weights back with ``TRTModule.refit(model)``.
    - ``refittable``: ``BuilderFlag.REFIT``, weights may be replaced later with other values.
    - ``weight_streaming``: ``BuilderFlag.WEIGHT_STREAMING`` (the budget is set on the deserialized engine,
      ``TRTModule(weight_streaming_budget=...)``).
    - ``version_compatible``: ``BuilderFlag.VERSION_COMPATIBLE`` (full TensorRT; the runtime must allow host code).
    - ``hardware_compatibility``: ``"ampere_plus"`` or ``"same_compute_capability"`` (full TensorRT).
    - ``compute_capabilities``: TensorRT-RTX ahead-of-time targets, e.g. ``["8.9", "12.0"]`` or ``["SM89"]``.
    - ``max_aux_streams``: ``IBuilderConfig.max_aux_streams``.
    - ``builder_options``: anything else, ``{name: value}``: an ``IBuilderConfig`` attribute
      (``{"avg_timing_iterations": 4}``) or a ``BuilderFlag`` name with True/False (``{"TF32": False}``).
    """

    optimization_level: int | None = None
    timing_cache: str | None = None
    strip_weights: bool = False
    refittable: bool = False
    weight_streaming: bool = False
    version_compatible: bool = False
    hardware_compatibility: str | None = None
    compute_capabilities: Sequence[str] | None = None
    max_aux_streams: int | None = None
    builder_options: dict = field(default_factory=dict)

    def is_default(self) -> bool:
        return self == BuildOptions()

    def to_dict(self) -> dict:
        """The options set (not at their default), JSON-friendly: the engine cache keys on it."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default and not (f.name == "builder_options" and not value):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def of(cls, options: Any = None, **kwargs: Any) -> BuildOptions:
        """``options`` (a BuildOptions, a dict or None) with ``kwargs`` that are not None over it."""
        if options is None:
            base = cls()
        elif isinstance(options, cls):
            base = options
        elif isinstance(options, dict):
            unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise BuildOptionError(f"unknown build option(s) {', '.join(unknown)}; known: "
                                       + ", ".join(f.name for f in dataclasses.fields(cls)))
            base = cls(**options)
        else:
            raise TypeError(f"build options must be a BuildOptions or a dict, got {type(options).__name__}")
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)} (build options are: "
                            + ", ".join(f.name for f in dataclasses.fields(cls)) + ")")
        given = {k: v for k, v in kwargs.items() if v is not None and v is not False and v != {}}
        return dataclasses.replace(base, **given) if given else base


def _flag(name: str) -> trt.BuilderFlag:
    return getattr(trt.BuilderFlag, name)


def check(options: BuildOptions) -> None:
    """Raise :class:`BuildOptionError` naming the first option set that this flavour lacks, and refuse
    ``builder_options`` names that are neither an IBuilderConfig attribute nor a BuilderFlag."""
    for name, value in options.to_dict().items():
        reason = flavour.builder_option_refusal(name)
        if reason:
            raise BuildOptionError(f"build option {name}={value!r} is not available on {flavour.describe()}: {reason}")
    for name, value in options.builder_options.items():
        _builder_option(name, value)


def configure(config: trt.IBuilderConfig, options: BuildOptions) -> None:
    """Set ``options`` on ``config``; raises :class:`BuildOptionError` naming an option this flavour lacks."""
    check(options)
    if options.optimization_level is not None:
        if not 0 <= int(options.optimization_level) <= 5:
            raise BuildOptionError(f"build option optimization_level must be 0-5, got {options.optimization_level}")
        config.builder_optimization_level = int(options.optimization_level)
    if options.timing_cache:
        data = b""
        if os.path.exists(options.timing_cache):
            with open(options.timing_cache, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            raise BuildOptionError(f"build option timing_cache: TensorRT refused the cache in {options.timing_cache!r} "
                                   "(from another TensorRT version or device?); delete it to start a new one")
    if options.strip_weights:
        config.set_flag(_flag("STRIP_PLAN"))
        if not options.refittable:  # the weights put back are the ones built with: TensorRT may optimize for them
            config.set_flag(_flag("REFIT_IDENTICAL"))
    if options.refittable:
        config.set_flag(_flag("REFIT"))
    if options.weight_streaming:
        config.set_flag(_flag("WEIGHT_STREAMING"))
    if options.version_compatible:
        config.set_flag(_flag("VERSION_COMPATIBLE"))
    if options.hardware_compatibility:
        levels = {k.lower(): v for k, v in trt.HardwareCompatibilityLevel.__members__.items()}
        level = levels.get(str(options.hardware_compatibility).lower())
        if level is None:
            raise BuildOptionError(f"build option hardware_compatibility={options.hardware_compatibility!r}: "
                                   f"use one of {', '.join(levels)}")
        config.hardware_compatibility_level = level
    if options.compute_capabilities:
        try:
            flavour.set_compute_capabilities(config, list(options.compute_capabilities))
        except ValueError as exc:
            raise BuildOptionError(str(exc)) from None
    if options.max_aux_streams is not None:
        config.max_aux_streams = int(options.max_aux_streams)
    for name, value in options.builder_options.items():
        _set_builder_option(config, name, value)


def _builder_option(name: str, value: Any) -> trt.BuilderFlag | None:
    """The BuilderFlag ``name`` is (None for a settable IBuilderConfig attribute); refuses anything else."""
    if name in trt.BuilderFlag.__members__:
        if not isinstance(value, bool):
            raise BuildOptionError(f"builder_options[{name!r}] is a BuilderFlag: give True or False, got {value!r}")
        return _flag(name)
    attr = getattr(trt.IBuilderConfig, name, None)
    if name.startswith("_") or not isinstance(attr, property):
        flags = ", ".join(trt.BuilderFlag.__members__)
        raise BuildOptionError(f"builder_options has {name!r}, which is neither an IBuilderConfig attribute nor a "
                               f"BuilderFlag of {flavour.describe()} (flags: {flags})")
    if attr.fset is None:
        raise BuildOptionError(f"builder_options[{name!r}]: IBuilderConfig.{name} is read-only")
    return None


def _set_builder_option(config: trt.IBuilderConfig, name: str, value: Any) -> None:
    flag = _builder_option(name, value)
    if flag is not None:
        (config.set_flag if value else config.clear_flag)(flag)
        return
    try:
        setattr(config, name, value)
    except TypeError as exc:
        raise BuildOptionError(f"builder_options[{name!r}]={value!r}: {exc}") from None


def save_timing_cache(config: trt.IBuilderConfig, options: BuildOptions) -> None:
    """Write the config's timing cache back to ``options.timing_cache`` after a build (a no-op without one)."""
    if not options.timing_cache:
        return
    cache = config.get_timing_cache()
    if cache is not None:
        with open(options.timing_cache, "wb") as f:
            f.write(bytes(memoryview(cache.serialize())))
