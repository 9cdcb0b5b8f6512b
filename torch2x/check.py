"""Layerwise check on CPU: the interpreted network against PyTorch, module by module."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Sequence

import torch

from .interpreter import Interpreter
from .layout import StoredView
from .hybrid import HybridNetwork
from .network import ConvertedNetwork, build_network
from .structure import flatten
from .tracer import tensor_leaves


@dataclass
class LayerComparison:
    """One compared tensor: a module's output (by module path) or a network output."""

    name: str
    max_abs_error: float
    relative_error: float
    ok: bool


@dataclass
class CheckResult:
    """Every comparison of one check, in execution order; ``first_failure`` is where numbers go wrong."""

    rows: list = field(default_factory=list)
    tolerance: float = 1e-4
    network: Optional[ConvertedNetwork] = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def first_failure(self) -> Optional[LayerComparison]:
        return next((r for r in self.rows if not r.ok), None)

    @property
    def outputs(self) -> list:
        return [r for r in self.rows if r.name.startswith("output ")]

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [12])
        lines = [f"{'output/layer'.ljust(width)}  {'max abs err':>11}  {'rel err':>9}",
                 f"{'-' * width}  {'-' * 11}  {'-' * 9}"]
        first = self.first_failure
        for r in self.rows:
            mark = "  <-- first above tolerance" if r is first else ("  !" if not r.ok else "")
            lines.append(f"{r.name.ljust(width)}  {r.max_abs_error:11.3g}  {r.relative_error:9.3g}{mark}")
        verdict = "ok" if self.ok else f"FAILED at {first.name}"
        lines.append(f"check: {verdict} (relative error tolerance {self.tolerance:g})")
        if self.network is not None and self.network.report.segments:  # hybrid: which calls ran where
            lines.append(self.network.report._segment_lines().lstrip("\n"))
        held = [u.op for u in self.network.report.unsupported.values() if u.placeholder] if self.network else []
        if held:  # a passing check must not read as "the engine will work"
            lines.append(f"note: {', '.join(held)} ran with PyTorch in place of placeholders: no engine can be built")
        return "\n".join(lines)


def _compare(name: str, out: torch.Tensor, ref: torch.Tensor, tolerance: float) -> LayerComparison:
    if out.shape != ref.shape:
        return LayerComparison(name, float("inf"), float("inf"), False)
    if not ref.is_floating_point():
        wrong = (out != ref).sum().item()
        return LayerComparison(name, float(wrong), float(wrong), wrong == 0)
    diff = (out.double() - ref.double())
    scale = ref.double().norm().item()
    rel = diff.norm().item() / scale if scale > 0 else diff.norm().item()
    return LayerComparison(name, diff.abs().max().item() if diff.numel() else 0.0, rel, rel <= tolerance)


def check(module: torch.nn.Module, inputs: Sequence[Any], tolerance: float = 1e-4, **options: Any) -> CheckResult:
    """Convert ``module``, run the network in the interpreter and PyTorch side by side, compare each
    submodule's output (matched through the network's tensors) and every network output.

    Example::

        result = torch2x.check(model, [x])
        print(result)            # table; the first layer above tolerance is marked
        assert result.ok

    With ``strict=False``, ops the network holds placeholders for (plugin ops on TensorRT-RTX) run with
    their PyTorch implementation, and the table notes them. With ``fallback=True`` a hybrid conversion's
    outputs are compared (engine segments interpreted, PyTorch steps run) and the table lists the segments.
    """
    converted = build_network(module, inputs, **options)
    if isinstance(converted, HybridNetwork):
        return _check_hybrid(module, inputs, converted, tolerance)
    names = [(path, tensor_names) for path, tensor_names in converted.module_outputs]
    references: list = []
    hooks = []
    if isinstance(module, torch.nn.Module):
        for path, sub in module.named_modules():
            hooks.append(sub.register_forward_hook(
                lambda m, a, out, _p=path: references.append((_p, [t.clone() for t in tensor_leaves(out)]))))
    try:
        with torch.no_grad():
            reference_out = module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    wanted = {getattr(n, "name", n) for _, ns in names for n in ns if n is not None}
    values = Interpreter(converted.network)(converted.feeds(*inputs), capture=sorted(wanted))
    result = CheckResult(tolerance=tolerance, network=converted)
    for (path, tensor_names), (ref_path, ref_tensors) in zip(names, references):
        if path != ref_path or not path:
            continue
        for k, (n, ref) in enumerate(zip(tensor_names, ref_tensors)):
            if n is not None:
                label = path if len(tensor_names) == 1 else f"{path}[{k}]"
                value = n.canonical(values[n.name]) if isinstance(n, StoredView) else values[n]
                result.rows.append(_compare(label, value, ref, tolerance))
    for name, ref in zip(converted.output_names, flatten(reference_out)[0]):
        result.rows.append(_compare(f"output {name}", values[name], ref, tolerance))
    return result


def _check_hybrid(module: Any, inputs: Sequence[Any], converted: HybridNetwork, tolerance: float) -> CheckResult:
    """The outputs of a hybrid program (segments interpreted) against PyTorch's."""
    with torch.no_grad():
        reference = flatten(module(*inputs))[0]
    outputs = flatten(converted.interpret(*inputs))[0]
    result = CheckResult(tolerance=tolerance, network=converted)
    for k, (out, ref) in enumerate(zip(outputs, reference)):
        result.rows.append(_compare(f"output output_{k}", out, ref, tolerance))
    return result
