"""Reuse an engine built before: ``torch2x(model, [x], engine_cache="dir")`` (or ``TORCH2X_ENGINE_CACHE=dir``).

The key is a SHA-256 of what decides the engine, computed before anything is traced so that a hit skips
both the conversion and the engine build:

- the model's weights (every parameter and buffer: name, type, shape and bytes) and its ``repr`` (the
  hyperparameters of its modules);
- the source files of every module class in the model (a changed ``forward`` is a miss), the code of
  ``torch.fx.GraphModule`` submodules, and what a module's ``torch2x_cache_key()`` returns, if it has one
  (the torch.compile backend's graph wrapper returns the Dynamo graph's code and fixed arguments);
- the input specs (nesting, shapes, dtypes; not the values), the conversion keywords (precision,
  names, dynamic shapes, int8 settings with the calibration data's and cache file's contents) and the
  build options;
- the TensorRT flavour and version, the torch version and torch2x's own source files (converters included).

What the key cannot see: Python state outside the model's class files that its ``forward`` reads (a global
flag, a function defined in another file, monkey-patching), and input *values* that steer Python control
flow. Clear the directory after changing such things. Hashing the built network instead would see all of
it, but would only save the engine build, not the conversion.

Each entry is one file ``<key>.torch2x-engine``: a JSON header (key, flavour, version, the engine's size and
the CRC-32 of each 16 MB piece, the TRTModule's I/O description and the conversion report) followed by the raw
plan; nothing in it is unpickled. An entry that does not parse, is for another key, flavour or version, is
shorter than its header says (truncated) or whose engine does not match its checksum (altered) is rebuilt and
overwritten, never used. (CRC-32 detects accidental damage at 3x the speed of SHA-256, which matters for a
350 MB engine; the key stays SHA-256. Both run per 16 MB piece on every core, checksums while the file is
still being read: a hit costs about as much as reading the weights and the engine once.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from collections.abc import Sequence

import torch

from . import flavour
from .report import ConversionReport
from .structure import flatten

log = logging.getLogger("torch2x.engine_cache")
_FORMAT = 3  # 3: weights hashed and engines checksummed per 16 MB piece
_SUFFIX = ".torch2x-engine"
ENV = "TORCH2X_ENGINE_CACHE"


def directory(engine_cache: str | None) -> str | None:
    """The cache directory: ``engine_cache``, else ``$TORCH2X_ENGINE_CACHE``, else None (no cache)."""
    path = engine_cache or os.environ.get(ENV, "").strip() or None
    if path is not None:
        os.makedirs(path, exist_ok=True)
    return path


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
        return {"tensor": _weight_digests([value])[0]}
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
    extra = getattr(module, "torch2x_cache_key", None)
    if callable(extra):  # what a wrapper knows decides its network beyond weights and code files (a Dynamo graph)
        h.update(str(extra()).encode())
    if isinstance(module, torch.nn.Module):
        h.update(repr(module).encode())
        for m in module.modules():  # generated code lives in no source file: hash the code itself
            if isinstance(m, torch.fx.GraphModule):
                h.update(m.code.encode())
        named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        for (name, _), digest in zip(named, _weight_digests([t for _, t in named]), strict=True):
            h.update(f"{name}:{digest}".encode())
    return h.hexdigest()


_CHUNK = 16 << 20  # weights are hashed and engines checksummed in 16 MB pieces, on every core


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))  # hashlib and zlib release the GIL


def _weight_digests(tensors: list) -> list:
    """One SHA-256 per tensor (its type, shape and the digests of its 16 MB pieces), computed on a few
    threads: a cache hit is mostly this and reading the engine, and one 400 MB weight (VGG's first fully
    connected layer) would otherwise keep one core busy while the others wait."""
    flat = [t.detach().cpu().contiguous() for t in tensors]
    pieces = []  # (tensor index, bytes view)
    for i, t in enumerate(flat):
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
        pieces += [(i, data[start:start + _CHUNK]) for start in range(0, max(1, len(data)), _CHUNK)]
    with _pool() as pool:
        digests = list(pool.map(lambda piece: hashlib.sha256(piece[1]).digest(), pieces))
    hashes = [hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode()) for t in flat]
    for (i, _), digest in zip(pieces, digests, strict=True):
        hashes[i].update(digest)
    return [h.hexdigest() for h in hashes]


def _path(cache_dir: str, cache_key: str) -> str:
    return os.path.join(cache_dir, cache_key + _SUFFIX)


_MAGIC = b"TORCH2X-ENGINE-CACHE\n"


def read_entry(path: str) -> tuple:
    """``(header dict, engine bytes)`` of a cache file: the magic line, an 8-byte header length, the header
    as JSON, then the raw plan (read into one buffer: no copy of a 350 MB engine on the way)."""
    header, engine, _ = _read_checksummed(path)
    return header, engine


def _checksums(data) -> list:
    """CRC-32 of each 16 MB piece of ``data``."""
    view = memoryview(data)
    with _pool() as pool:
        return list(pool.map(lambda start: zlib.crc32(view[start:start + _CHUNK]), range(0, len(view), _CHUNK)))


def _read_checksummed(path: str) -> tuple:
    """``(header, engine, CRC-32 of each 16 MB piece)``: each piece is checksummed on another thread while the
    next one is read, so checking a cache entry costs little more than reading it."""
    with open(path, "rb") as f, _pool() as pool:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise ValueError("no torch2x engine cache header")
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size).decode("utf-8"))
        remaining = os.fstat(f.fileno()).st_size - f.tell()
        engine = bytearray(remaining)
        view, futures, start = memoryview(engine), [], 0
        while start < remaining:
            got = f.readinto(view[start:start + _CHUNK])
            if not got:  # the file shrank while being read
                return header, engine[:start], [future.result() for future in futures]
            futures.append(pool.submit(zlib.crc32, view[start:start + got]))
            start += got
        return header, engine, [future.result() for future in futures]


def write_entry(path: str, header: dict, engine: bytes) -> None:
    """Write a cache file atomically (to a temporary file, then renamed: a reader never sees half of one)."""
    data = json.dumps(header).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(data).to_bytes(8, "little") + data)
            f.write(engine)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(cache_dir: str, cache_key: str) -> Any | None:
    """The TRTModule stored under ``cache_key`` (its ``.report`` marked as from the cache), or None when
    there is none or the entry cannot be trusted (then it is rebuilt; the reason goes to the log)."""
    from .runtime import TRTModule

    path = _path(cache_dir, cache_key)
    if not os.path.exists(path):
        return None
    try:
        header, engine, checksums = _read_checksummed(path)
        problem = ("not a torch2x engine cache entry" if header.get("format") != _FORMAT
                   else "for another key" if header.get("key") != cache_key
                   else f"built with {header.get('flavour')} {header.get('version')}"
                   if (header.get("flavour"), header.get("version")) != (flavour.NAME, flavour.VERSION)
                   else "truncated" if len(engine) != header.get("engine_size")
                   else "altered: its engine does not match its checksum"
                   if checksums != header.get("engine_crc32") else "")
    except Exception as exc:  # noqa: BLE001 -- a truncated or foreign file: any failure means rebuild
        problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    if problem:
        log.warning("engine cache entry %s is %s: rebuilding it", path, problem)
        return None
    trt_module = TRTModule(engine, **header["meta"])
    trt_module.report = ConversionReport.from_dict(header.get("report") or {})
    trt_module.report.engine_cache = f"engine from the cache ({path})"
    return trt_module


def store(cache_dir: str, cache_key: str, trt_module: Any) -> str:
    """Write ``trt_module`` (its engine, I/O description and report) under ``cache_key``; returns the path."""
    engine = bytes(trt_module.engine_bytes)
    header = {"format": _FORMAT, "key": cache_key, "flavour": flavour.NAME, "version": flavour.VERSION,
              "engine_size": len(engine), "engine_crc32": _checksums(engine), "meta": trt_module.meta,
              "report": trt_module.report.to_dict() if getattr(trt_module, "report", None) else {}}
    path = _path(cache_dir, cache_key)
    write_entry(path, header, engine)
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
