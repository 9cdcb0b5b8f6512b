"""The converter test harness: convert with the real builder, interpret, compare with PyTorch, build the engine."""
from __future__ import annotations

import re
from typing import Any, Union
from collections.abc import Callable

import torch

import torch2x
from torch2x.structure import flatten


class _Wrap(torch.nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (absolute error when ref is all zeros)."""
    diff = (out.double() - ref.double()).norm().item()
    scale = ref.double().norm().item()
    return diff / scale if scale > 0 else diff


def compare(outputs: Any, reference: Any, rtol: float) -> None:
    """Every output has the reference's structure, shape and dtype, and is within ``rtol`` relative error."""
    outs, out_spec = flatten(outputs)
    refs, ref_spec = flatten(reference)
    assert out_spec == ref_spec, f"output structure {out_spec} != PyTorch's {ref_spec}"
    for i, (o, r) in enumerate(zip(outs, refs)):
        assert tuple(o.shape) == tuple(r.shape), f"output {i}: shape {tuple(o.shape)} != PyTorch's {tuple(r.shape)}"
        assert o.dtype == r.dtype, f"output {i}: dtype {o.dtype} != PyTorch's {r.dtype}"
        if r.is_floating_point():
            assert torch.isfinite(o).all() == torch.isfinite(r).all(), f"output {i}: non-finite values differ"
            finite = torch.isfinite(r)
            err = relative_error(o[finite], r[finite])
            assert err <= rtol, f"output {i}: relative error {err:.3g} > {rtol:g}"
        else:
            mismatches = (o != r).sum().item()
            assert mismatches == 0, f"output {i}: {mismatches} of {r.numel()} elements differ"


def check_module(model: Union[torch.nn.Module, Callable], *inputs: Any, rtol: float = 1e-4,
                 build: bool = True, **options: Any) -> torch2x.ConvertedNetwork:
    """Convert ``model(*inputs)``, check the interpreted network against PyTorch within ``rtol``
    (float outputs; others exactly) and that TensorRT builds the engine. Returns the network."""
    module = model if isinstance(model, torch.nn.Module) else _Wrap(model)
    module.eval()
    with torch.no_grad():
        reference = module(*[_clone(x) for x in inputs])
    converted = torch2x.build_network(module, [_clone(x) for x in inputs], **options)
    assert converted.report.ok, str(converted.report)
    # a model whose calls all escaped the tracer would still match: its outputs are constants
    assert converted.report.converted_calls > 0, "no call was converted"
    compare(converted.interpret(*[_clone(x) for x in inputs]), reference, rtol)
    if build:
        engine = converted.build_engine()
        assert len(engine) > 0
    return converted


def assert_reported(reason: str, fn: Callable, *inputs: Any) -> None:
    """The conversion of ``fn(*inputs)`` reports exactly one unsupported call, whose reason matches ``reason``."""
    reasons = [u.reason for u in torch2x.report(fn, list(inputs)).unsupported.values()]
    assert len(reasons) == 1 and re.search(reason, reasons[0]), reasons


def random_tensor(shape: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random values of ``dtype``: normal floats, ints in [-50, 50), random bools."""
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    return torch.randint(-50, 50, shape, dtype=dtype)


class LastHiddenState(torch.nn.Module):
    """A transformers model with one input, ``input_ids`` (batch, seq), and one output, its
    ``last_hidden_state``: the form conversions and the ONNX route both take. Module paths start with
    ``model.``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


def torchvision_model(name: str, image_size: int) -> torch.nn.Module:
    """A torchvision model with random weights and batch-norm statistics taken from one batch of
    ``image_size`` images, as in a trained model: with the default running stats (mean 0, var 1)
    activations of deep random nets shrink below float16's range."""
    import torchvision

    torch.manual_seed(0)
    segmentation = name in torchvision.models.list_models(module=torchvision.models.segmentation)
    model = torchvision.models.get_model(name, weights=None, **({"weights_backbone": None} if segmentation else {}))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, image_size, image_size))
    return model.eval()


def _clone(x: Any) -> Any:
    tensors, spec = flatten(x)
    from torch2x.structure import unflatten

    return unflatten(spec, [t.clone() for t in tensors])


def check_sizes(model: Union[torch.nn.Module, Callable], make_inputs: Callable[[int], list], sizes: list,
                dynamic_shapes: Any, rtol: float = 1e-4) -> torch2x.ConvertedNetwork:
    """Convert once with ``dynamic_shapes`` from ``make_inputs(sizes[0])``, then check the interpreted network
    against PyTorch on ``make_inputs(n)`` for every ``n`` in ``sizes`` (float outputs within ``rtol``, others
    exactly), and that TensorRT builds the engine with those profiles. Returns the network."""
    module = model if isinstance(model, torch.nn.Module) else _Wrap(model)
    module.eval()
    converted = torch2x.build_network(module, make_inputs(sizes[0]), dynamic_shapes=dynamic_shapes)
    assert converted.report.ok, str(converted.report)
    for n in sizes:
        inputs = make_inputs(n)
        with torch.no_grad():
            reference = module(*[_clone(x) for x in inputs])
        try:
            compare(converted.interpret(*[_clone(x) for x in inputs]), reference, rtol)
        except AssertionError as exc:
            raise AssertionError(f"at size {n}: {exc}") from None
    assert len(converted.build_engine()) > 0
    return converted


def check_hybrid(model: Union[torch.nn.Module, Callable], *inputs: Any, others: tuple = (), rtol: float = 1e-4,
                 **options: Any) -> Any:
    """Convert ``model(*inputs)`` with ``fallback=True``; the interpreted hybrid program matches PyTorch on
    ``inputs`` and on each input tuple of ``others``; every segment's engine builds; the HybridModule's
    state dict loads with ``weights_only=True`` into ``HybridModule()`` with the same program, constants and
    engines, and the loaded program (segments interpreted in place of the engines) matches PyTorch too.
    Returns the HybridNetwork."""
    import io

    from torch2x.hybrid import HybridModule, HybridNetwork, run_program

    module = model if isinstance(model, torch.nn.Module) else _Wrap(model)
    module.eval()
    net = torch2x.build_network(module, [_clone(x) for x in inputs], fallback=True, **options)
    assert isinstance(net, HybridNetwork), "no call runs in PyTorch: expected a hybrid network"
    references = []
    for xs in (inputs, *others):
        with torch.no_grad():
            references.append(module(*[_clone(x) for x in xs]))
        compare(net.interpret(*[_clone(x) for x in xs]), references[-1], rtol)
    engines = net.build_engines()
    assert all(len(e) > 0 for e in engines)
    buffer = io.BytesIO()
    torch.save(net.to_module(engines).state_dict(), buffer)
    buffer.seek(0)
    restored = HybridModule()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.program == net.program
    assert [m.engine_bytes for m in restored.engines] == engines
    assert len(restored.constants) == len(net.constants)
    assert all(torch.equal(a, b) for a, b in zip(restored.constants, net.constants))
    for xs, reference in zip((inputs, *others), references):
        out = run_program(restored.program, restored.constants, tuple(_clone(x) for x in xs),
                          lambda k, ts: net.segments[k].interpret(*ts), restored._targets)
        compare(out, reference, rtol)
    return net


def torch_steps(net: Any) -> list:
    """The function names of a hybrid program's PyTorch steps, in run order."""
    return [s["fn"] for s in net.program["steps"] if "engine" not in s]


DETECTION_OPTIONS = {  # score thresholds under which the random-weight heads keep some boxes; all at 320x320
    "fasterrcnn_mobilenet_v3_large_320_fpn": {},
    "retinanet_resnet50_fpn": {"min_size": 320, "max_size": 320},
    "ssdlite320_mobilenet_v3_large": {"score_thresh": 0.02},
    "fcos_resnet50_fpn": {"score_thresh": 0.9, "min_size": 320, "max_size": 320},
    "maskrcnn_resnet50_fpn": {"box_score_thresh": 0.7, "min_size": 320, "max_size": 320},
    "keypointrcnn_resnet50_fpn": {"box_score_thresh": 0.999, "min_size": 320, "max_size": 320},
}
# The conversion image first, then one keeping another number of detections (ssdlite keeps none on image 0).
DETECTION_IMAGES = {name: (1, 0) if name.startswith("ssdlite") else (0, 1) for name in DETECTION_OPTIONS}


def detection_image(seed: int, size: int = 320) -> torch.Tensor:
    """A ``[3, size, size]`` image of a few flat rectangles on a gradient: edges and regions for random
    filters to respond to (uniform noise gives every box the same features, so scores tie)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([x, y, x * y]) * 0.5
    for _ in range(6):
        x0, y0 = torch.randint(0, size - 60, (2,), generator=g).tolist()
        w, h = torch.randint(20, size // 3, (2,), generator=g).tolist()
        image[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    return image


def detection_model(name: str) -> torch.nn.Module:
    """A torchvision detection model in eval mode with random weights (fixed seed), its backbone's batch-norm
    statistics taken from one batch of normalized images as in a trained model (with the default ones,
    activations vanish or explode and every score ties)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **DETECTION_OPTIONS[name])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.backbone.train()(torch.stack([model.transform.normalize(detection_image(s)) for s in range(10, 14)]))
        for path, m in model.named_modules():  # scores spread out as a trained head's do (init: std 0.01)
            if path.endswith(("cls_logits", "cls_score")) and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.normal_(m.weight, std=CLASSIFIER_STD)
    return model.eval()


CLASSIFIER_STD = 0.1
