"""torchvision detection models: what converts today, and what would run in PyTorch in a hybrid conversion.

    python benchmarks/detection.py [--models fasterrcnn_mobilenet_v3_large_320_fpn ...] [--no-check] [--no-build] [--hybrid]

Per model (eval, random weights from seed 0, one 320x320 image as ``[img]``), prints:
- ``today``: the time of ``torch2x.report(model, [[img]])`` (a strict=False conversion) and its unsupported calls;
- ``steps``: the same conversion with the whole-function steps of ``torch2x.plugins.detection`` standing in as
  network inputs with a dynamic first dim (``steps_as_inputs``): how many steps ran, the calls still
  unsupported outside them (0 means everything but the steps converts), layers, time;
- ``engine``: that network built into an engine, the steps' outputs dynamic from 0 to their bound;
- with ``--hybrid``: a real hybrid conversion (``fallback=True``, the steps registered): engines, the calls
  in PyTorch, the interpreted program against the model on both images, engine builds, state-dict round trip;
- ``check``: that network interpreted with the image and the steps' PyTorch outputs, against the model's
  outputs, on the conversion image and on a second image (another number of detections): the largest
  relative error over boxes/scores/labels/masks/keypoints.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager

import torch
import torchvision
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from harness import relative_error  # noqa: E402

import torch2x  # noqa: E402
from torch2x.plugins import detection  # noqa: E402
from torch2x.structure import flatten, unflatten  # noqa: E402
from torch2x.tracer import tensor_leaves  # noqa: E402

SMALL = {"min_size": 320, "max_size": 320}
# Random weights give almost no confident boxes: thresholds low enough that both images give detections.
MODELS = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": dict(SMALL, box_score_thresh=0.0105),
    "retinanet_resnet50_fpn": dict(SMALL),
    "ssdlite320_mobilenet_v3_large": {},
    "fcos_resnet50_fpn": dict(SMALL, score_thresh=0.05),
    "maskrcnn_resnet50_fpn": dict(SMALL, box_score_thresh=0.03),
    "keypointrcnn_resnet50_fpn": dict(SMALL),
}


def make_model(name: str) -> torch.nn.Module:
    """``name`` with random weights (seed 0) and the small settings of MODELS, in eval mode, its batch-norm
    statistics taken from 4 random images: with the default statistics (mean 0, variance 1) the random
    backbones' activations vanish, and ssdlite's detections do not depend on the image at all."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **MODELS[name]).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        m.train()
    with torch.no_grad():
        model(list(torch.rand(4, 3, 320, 320, generator=torch.Generator().manual_seed(2))))
    return model.eval()


def images() -> list:
    """Two different 320x320 images (seeded)."""
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 320, 320, generator=g) for _ in range(2)]


class _CountCalls(TorchFunctionMode):
    """Counts the torch function calls made inside it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def recording_steps(values: list, inputs: list, counter: _CountCalls | None = None):
    """Run the model in PyTorch, appending every step's output tensors to ``values`` and its input tensors to
    ``inputs``, in call order; ``counter`` counts the torch calls the steps make."""
    saved = []
    for step in detection.DETECTION_STEPS:
        owner = detection._resolve(step.owner)
        original = step.function()

        def wrapper(*args, _original=original, **kwargs):
            inputs.extend(t.clone() for t in tensor_leaves((args, kwargs)))
            if counter is None:
                out = _original(*args, **kwargs)
            else:
                with counter:
                    out = _original(*args, **kwargs)
            values.extend(t.clone() for t in tensor_leaves(out))
            return out

        saved.append((owner, step.name, owner.__dict__[step.name]))
        setattr(owner, step.name, wrapper)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def count(report: torch2x.ConversionReport) -> int:
    return sum(u.count for u in report.unsupported.values())


def mark_step_inputs(net: torch2x.ConvertedNetwork, step_inputs: list) -> list:
    """Make the network tensors the steps read outputs too (``step_input:<i>``); their names in order."""
    names = []
    for i, (itensor, _) in enumerate(step_inputs):
        if itensor is None or itensor.is_network_input:  # a constant, or another step's output
            names.append(None)
            continue
        if itensor.is_network_output:
            itensor = net.network.add_identity(itensor).get_output(0)
        itensor.name = f"step_input:{i}"
        net.network.mark_output(itensor)
        names.append(itensor.name)
    return names


def check(net: torch2x.ConvertedNetwork, model: torch.nn.Module, image: torch.Tensor, stand_ins: list,
          step_input_names: list) -> tuple:
    """(largest relative error of the interpreted network against the model on ``image``: its outputs and the
    tensors the steps read, number of detections, torch calls inside the steps)."""
    values: list = []
    inputs: list = []
    counter = _CountCalls()
    with torch.no_grad(), recording_steps(values, inputs, counter):
        reference = model([image])
    if len(values) != len(stand_ins):
        raise RuntimeError(f"the steps gave {len(values)} tensors on this image, {len(stand_ins)} when converting")
    feeds = {net.input_names[0]: image, **{name: v for (name, _, _), v in zip(stand_ins, values, strict=True)}}
    out = torch2x.interpret(net.network, feeds)
    outputs = unflatten(net.output_spec, [out[n] for n in net.output_names])
    pairs = list(zip(flatten(outputs)[0], flatten(reference)[0], strict=True))
    pairs += [(out[n], r) for n, r in zip(step_input_names, inputs, strict=True) if n is not None]
    worst = 0.0
    for o, r in pairs:
        if tuple(o.shape) != tuple(r.shape):
            raise RuntimeError(f"shape {tuple(o.shape)} != PyTorch's {tuple(r.shape)}")
        worst = max(worst, relative_error(o, r) if r.numel() else 0.0)
    return worst, reference[0]["boxes"].shape[0], counter.calls


def profile(stand_ins: list) -> dict:
    """One optimization profile for the step outputs: first dim 0..bound (a ``follows`` step: the bound
    of the step before it), opt the example's."""
    ranges, last = {}, None
    for name, value, bound in stand_ins:
        last = bound if bound is not None else last
        shape = tuple(value.shape)
        ranges[name] = ((0,) + shape[1:], shape, (max(last, shape[0]),) + shape[1:])
    return ranges


def run(name: str, do_check: bool, build: bool) -> None:
    model = make_model(name)
    first, second = images()
    start = time.perf_counter()
    today = torch2x.report(model, [[first]])
    seconds = time.perf_counter() - start
    ops = ", ".join(f"{u.op} x{u.count}" for u in today.unsupported.values())
    print(f"{name}\n  today: {seconds:.1f} s, {today.converted_calls} calls converted, "
          f"{count(today)} unsupported ({ops})")
    stand_ins: list = []
    start = time.perf_counter()
    step_inputs: list = []
    with detection.steps_as_inputs(stand_ins, step_inputs):
        net = torch2x.build_network(model, [[first]], strict=False)
    seconds = time.perf_counter() - start
    step_input_names = mark_step_inputs(net, step_inputs)
    steps = [u for u in net.report.unsupported.values()]
    bounds = ", ".join(f"{n}{list(v.shape)}<={b}" for n, v, b in stand_ins)
    steps_run = sorted({n.rsplit(":", 1)[0] for n, _, _ in stand_ins})  # each step runs once per image
    print(f"  steps: {seconds:.1f} s, {net.report.converted_calls} calls converted into {net.report.num_layers} "
          f"layers, {count(net.report)} unsupported outside the steps "
          f"({', '.join(f'{u.op} x{u.count}: {u.reason[:80]}' for u in steps) or 'none'})\n"
          f"  {len(steps_run)} calls in PyTorch: {', '.join(steps_run)}\n"
          f"  step outputs (network inputs): {bounds}")
    if build:
        net.profiles = [profile(stand_ins)]
        start = time.perf_counter()
        plan = net.build_engine(progress=False)
        print(f"  engine: {time.perf_counter() - start:.1f} s, {len(plan) / 2**20:.1f} MiB "
              f"(step outputs dynamic: 0..bound)")
    if do_check:
        for label, image in (("conversion image", first), ("second image", second)):
            err, found, calls = check(net, model, image, stand_ins, step_input_names)
            print(f"  check on the {label}: {found} detections, largest relative error {err:.2e} "
                  f"({calls} torch calls inside the steps)")


def run_hybrid(name: str) -> None:
    """A real hybrid conversion (``fallback=True``) with the steps registered: engines, calls in PyTorch,
    the interpreted program against the model on both images, engine builds, a state-dict round trip."""
    import io

    from torch2x.hybrid import HybridModule, run_program

    model = make_model(name)
    first, second = images()
    with torch.no_grad():
        model([first])  # MultiScaleRoIAlign sets its scales on its first call: both passes must see the same calls
    added = detection.register_targets()
    try:
        start = time.perf_counter()
        net = torch2x.build_network(model, [[first]], fallback=True)
        seconds = time.perf_counter() - start
        steps = [s["fn"].rsplit(".", 2)[-2] + "." + s["fn"].rsplit(".", 1)[-1]
                 for s in net.program["steps"] if "engine" not in s]
        print(f"{name}\n  hybrid: {seconds:.1f} s, {len(net.segments)} engines "
              f"({sum(s.network.num_layers for s in net.segments)} layers), {len(steps)} calls in PyTorch: "
              f"{', '.join(steps)}")
        for label, image in (("conversion image", first), ("second image", second)):
            with torch.no_grad():
                reference = model([image])
            out = net.interpret([image])
            worst = max((relative_error(o, r) if r.numel() else 0.0)
                        for o, r in zip(flatten(out)[0], flatten(reference)[0], strict=True))
            same = [tuple(o.shape) for o in flatten(out)[0]] == [tuple(r.shape) for r in flatten(reference)[0]]
            print(f"  interpreted on the {label}: {reference[0]['boxes'].shape[0]} detections, shapes "
                  f"{'equal' if same else 'DIFFER'}, largest relative error {worst:.2e}")
        start = time.perf_counter()
        engines = net.build_engines(progress=False)
        print(f"  engines built in {time.perf_counter() - start:.1f} s: "
              f"{', '.join(f'{len(e) / 2**20:.1f}' for e in engines)} MiB")
        buffer = io.BytesIO()
        torch.save(net.to_module(engines).state_dict(), buffer)
        buffer.seek(0)
        restored = HybridModule()
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        with torch.no_grad():
            reference = model([second])
        out = run_program(restored.program, restored.constants, ([second],),
                          lambda k, ts: net.segments[k].interpret(*ts), restored._targets)
        worst = max((relative_error(o, r) if r.numel() else 0.0)
                    for o, r in zip(flatten(out)[0], flatten(reference)[0], strict=True))
        print(f"  state dict: {buffer.getbuffer().nbytes / 2**20:.1f} MiB, reloaded program on the second image: "
              f"largest relative error {worst:.2e}")
    finally:
        detection.unregister_targets(added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--no-check", action="store_true", help="skip the interpreter checks")
    parser.add_argument("--no-build", action="store_true", help="skip the engine builds")
    parser.add_argument("--hybrid", action="store_true", help="convert with fallback=True and the steps registered")
    args = parser.parse_args()
    for name in args.models:
        if args.hybrid:
            run_hybrid(name)
        else:
            run(name, not args.no_check, not args.no_build)


if __name__ == "__main__":
    main()
