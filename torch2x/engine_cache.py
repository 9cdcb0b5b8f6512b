"""Reuse an engine built before: ``torch2x(model, [x], engine_cache="dir")`` (or ``TORCH2X_ENGINE_CACHE=dir``).

The key is a SHA-256 of what decides the engine, computed before anything is traced so that a hit skips
both the conversion and the engine build:

- the model's weights (every parameter and buffer: name, type, shape and bytes) and its ``repr`` (the
  hyperparameters of its modules);
- the source files of every module class in the model (a changed ``forward`` is a miss);
- the input specs (nesting, shapes, dtypes; not the values), the conversion keywords (precision,
  names, dynamic shapes, int8 settings with the calibration data's and cache file's contents) and the
  build options;
- the TensorRT flavour and version, the torch version and torch2x's own source files (converters included).

What the key cannot see: Python state outside the model's class files that its ``forward`` reads (a global
flag, a function defined in another file, monkey-patching), and input *values* that steer Python control
flow. Clear the directory after changing such things. Hashing the built network instead would see all of
it, but would only save the engine build, not the conversion.

Each entry is one file ``<key>.torch2x-engine`` (a ``torch.save`` of the TRTModule state dict plus the key,
flavour, version, the engine's CRC-32 and the conversion report), loaded with ``weights_only=True``. An
entry that does not load (a truncated file), is for another key, flavour or version, or whose engine bytes
do not match their checksum (an altered file) is rebuilt and overwritten, never used. (CRC-32 detects
accidental damage at 3x the speed of SHA-256, which matters for a 350 MB engine; the key stays SHA-256.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from typing import Any
from collections.abc import Sequence

import torch

from . import flavour
from .report import ConversionReport
from .structure import flatten

log = logging.getLogger("torch2x.engine_cache")
_FORMAT = 1
_SUFFIX = ".torch2x-engine"
ENV = "TORCH2X_ENGINE_CACHE"


def directory(engine_cache: str | None) -> str | None:
    """The cache directory: ``engine_cache``, else ``$TORCH2X_ENGINE_CACHE``, else None (no cache)."""
    path = engine_cache or os.environ.get(ENV, "").strip() or None
    if path is not None:
        os.makedirs(path, exist_ok=True)
    return path


def _tensor_digest(h: hashlib._Hash, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy


_DIGESTS: dict = {}  # (path, mtime, size) -> SHA-256 of the file: source files are read once while unchanged


def _file_digest(path: str) -> str:
    stat = os.stat(path)
    memo = (path, stat.st_mtime_ns, stat.st_size)
    if memo not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[memo] = hashlib.sha256(f.read()).hexdigest()
    return _DIGESTS[memo]


def _torch2x_digest() -> str:
    """Every ``.py`` file of the torch2x package (converters and plugins too: they may be symlinks)."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(root, followlinks=True)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(base, name)
                h.update(os.path.relpath(path, root).encode())
                h.update(_file_digest(path).encode())
    return h.hexdigest()


def _code_files(module: Any) -> list:
    """The source files defining the model's module classes (or the function given instead of a module)."""
    import inspect as pyinspect

    objects = [type(m) for m in module.modules()] if isinstance(module, torch.nn.Module) else [module]
    files = set()
    for obj in objects:
        try:
            path = pyinspect.getsourcefile(obj)
        except (TypeError, OSError):
            path = None
        if path and os.path.isfile(path):
            files.add(os.path.abspath(path))
    return sorted(files)


def _canonical(value: Any) -> Any:
    """``value`` as JSON-able data: tensors by content digest, paths to files by content digest."""
    if isinstance(value, torch.Tensor):
        h = hashlib.sha256()
        _tensor_digest(h, value)
        return {"tensor": h.hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_canonical(v) for v in items]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def key(module: Any, inputs: Sequence[Any], options: dict) -> str:
    """The cache key of converting ``module(*inputs)`` with ``options`` (conversion keywords and build
    options, JSON-able after :func:`_canonical`). See the module docstring for what it covers."""
    h = hashlib.sha256()
    tensors, spec = flatten(list(inputs))
    header = {"format": _FORMAT, "flavour": flavour.NAME, "version": flavour.VERSION, "torch": torch.__version__,
              "torch2x": _torch2x_digest(), "inputs": [spec, [[str(t.dtype), list(t.shape)] for t in tensors]],
              "options": _canonical(options),
              "code": [[os.path.basename(p), _file_digest(p)] for p in _code_files(module)]}
    h.update(json.dumps(header, sort_keys=True).encode())
    if isinstance(module, torch.nn.Module):
        h.update(repr(module).encode())
        for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
            h.update(name.encode())
            _tensor_digest(h, t)
    return h.hexdigest()


def _path(cache_dir: str, cache_key: str) -> str:
    return os.path.join(cache_dir, cache_key + _SUFFIX)


def load(cache_dir: str, cache_key: str) -> Any | None:
    """The TRTModule stored under ``cache_key`` (its ``.report`` marked as from the cache), or None when
    there is none or the entry cannot be trusted (then it is rebuilt; the reason goes to the log)."""
    from .runtime import TRTModule

    path = _path(cache_dir, cache_key)
    if not os.path.exists(path):
        return None
    try:
        entry = torch.load(path, weights_only=True, mmap=True)  # mmap: the engine is read once, by the hash
        problem = ("not a torch2x engine cache entry" if not isinstance(entry, dict) or entry.get("format") != _FORMAT
                   else "for another key" if entry.get("key") != cache_key
                   else f"built with {entry.get('flavour')} {entry.get('version')}"
                   if (entry.get("flavour"), entry.get("version")) != (flavour.NAME, flavour.VERSION) else "")
        if not problem:
            engine = entry["state_dict"]["engine"]
            if zlib.crc32(engine.numpy()) != entry.get("engine_crc32"):
                problem = "engine bytes do not match their checksum"
    except Exception as exc:  # noqa: BLE001 -- a truncated or foreign file: any failure means rebuild
        problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    if problem:
        log.warning("engine cache entry %s is %s: rebuilding it", path, problem)
        return None
    trt_module = TRTModule()
    trt_module.load_state_dict(entry["state_dict"])
    trt_module.report = ConversionReport.from_dict(entry.get("report") or {})
    trt_module.report.engine_cache = f"engine from the cache ({path})"
    return trt_module


def store(cache_dir: str, cache_key: str, trt_module: Any) -> str:
    """Write ``trt_module`` under ``cache_key`` atomically (a reader never sees half a file); returns the path."""
    state = trt_module.state_dict()
    entry = {"format": _FORMAT, "key": cache_key, "flavour": flavour.NAME, "version": flavour.VERSION,
             "engine_crc32": zlib.crc32(state["engine"].numpy()),
             "state_dict": state, "report": trt_module.report.to_dict() if getattr(trt_module, "report", None) else {}}
    path = _path(cache_dir, cache_key)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(entry, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def file_or_value(value: Any) -> Any:
    """A path to an existing file as its content digest (a calibration cache), anything else as is."""
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        return {"file": _file_digest(os.fspath(value))}
    return value


def conversion_key(module: Any, inputs: Sequence[Any], conversion: dict) -> str:
    """:func:`key` for ``build_network(module, inputs, **conversion)`` (progress aside; build options as a
    BuildOptions or dict; a calibration cache file by its content)."""
    from .build_options import BuildOptions

    options = {k: v for k, v in conversion.items() if k != "progress"}
    options["build_options"] = BuildOptions.of(options.get("build_options")).to_dict()
    options["calibration_cache"] = file_or_value(options.get("calibration_cache"))
    return key(module, inputs, options)
