"""What could not be converted: a table to print and JSON to keep."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from .context import ConversionError


@dataclass
class UnsupportedCall:
    """One torch op that could not be converted, over every place it was called."""

    op: str
    reason: str
    count: int = 0
    module_paths: Counter = field(default_factory=Counter)
    example: str = ""
    placeholder: bool = False  # the network holds a stand-in only the interpreter runs (UnsupportedWithPlaceholder)

    def to_dict(self) -> dict:
        return {"op": self.op, "reason": self.reason, "count": self.count,
                "module_paths": dict(self.module_paths), "example": self.example, "placeholder": self.placeholder}


class UnsupportedWithPlaceholder(ConversionError):
    """Raised by a converter that cannot express a call on this TensorRT but can stand in for it.

    ``outputs`` are network tensors of the call's output shapes and types from layers marked as
    placeholders (JSON ``metadata`` with ``"placeholder": true`` and the names of the tensors to read,
    see ``torch2x.interpreter.core.placeholder_meta``). The tracer reports the call as unsupported,
    so ``report.ok`` is False and a strict conversion fails, but binds ``outputs`` instead of
    poisoning them: later calls still convert, the interpreter runs the whole network, and
    ``build_engine`` refuses it. Example (in a converter)::

        raise UnsupportedWithPlaceholder(f"{name} needs plugin support", [placeholder_tensor])
    """

    def __init__(self, reason: str, outputs: list):
        super().__init__(reason)
        self.outputs = outputs


def describe_value(value: Any) -> str:
    """``float32[1, 3, 224, 224]`` for tensors, ``repr`` (shortened) for the rest; nested sequences kept."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, torch.nn.Module):  # (a method's self: its repr spans many lines)
        return f"<{type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ConversionReport:
    """Every unsupported torch call of one conversion, grouped by op.

    ``str(report)`` is a table; ``report.to_json()`` serializes it.
    """

    def __init__(self):
        self.unsupported: dict[str, UnsupportedCall] = {}
        self.data_dependent: dict[str, UnsupportedCall] = {}
        self.converted_calls = 0
        self.num_layers = 0
        self.segments: list = []  # hybrid execution: engine and PyTorch steps in run order (torch2x.hybrid)
        self.engine_cache: Optional[str] = None  # with an engine cache: where the engine came from
        self.notes: list[str] = []  # what the network does differently from PyTorch, by choice (float64)

    def add_note(self, note: str) -> None:
        """Record ``note`` once: a deliberate difference from PyTorch that still converts (not unsupported)."""
        if note not in self.notes:
            self.notes.append(note)

    @classmethod
    def from_dict(cls, data: dict) -> ConversionReport:
        """The inverse of :meth:`to_dict` (for reports kept with cached engines)."""
        report = cls()
        report.converted_calls, report.num_layers = data.get("converted_calls", 0), data.get("num_layers", 0)
        for target, key in ((report.unsupported, "unsupported"), (report.data_dependent, "data_dependent")):
            for u in data.get(key, []):
                target[u["op"]] = UnsupportedCall(u["op"], u["reason"], u.get("count", 0),
                                                  Counter(u.get("module_paths", {})), u.get("example", ""),
                                                  u.get("placeholder", False))
        return report

    def add_data_dependent(self, op: str, module_path: str, example: str) -> None:
        """A Python value read from a traced tensor's data: the network keeps the value of this example."""
        entry = self.data_dependent.setdefault(
            op, UnsupportedCall(op, "value read from tensor data; frozen at the example's value", example=example))
        entry.count += 1
        entry.module_paths[module_path or "<root>"] += 1

    def add_unsupported(self, op: str, module_path: str, reason: str, example: str, placeholder: bool = False) -> None:
        """Count one call of ``op`` that could not be converted (``placeholder``: the network stands in for it)."""
        entry = self.unsupported.get(op)
        if entry is None:
            entry = self.unsupported[op] = UnsupportedCall(op, reason, example=example, placeholder=placeholder)
        entry.count += 1
        entry.module_paths[module_path or "<root>"] += 1

    def merge_notes(self, other: ConversionReport) -> None:
        """Take ``other``'s notes (a composite's inner report) into this one."""
        for note in other.notes:
            self.add_note(note)

    @property
    def ok(self) -> bool:
        """True when every traced call was converted."""
        return not self.unsupported

    @property
    def usable(self) -> bool:
        """True when the conversion gives a module: every call converted, or the rest runs in PyTorch (hybrid)."""
        return self.ok or bool(self.segments)

    def to_dict(self) -> dict:
        data = {"ok": self.ok, "converted_calls": self.converted_calls, "num_layers": self.num_layers,
                "unsupported": [u.to_dict() for u in self.unsupported.values()],
                "data_dependent": [u.to_dict() for u in self.data_dependent.values()], "notes": list(self.notes),
                **({"segments": self.segments} if self.segments else {})}
        if self.engine_cache is not None:
            data["engine_cache"] = self.engine_cache
        return data

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self._table() + self._segment_lines()

    def _segment_lines(self) -> str:
        if not self.segments:
            return ""
        engines = [r for r in self.segments if r["kind"] == "engine"]
        steps = [r for r in self.segments if r["kind"] == "pytorch"]
        lines = [f"hybrid execution: {len(engines)} TensorRT engine(s), {len(steps)} call(s) in PyTorch, in run order:"]
        for r in self.segments:
            if r["kind"] == "engine":
                lines.append(f"  engine {r['engine']}: {r['calls']} calls, {r['layers']} layers; "
                             f"in: {_few(r['inputs'])}; out: {_few(r['outputs'])}")
            else:
                lines.append(f"  pytorch: {r['op']} at {r['module_path'] or '<root>'} ({r['reason']}); "
                             f"in: {_few(r['inputs'])}; out: {_few(r['outputs'])}")
        return "\n" + "\n".join(lines)

    def _table(self) -> str:
        head = f"torch2x report: {self.converted_calls} calls converted into {self.num_layers} layers"
        warnings = "".join(f"\nwarning: {u.op} at {', '.join(u.module_paths)}: {u.reason}"
                           for u in self.data_dependent.values())
        warnings += "".join(f"\nnote: {n}" for n in self.notes)
        if self.engine_cache is not None:
            warnings += "\n" + self.engine_cache
        if self.ok:
            return head + ", no unsupported calls" + warnings
        rows = [("op", "count", "module paths", "example arguments", "reason")]
        for u in self.unsupported.values():
            paths = ", ".join(f"{p} (x{n})" if n > 1 else p for p, n in u.module_paths.most_common(4))
            if len(u.module_paths) > 4:
                paths += f", +{len(u.module_paths) - 4} more"
            rows.append((u.op, str(u.count), paths, u.example, u.reason))
        widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
        kind = "op(s) running in PyTorch" if self.segments else "unsupported op(s)"
        lines = [head + f", {len(self.unsupported)} {kind}:"]
        for k, r in enumerate(rows):
            lines.append("  ".join(cell[:w].ljust(w) for cell, w in zip(r, widths)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines) + warnings

    __repr__ = __str__


def _few(names: list, most: int = 6) -> str:
    shown = ", ".join(names[:most]) + (f", +{len(names) - most} more" if len(names) > most else "")
    return shown or "nothing"


class UnsupportedOperatorError(RuntimeError):
    """Conversion needs torch calls that torch2x cannot convert; ``.report`` lists them."""

    def __init__(self, report: ConversionReport, detail: str = ""):
        self.report = report
        ops = ", ".join(f"{u.op} at {', '.join(list(u.module_paths)[:3])}" for u in report.unsupported.values())
        super().__init__(
            f"cannot convert: {ops}. {detail}".strip()
            + "\nWhat to do: rewrite those calls, register a converter with @torch2x.converter, "
              "or see 'When TensorRT lacks an op' in the README.\n" + str(report)
        )
