"""Op coverage measured by PyTorch's own op database (OpInfo), not by tests we wrote.

Every OpInfo entry (an op and its variant, e.g. ``softmax`` / ``with_dtype``) gives sample inputs; each
sample's tensors become network inputs, the op is converted through :func:`torch2x.build_network`
(``strict=False``), and the interpreter's outputs are compared with eager PyTorch. A sample ends in one
of these states:

- ``match``: every call converted and the outputs agree (float: relative error <= 1e-4, as
  ``tests/harness.py`` measures it; integers and bools exactly; uninitialized memory such as
  ``empty_like``: shape and dtype only);
- ``unsupported``: the report lists the calls torch2x cannot convert, with reasons (random ops are
  reported: an engine cannot reproduce PyTorch's random stream);
- ``refused``: torch2x refuses the sample's inputs with a clear error (a complex or float64 input);
- ``skipped``: nothing to convert (eager PyTorch raises on the sample, or no tensor in or out);
- ``mismatch`` and ``crash`` (an exception escaping torch2x): bugs. ``tests/test_opinfo.py`` fails on them.

Needs ``expecttest`` (the ``test`` extra). The coverage count (first float32 sample of every entry)::

    python -m torch2x.opinfo            # per-entry status table, then the count
    python -m torch2x.opinfo --summary  # the count only
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterable, Iterator

import torch

from .structure import flatten

RTOL = 1e-4
STATES = ("match", "unsupported", "refused", "skipped", "mismatch", "crash")
# Outputs that are uninitialized memory: only their shape and dtype mean anything.
UNINITIALIZED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted",
                 "nn.functional.feature_alpha_dropout"}
# Ops whose indices PyTorch leaves unspecified among tied values (TensorRT's top-k picks its own): their
# index outputs are compared only when the sample's input holds no repeated value.
TIED_INDICES = {"kthvalue", "sort", "argsort", "topk", "median", "nanmedian", "mode", "msort"}
# Input errors torch2x raises on purpose, before tracing (torch2x.network._add_inputs).
_REFUSED_INPUT = re.compile(r"input '.*' (is float64|has dtype)|same tensor object")


@dataclass
class Outcome:
    """What happened to one sample of one OpInfo entry."""

    entry: str  # "name" or "name.variant"
    dtype: torch.dtype
    state: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.entry:<45} {str(self.dtype).replace('torch.', ''):<8} {self.state:<11} {self.detail}"


def entry_name(op: Any) -> str:
    """``softmax.with_dtype``: the OpInfo name and its variant, as PyTorch's test names spell them."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def op_db() -> list:
    """PyTorch's OpInfo database (imported lazily: it takes ~15 s and needs expecttest)."""
    from torch.testing._internal.common_methods_invocations import op_db as db

    return db


def samples(op: Any, dtype: torch.dtype, picks: Iterable[int] = (0,)) -> list:
    """The CPU samples of ``op`` in ``dtype`` at positions ``picks`` (none when the op does not take the
    dtype; fewer when it has fewer samples)."""
    if dtype not in op.supported_dtypes("cpu"):
        return []
    picks = sorted(set(picks))
    out = []
    torch.manual_seed(0)  # OpInfo draws its sample values at random: the same samples on every run
    with torch.no_grad():
        for k, sample in enumerate(op.sample_inputs("cpu", dtype, requires_grad=False)):
            if k in picks:
                out.append(sample)
            if k >= picks[-1]:
                break
    return out


def _take(value: Any, tensors: list) -> Any:
    """``value`` with each tensor leaf (in tuples, lists, dicts) replaced by its index in ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return _Slot(len(tensors) - 1)
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        return type(value)(_take(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _take(v, tensors) for k, v in value.items()}
    return value  # dtypes, sizes, slices, numbers: passed as they are


def _put(value: Any, tensors: list) -> Any:
    if isinstance(value, _Slot):
        return tensors[value.index]
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        return type(value)(_put(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _put(v, tensors) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _Slot:
    index: int


class _Call(torch.nn.Module):
    """The op applied to a sample whose tensors are the module's inputs."""

    def __init__(self, fn: Callable, spec: Any):
        super().__init__()
        self.fn, self.spec = fn, spec

    def forward(self, *tensors):
        inp, args, kwargs = _put(self.spec, list(tensors))
        return self.fn(inp, *args, **kwargs)


def _clone_all(tensors: list) -> list:
    return [t.clone() for t in tensors]


def _split(sample: Any) -> tuple:
    """The sample's tensors (each object once: an input may not appear twice) and its structure."""
    tensors: list = []
    spec = _take((sample.input, tuple(sample.args), dict(sample.kwargs)), tensors)
    seen: set = set()
    unique = []
    for t in tensors:
        unique.append(t.clone() if id(t) in seen else t)
        seen.add(id(t))
    return unique, spec


def _compare(out: Any, ref: Any, uninitialized: bool, tied_indices: bool = False) -> str | None:
    """None when the interpreter's ``out`` matches eager ``ref``; else what differs. ``tied_indices``:
    int64 outputs are indices chosen among equal values, which PyTorch does not specify (shape only)."""
    outs, out_spec = _flat(out)
    refs, ref_spec = _flat(ref)
    if out_spec != ref_spec or len(outs) != len(refs):
        return f"output structure {out_spec} != {ref_spec}"
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        if tuple(o.shape) != tuple(r.shape):
            return f"output {i}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        want = torch.float32 if r.dtype == torch.float64 else r.dtype  # float64 computes in float32 (noted)
        if o.dtype != want:
            return f"output {i}: dtype {o.dtype} != {r.dtype}"
        if uninitialized or (tied_indices and r.dtype == torch.int64):
            continue
        if r.is_floating_point():
            o, r = o.double(), r.double()
            same_nan = torch.equal(torch.isnan(o), torch.isnan(r))
            inf = torch.isinf(r)
            if not same_nan or not torch.equal(o[inf], r[inf]):
                return f"output {i}: non-finite values differ"
            finite = torch.isfinite(r)
            # float64 outputs computed in float32 carry float32 rounding: compare those in float32 terms
            diff = (o[finite] - r[finite]).norm().item()
            scale = r[finite].norm().item()
            err = diff / scale if scale > 0 else diff
            if not err <= RTOL:
                return f"output {i}: relative error {err:.3g} > {RTOL:g}"
        elif not torch.equal(o, r):
            return f"output {i}: {int((o != r).sum())} of {r.numel()} elements differ"
    return None


def _quietly() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    logging.getLogger("torch2x").setLevel(logging.ERROR)
    return stack


def run_sample(op: Any, sample: Any, dtype: torch.dtype) -> Outcome:
    """Convert one sample of one OpInfo entry and classify the result (see the module docstring)."""
    from . import UnsupportedOperatorError, build_network

    name = entry_name(op)
    tensors, spec = _split(sample)
    model = _Call(op.op, spec)
    with _quietly():
        try:
            with torch.no_grad():
                ref = model(*_clone_all(tensors))
        except Exception as exc:  # noqa: BLE001 -- the sample itself is invalid in eager PyTorch
            return Outcome(name, dtype, "skipped", f"eager PyTorch raises {type(exc).__name__}")
        if not tensors:
            return Outcome(name, dtype, "skipped", "no tensor input")
        ref_tensors, ref_spec = _flat(ref)
        if not ref_tensors or ref_spec is None:
            return Outcome(name, dtype, "skipped", "no tensor output" if ref_spec else "output is not tensors")
        if any(t.is_complex() for t in ref_tensors):
            return Outcome(name, dtype, "unsupported", "complex output: TensorRT has no complex type")
        try:
            net = build_network(model, _clone_all(tensors), strict=False, progress=False)
        except UnsupportedOperatorError as exc:
            return Outcome(name, dtype, "unsupported", _reasons(exc.report))
        except (TypeError, ValueError) as exc:
            if _REFUSED_INPUT.search(str(exc)):
                return Outcome(name, dtype, "refused", str(exc).split("\n")[0])
            return Outcome(name, dtype, "crash", f"{type(exc).__name__}: {exc}".split("\n")[0])
        except Exception as exc:  # noqa: BLE001 -- any other escape is a torch2x bug
            return Outcome(name, dtype, "crash", f"{type(exc).__name__}: {exc}".split("\n")[0])
        if not net.report.ok:
            return Outcome(name, dtype, "unsupported", _reasons(net.report))
        try:
            out = net.interpret(*_clone_all(tensors))
        except Exception as exc:  # noqa: BLE001
            return Outcome(name, dtype, "crash", f"interpreter: {type(exc).__name__}: {exc}".split("\n")[0])
    first = tensors[0]
    ties = op.name in TIED_INDICES and first.numel() != torch.unique(first).numel()
    problem = _compare(out, ref, op.name in UNINITIALIZED, ties)
    if problem is not None:
        return Outcome(name, dtype, "mismatch", problem)
    notes = "; ".join(getattr(net.report, "notes", []) or [])
    return Outcome(name, dtype, "match", notes)


def _flat(value: Any) -> tuple:
    """``flatten`` for outputs; spec None when the output holds values a network cannot return."""
    try:
        return flatten(value)
    except TypeError:
        return [], None


def _reasons(report: Any) -> str:
    return "; ".join(f"{u.op}: {u.reason}" for u in report.unsupported.values())[:300]


def run(ops: Iterable[Any] | None = None, dtypes: tuple = (torch.float32,),
        picks: Iterable[int] = (0,)) -> Iterator[Outcome]:
    """Outcomes of the samples at positions ``picks`` of each entry in each of ``dtypes`` it supports."""
    for op in (op_db() if ops is None else ops):
        for dtype in dtypes:
            try:
                chosen = samples(op, dtype, picks)
            except Exception as exc:  # noqa: BLE001 -- OpInfo's own sample generator failed
                yield Outcome(entry_name(op), dtype, "skipped", f"sample_inputs raises {type(exc).__name__}")
                continue
            for sample in chosen:
                yield run_sample(op, sample, dtype)


def first_float32(ops: Iterable[Any] | None = None) -> list:
    """The coverage measure: the outcome of the first float32 sample of every entry."""
    return list(run(ops, (torch.float32,), (0,)))


def summary(outcomes: list) -> str:
    counts = {s: sum(o.state == s for o in outcomes) for s in STATES}
    return (f"OpInfo: {counts['match']} of {len(outcomes)} entries convert and match on their first float32 sample "
            + "(" + ", ".join(f"{n} {s}" for s, n in counts.items() if s != "match") + ")")


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch2x.opinfo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", action="store_true", help="print the count only")
    parser.add_argument("--only", nargs="*", help="entry names to run (default: all)")
    args = parser.parse_args(argv)
    ops = [op for op in op_db() if not args.only or entry_name(op) in args.only or op.name in args.only]
    outcomes = []
    for outcome in first_float32(ops):
        outcomes.append(outcome)
        if not args.summary:
            print(outcome, flush=True)
    print(summary(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
