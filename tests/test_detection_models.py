"""torchvision's detection models with hybrid execution: backbone, FPN and heads as TensorRT engines, the
data-dependent post-processing (score thresholds, NMS, per-detection loops) in PyTorch.

Each model (eval mode, random weights, batch-norm statistics from one batch; tests/harness.py) is converted
once on one 320x320 image and interpreted on that image and on a second one that keeps another number of
detections: boxes, scores, labels (and masks, keypoints) equal PyTorch's within 1e-4 relative error. Among
detections of equal score (random heads give many) the order is not defined, so both sides are put in one
canonical order first. The engines build and the state dict reloads with ``weights_only=True``."""
import io

import pytest
import torch

import torch2x
from harness import DETECTION_IMAGES, DETECTION_OPTIONS, detection_image, detection_model, relative_error
from torch2x.hybrid import HybridModule, HybridNetwork

pytestmark = pytest.mark.slow


def _canonical(detections: dict) -> dict:
    """The detections sorted by score (rounded: ties at float precision), then label, then box corners."""
    keys = [detections["boxes"][:, k] for k in (3, 2, 1, 0)] + [detections["labels"].double(),
                                                                 -(detections["scores"].double() * 1e5).round()]
    order = torch.arange(detections["scores"].shape[0])
    for key in keys:  # least significant first; stable sorts keep the earlier keys' order among ties
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: v[order] for k, v in detections.items()}


def _assert_same_detections(out: dict, ref: dict) -> None:
    assert set(out) == set(ref)
    out, ref = _canonical(out), _canonical(ref)
    for key in ref:
        assert out[key].shape == ref[key].shape, f"{key}: {tuple(out[key].shape)} vs PyTorch's {tuple(ref[key].shape)}"
        if ref[key].is_floating_point():
            error = relative_error(out[key], ref[key])
            assert error <= 1e-4, f"{key}: relative error {error}"
        else:
            assert torch.equal(out[key], ref[key]), key


@pytest.mark.parametrize("name", list(DETECTION_OPTIONS))
def test_detection_model_runs_its_network_as_engines(name):
    model = detection_model(name)
    seeds = DETECTION_IMAGES[name]
    net = torch2x.build_network(model, [[detection_image(seeds[0])]], fallback=True)
    assert isinstance(net, HybridNetwork)
    counts = []
    for seed in seeds:
        image = detection_image(seed)
        with torch.no_grad():
            reference = model([image.clone()])
        out = net.interpret([image.clone()])
        assert len(out) == 1
        _assert_same_detections(out[0], reference[0])
        counts.append(reference[0]["scores"].shape[0])
    assert counts[0] != counts[1], "the second image should keep another number of detections"
    # the backbone, FPN and heads are engines: most calls convert, and the first engine takes the image
    assert net.report.converted_calls > 5 * net.torch_calls
    first = next(s for s in net.program["steps"] if "engine" in s)
    assert first["inputs"] == [0] and net.segments[first["engine"]].report.converted_calls > 200
    engines = net.build_engines(False)
    buffer = io.BytesIO()
    torch.save(net.to_module(engines).state_dict(), buffer)
    buffer.seek(0)
    restored = HybridModule()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.program == net.program and [m.engine_bytes for m in restored.engines] == engines
