"""torchvision detection parts that run after a data-dependent step, with a dynamic number of boxes K, and the
table of steps (plugins/detection.py) a hybrid conversion runs in PyTorch."""
import inspect
from collections import OrderedDict

import pytest
import torch
import torchvision
import torchvision.models.detection.transform as T
from harness import check_sizes
from torchvision.models.detection import roi_heads
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

import torch2x
from torch2x.plugins import detection


def _boxes(k: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * size * 0.8
    wh = torch.rand(k, 2, generator=g) * size * 0.5 + 1
    return torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)


class BoxBranch(torch.nn.Module):
    """Faster R-CNN's RoI box branch on four FPN levels of a 256x256 image: pooler, TwoMLPHead, predictor."""

    def __init__(self):
        super().__init__()
        self.names = ["0", "1", "2", "3"]
        self.pool = torchvision.ops.MultiScaleRoIAlign(self.names, 7, 2)
        self.head = TwoMLPHead(8 * 7 * 7, 32)
        self.predictor = FastRCNNPredictor(32, 5)

    def forward(self, *args):
        features = OrderedDict(zip(self.names, args[:-1], strict=True))
        return self.predictor(self.head(self.pool(features, [args[-1]], [(256, 256)])))


def test_box_branch_dynamic_k():
    torch.manual_seed(0)
    model = BoxBranch().eval()
    features = [torch.randn(1, 8, 64 >> i, 64 >> i) for i in range(4)]
    model(*features, _boxes(2))  # MultiScaleRoIAlign infers its scales on the first call
    check_sizes(model, lambda k: features + [_boxes(k, seed=k)], [6, 1, 17, 0], {"input_4": {0: (0, 6, 20)}})


class MaskBranch(torch.nn.Module):
    """Mask R-CNN after the detections: mask head, predictor (ConvTranspose2d), the per-label mask pick."""

    def __init__(self):
        super().__init__()
        self.head = MaskRCNNHeads(8, [16, 16], 1)
        self.predictor = MaskRCNNPredictor(16, 16, 5)

    def forward(self, pooled, labels):
        return roi_heads.maskrcnn_inference(self.predictor(self.head(pooled)), [labels])


def test_mask_branch_dynamic_k():
    torch.manual_seed(0)
    check_sizes(MaskBranch(), lambda k: [torch.randn(k, 8, 14, 14), torch.randint(0, 5, (k,))], [4, 1, 7, 0],
                {"input_0": {0: (0, 4, 10)}, "input_1": {0: (0, 4, 10)}})


def test_keypoint_branch_dynamic_k():
    torch.manual_seed(0)
    model = torch.nn.Sequential(KeypointRCNNHeads(8, [16, 16]), KeypointRCNNPredictor(16, 17))
    check_sizes(model, lambda k: [torch.randn(k, 8, 14, 14)], [4, 1, 7], {"input_0": {0: (1, 4, 10)}})


def test_resize_boxes_and_keypoints_dynamic_k():
    """transform.postprocess's resizes (keypoints through resize_keypoints' converter: torchvision writes
    through views, which a dynamic K cannot follow)."""
    def resize(boxes, keypoints):
        return T.resize_boxes(boxes, [320, 320], [480, 600]), T.resize_keypoints(keypoints, [320, 320], [480, 600])

    check_sizes(resize, lambda k: [_boxes(k, 320, seed=k), torch.rand(k, 17, 3) * 320], [4, 1, 9, 0],
                {"input_0": {0: (0, 4, 10)}, "input_1": {0: (0, 4, 10)}})


# ----------------------------------------------------------------------------- the steps


def _rcnn(size: int = 320):
    torch.manual_seed(0)
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0105, min_size=size, max_size=size).eval()


def test_steps_name_real_torchvision_functions():
    for step in detection.DETECTION_STEPS:
        fn = step.function()
        assert callable(fn) and fn.__name__ == step.name, step.qualname
        assert (step.bound is None) != (step.follows is None), step.qualname
        if step.follows is not None:
            assert step.follows in inspect.signature(fn).parameters, step.qualname


def test_minimal_self_reproduces_the_methods():
    """RPN.filter_proposals and RoIHeads.postprocess_detections on a self rebuilt from plain data give
    the module's results, and the bounds hold."""
    model = _rcnn()
    torch.manual_seed(1)
    rpn_step = detection.STEPS_BY_QUALNAME["torchvision.models.detection.rpn.RegionProposalNetwork.filter_proposals"]
    levels = [300, 75]
    proposals = _boxes(375, 320).unsqueeze(0)
    objectness = torch.randn(375, 1)
    args = (proposals, objectness, [(320, 320)], levels)
    state = detection.self_state(rpn_step, model.rpn)
    assert state["_post_nms_top_n"] == {"training": 2000, "testing": 150}
    plain = rpn_step.function()(detection.minimal_self(rpn_step, state), *args)
    real = model.rpn.filter_proposals(*args)
    torch.testing.assert_close(plain, real, rtol=0, atol=0)
    assert 0 < real[0][0].shape[0] <= rpn_step.output_bound((model.rpn,) + args, {}) == 150

    heads_step = detection.STEPS_BY_QUALNAME["torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections"]
    logits, deltas = torch.randn(40, 91) * 3, torch.randn(40, 91 * 4)
    args = (logits, deltas, [_boxes(40, 320)], [(320, 320)])
    state = detection.self_state(heads_step, model.roi_heads)
    assert state["box_coder.weights"] == (10.0, 10.0, 5.0, 5.0)
    plain = heads_step.function()(detection.minimal_self(heads_step, state), *args)
    real = model.roi_heads.postprocess_detections(*args)
    torch.testing.assert_close(plain, real, rtol=0, atol=0)
    assert 0 < real[0][0].shape[0] <= heads_step.output_bound((model.roi_heads,) + args, {}) == 100


def test_minimal_self_refuses_other_classes():
    step = detection.STEPS_BY_QUALNAME["torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections"]
    state = detection.self_state(step, _rcnn().roi_heads)
    state["box_coder.__class__"] = "os.system"
    with pytest.raises(ValueError, match=r"refusing to build box_coder of class 'os.system'"):
        detection.minimal_self(step, state)


def test_everything_outside_the_steps_converts():
    """fasterrcnn_mobilenet_v3_large_320_fpn with its two steps standing in as network inputs (dynamic
    number of boxes): nothing else is unsupported, and the interpreted network gives the model's boxes,
    scores and labels and the tensors the steps read (RoI head logits and deltas) from the steps' outputs."""
    model = _rcnn(160)  # (a smaller image: the same parts, a quarter of the work)
    image = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(1))
    stand_ins, step_inputs = [], []
    added_before = len(torch2x.tracer._EXTRA_TARGETS)
    with detection.steps_as_inputs(stand_ins, step_inputs):
        net = torch2x.build_network(model, [[image]], strict=False)
    assert len(torch2x.tracer._EXTRA_TARGETS) == added_before  # the targets are gone again
    assert net.report.ok, str(net.report)
    assert [(name.split(":")[0], bound) for name, _, bound in stand_ins] == (
        [("RegionProposalNetwork.filter_proposals", 150)] * 2 + [("RoIHeads.postprocess_detections", 100)] * 3)
    # the RoI head's class logits and box deltas, the first two tensors postprocess_detections reads
    reads = [(itensor, value) for itensor, value in step_inputs if itensor is not None and not itensor.is_network_input]
    for i, (itensor, _) in enumerate(reads[-2:]):
        itensor.name = f"read_{i}"
        net.network.mark_output(itensor)
    with torch.no_grad():
        reference = model([image])[0]
    assert reference["boxes"].shape[0] > 0
    feeds = {"input_0": image, **{name: value for name, value, _ in stand_ins}}
    out = torch2x.interpret(net.network, feeds)
    for i, (_, value) in enumerate(reads[-2:]):
        torch.testing.assert_close(out[f"read_{i}"], value, rtol=1e-4, atol=1e-5)
    for key, name in zip(("boxes", "labels", "scores"), net.output_names, strict=True):
        torch.testing.assert_close(out[name], reference[key], rtol=1e-4, atol=1e-5)


def test_a_step_is_one_unsupported_call():
    """Registered, a step is intercepted whole: a plain conversion reports it once, not the ops inside it."""
    model = _rcnn(160)
    added = detection.register_targets()
    try:
        report = torch2x.report(model, [[torch.rand(3, 160, 160)]])
    finally:
        detection.unregister_targets(added)
    assert sorted(report.unsupported) == ["torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections",
                                          "torchvision.models.detection.rpn.RegionProposalNetwork.filter_proposals"]
    assert report.unsupported["torchvision.models.detection.rpn.RegionProposalNetwork.filter_proposals"].reason == (
        "no converter")


class _PostProcess(torch.nn.Module):
    """A linear head, then RoIHeads.postprocess_detections (a method step: its self is saved as plain data),
    then arithmetic on the detections (an engine after the step, with a dynamic number of boxes)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 6 + 6 * 4)
        self.heads = roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, score_thresh=0.5,
                                        nms_thresh=0.5, detections_per_img=20)

    def forward(self, features, proposals):
        y = self.fc(features)
        boxes, scores, labels = self.heads.postprocess_detections(y[:, :6] * 3, y[:, 6:], [proposals], [(64, 64)])
        return boxes[0] * 2 + 1, scores[0].sqrt(), labels[0]


def test_hybrid_method_step_saves_self_as_plain_data():
    """With the steps registered, a hybrid conversion runs RoIHeads.postprocess_detections in PyTorch, bounds
    its outputs by detections_per_img, and its state dict (self as plain data) reloads with weights_only=True
    and gives the same results on inputs with another number of detections."""
    from harness import check_hybrid, torch_steps

    torch.manual_seed(0)
    model = _PostProcess().eval()
    inputs = [(torch.randn(12, 16), _boxes(12, 64, seed=s)) for s in (1, 2, 3)]
    counts = {int(model(*x)[0].shape[0]) for x in inputs}
    assert len(counts) > 1 and 0 < min(counts) and max(counts) <= 20, counts
    added = detection.register_targets()
    try:
        net = check_hybrid(model, *inputs[0], others=tuple(inputs[1:]))
    finally:
        detection.unregister_targets(added)
    assert torch_steps(net) == ["torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections"]
    after = net.segments[-1].profiles[0]
    assert {(lo[0], hi[0]) for lo, _, hi in after.values()} == {(0, 20)}, after  # boxes and scores: 0..20
