"""Dynamic shapes: optimization profiles from the user's ranges, and the probe pass that finds which
output dims vary with the inputs.

    dynamic_shapes={"x": {0: (1, 8, 32)}}                      # dim 0 of input "x": min 1, opt 8, max 32
    dynamic_shapes={"x": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}   # whole shapes
    dynamic_shapes=[{"x": {0: (1, 1, 1)}}, {"x": {0: (2, 16, 64)}}]                 # several profiles
"""
from __future__ import annotations

from typing import Any, Optional
from collections.abc import Callable

import torch

from .tracer import Tracer, _is_inplace, tensor_leaves

Range = tuple  # (min shape, opt shape, max shape)


def parse_profiles(spec: Any, names: list, examples: list) -> list:
    """The user's ``dynamic_shapes`` as a list of profiles, each ``{input name: (min, opt, max)}`` with
    full shapes for every input (fixed inputs get their example's shape three times)."""
    if spec is None:
        return []
    profiles = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    result = []
    for profile in profiles:
        if not isinstance(profile, dict):
            raise TypeError("dynamic_shapes takes {input name: ranges} or a list of them, e.g. {'x': {0: (1, 8, 32)}}")
        unknown = [k for k in profile if k not in names]
        if unknown:
            raise ValueError(f"dynamic_shapes names inputs {unknown}; the inputs are {names}")
        result.append({name: _full_range(name, profile.get(name), tuple(ex.shape))
                       for name, ex in zip(names, examples)})
    for name, ex in zip(names, examples):  # the traced example must be a shape some profile admits
        if not any(all(lo <= e <= hi for lo, e, hi in zip(p[name][0], ex.shape, p[name][2])) for p in result):
            lo, _, hi = result[0][name]
            raise ValueError(f"input {name!r} has shape {tuple(ex.shape)} in the example, outside its range "
                             f"{list(lo)}..{list(hi)}" + (" and every other profile's" if len(result) > 1 else ""))
    return result


def _full_range(name: str, entry: Any, example: tuple) -> Range:
    if entry is None:
        return example, example, example
    if isinstance(entry, dict):
        lo, opt, hi = list(example), list(example), list(example)
        for dim, bounds in entry.items():
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 3):
                raise ValueError(f"dynamic_shapes[{name!r}][{dim}] must be (min, opt, max), got {bounds!r}")
            d = int(dim) % len(example)
            lo[d], opt[d], hi[d] = (int(b) for b in bounds)
        shapes = tuple(lo), tuple(opt), tuple(hi)
    else:
        shapes = tuple(tuple(int(d) for d in s) for s in entry)
        if len(shapes) != 3 or any(len(s) != len(example) for s in shapes):
            raise ValueError(f"dynamic_shapes[{name!r}] must be three shapes of rank {len(example)} (min, opt, max)")
    lo, opt, hi = shapes
    for d, (a, b, c) in enumerate(zip(lo, opt, hi)):
        if not (0 <= a <= b <= c):
            raise ValueError(f"dynamic_shapes[{name!r}] dim {d}: need 0 <= min <= opt <= max, got {(a, b, c)}")
    return shapes


def dynamic_dims(profiles: list, name: str) -> list:
    """The dims of input ``name`` that vary in some profile (these become -1 in the network)."""
    dims = set()
    for profile in profiles:
        lo, _, hi = profile[name]
        dims.update(d for d, (a, c) in enumerate(zip(lo, hi)) if a != c)
    return sorted(dims)


def probe_input(profiles: list, name: str, example: torch.Tensor) -> torch.Tensor:
    """An input at another size in every dynamic dim (the first profile's min, or its max when the min is the
    example's), for the probe pass."""
    lo, _, hi = profiles[0][name]
    shape = [lo[d] if lo[d] != example.shape[d] else hi[d] for d in range(example.dim())]
    dims = dynamic_dims(profiles, name)
    shape = [shape[d] if d in dims else example.shape[d] for d in range(example.dim())]
    if example.is_floating_point():
        return torch.randn(shape, dtype=example.dtype, device=example.device)
    return torch.zeros(shape, dtype=example.dtype, device=example.device)  # ids/masks: any valid value works


class ShapeProbe(Tracer):
    """Runs the forward pass at the probe shapes and records every call the tracer sees with its output
    shapes: the main pass numbers its calls the same way, so comparing the n-th call's shapes with the
    example's shows which output dims are dynamic."""

    def __init__(self):
        super().__init__(ctx=None, module=None, report=None)
        self.records: list = []

    def _convert(self, qualname: str, original: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        outputs = tensor_leaves(out) or ([args[0]] if _is_inplace(qualname) and args else [])
        self.records.append((qualname, [tuple(t.shape) for t in outputs]))
        return out

    def _unknown_call(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        pass


def probe(module: Any, call_inputs: list) -> Optional[list]:
    """The probe pass's records, or None when the model fails at the probe shapes (then dynamic dims are
    not checked; the caller reports that)."""
    tracer = ShapeProbe()
    try:
        with torch.no_grad(), tracer:
            module(*call_inputs)
    except Exception:  # noqa: BLE001 -- a model that rejects the probe shape is reported by the caller
        return None
    return tracer.records
