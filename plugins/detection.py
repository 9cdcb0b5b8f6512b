"""torchvision detection models: the data-dependent post-processing steps that run whole in PyTorch.

Everything in torchvision's detection models whose sizes depend on tensor values (score thresholds,
NMS, top-k of a data-dependent count, per-detection Python loops reading ``.item()``) sits inside the
functions and methods of :data:`DETECTION_STEPS`. A hybrid conversion runs each of them as one PyTorch
step (they have no converter); everything around them (transform, backbone, FPN, heads, anchors, box
decoding of the RPN, RoI pooling and the box/mask/keypoint heads, box and keypoint resizing) converts.
Outputs of a step whose first dim is a number of boxes reach the next engine as a dynamic dim (-1):

- ``bound`` steps create that number: every data-dependent output of one image (boxes, scores,
  labels) has the same first dim, at most ``step.bound(self, arguments)``, an int read from the module's
  attributes and the call's static arguments (not from the example's values);
- ``follows`` steps keep the number of boxes they are given: their outputs' first dims equal the first
  dim of the argument ``follows`` names (``masks``, ``x``).

A method reads a few plain attributes of ``self`` (``reads``: dotted names reach into ``box_coder``) and
calls some of its other methods (``calls``); :func:`self_state` extracts them as plain data and
:func:`minimal_self` rebuilds an object the unpatched method runs on, so a saved hybrid module needs no
pickled ``nn.Module``. Example::

    step = STEPS_BY_QUALNAME["torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections"]
    state = self_state(step, model.roi_heads)   # {"score_thresh": 0.05, ..., "box_coder.weights": (10.0, ...)}
    boxes, scores, labels = step.function()(minimal_self(step, state), logits, deltas, proposals, sizes)
"""
from __future__ import annotations

import functools
import importlib
import inspect
import types
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x import steps as steps_registry
from torch2x.tracer import register_target

_DETECTION = "torchvision.models.detection"


class DetectionStep(NamedTuple):
    """One torchvision function or method that runs whole in PyTorch in a hybrid conversion.

    ``owner`` is the class (by dotted name) for a method, or the module whose global the caller looks
    the function up in; ``name`` the attribute; ``qualname`` the name the tracer reports it under.
    ``bound(self, arguments)`` (``arguments``: the call's arguments by parameter name, ``self`` excluded;
    ``self`` is None for functions) bounds the first dim of every data-dependent output, or is None when
    the outputs' first dims follow the argument named by ``follows``. ``reads`` and ``calls``: the plain
    attributes of ``self`` the method reads (dotted for attributes of sub-objects) and its own methods it
    calls.
    """

    owner: str
    name: str
    qualname: str
    bound: Callable[[Any, dict], int] | None
    reads: tuple = ()
    calls: tuple = ()
    follows: str | None = None

    def function(self) -> Callable:
        """The unpatched function (for a method: the function on the class, taking ``self`` first)."""
        obj = _resolve(self.owner)
        value = inspect.getattr_static(obj, self.name)
        return getattr(value, "__torch2x_original__", value)

    def arguments(self, args: tuple, kwargs: dict) -> tuple:
        """(self or None, the other arguments by parameter name with defaults) of a call of this step."""
        bound = inspect.signature(self.function()).bind(*args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
        owner = named.pop("self", None) if inspect.isclass(_resolve(self.owner)) else None
        return owner, named

    def output_bound(self, args: tuple, kwargs: dict) -> int | None:
        """The upper bound of the data-dependent first dims for a call with ``args`` (self first for a
        method), or None for a ``follows`` step."""
        if self.bound is None:
            return None
        owner, named = self.arguments(args, kwargs)
        return int(self.bound(owner, named))


def _resolve(dotted: str) -> Any:
    """A module or a class (``package.module.Class``) by its dotted name."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, attr = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def _rpn_bound(rpn: Any, a: dict) -> int:
    # _get_top_n_idx keeps min(pre_nms_top_n, anchors) per level; NMS and the final slice keep at most post_nms_top_n
    candidates = sum(min(int(n), rpn.pre_nms_top_n()) for n in a["num_anchors_per_level"])
    return min(rpn.post_nms_top_n(), candidates)


def _per_level_bound(head: Any, a: dict) -> int:
    # RetinaNet/FCOS: at most topk_candidates per level before NMS, detections_per_img after it
    levels = len(a["anchors"][0])
    return min(head.detections_per_img, levels * head.topk_candidates)


def _ssd_bound(ssd: Any, a: dict) -> int:
    # SSD: at most topk_candidates per foreground class before NMS, detections_per_img after it
    classes = a["head_outputs"]["cls_logits"].shape[-1]
    return min(ssd.detections_per_img, (classes - 1) * ssd.topk_candidates)


_BOX_CODER = ("box_coder.weights", "box_coder.bbox_xform_clip")
_DETECTOR_READS = ("score_thresh", "topk_candidates", "nms_thresh", "detections_per_img")

DETECTION_STEPS: list = [
    DetectionStep(
        f"{_DETECTION}.rpn.RegionProposalNetwork", "filter_proposals",
        f"{_DETECTION}.rpn.RegionProposalNetwork.filter_proposals",
        _rpn_bound,
        reads=("training", "_pre_nms_top_n", "_post_nms_top_n", "min_size", "score_thresh", "nms_thresh"),
        calls=("_get_top_n_idx", "pre_nms_top_n", "post_nms_top_n")),
    DetectionStep(
        f"{_DETECTION}.roi_heads.RoIHeads", "postprocess_detections",
        f"{_DETECTION}.roi_heads.RoIHeads.postprocess_detections",
        lambda heads, a: heads.detections_per_img,
        reads=("score_thresh", "nms_thresh", "detections_per_img") + _BOX_CODER),
    DetectionStep(
        f"{_DETECTION}.retinanet.RetinaNet", "postprocess_detections",
        f"{_DETECTION}.retinanet.RetinaNet.postprocess_detections",
        _per_level_bound, reads=_DETECTOR_READS + _BOX_CODER),
    DetectionStep(
        f"{_DETECTION}.fcos.FCOS", "postprocess_detections",
        f"{_DETECTION}.fcos.FCOS.postprocess_detections",
        _per_level_bound, reads=_DETECTOR_READS + ("box_coder.normalize_by_size",)),
    DetectionStep(
        f"{_DETECTION}.ssd.SSD", "postprocess_detections",
        f"{_DETECTION}.ssd.SSD.postprocess_detections",
        _ssd_bound, reads=_DETECTOR_READS + _BOX_CODER),
    # Mask R-CNN's paste: each mask resized to its box's integer size and written into the image;
    # GeneralizedRCNNTransform.postprocess looks it up in transform.py's globals
    DetectionStep(
        f"{_DETECTION}.transform", "paste_masks_in_image",
        f"{_DETECTION}.roi_heads.paste_masks_in_image", None, follows="masks"),
    # Keypoint R-CNN: per box, the heatmaps resized to the box's ceil'd size (read with .item()) and argmax'd
    DetectionStep(
        f"{_DETECTION}.roi_heads", "keypointrcnn_inference",
        f"{_DETECTION}.roi_heads.keypointrcnn_inference", None, follows="x"),
]
"""The smallest set of torchvision (0.29) functions and methods that holds all data-dependent
computation of the six detection models fasterrcnn*, maskrcnn*, keypointrcnn* (RPN and RoI heads),
retinanet*, fcos* and ssd*/ssdlite*, in eval mode."""

STEPS_BY_QUALNAME: dict = {step.qualname: step for step in DETECTION_STEPS}

# The only classes minimal_self builds sub-objects of (box coders are plain Python classes).
_SUB_OBJECT_CLASSES = {
    f"{_DETECTION}._utils.BoxCoder",
    f"{_DETECTION}._utils.BoxLinearCoder",
}


def register_targets() -> list:
    """Make the tracer intercept every step of :data:`DETECTION_STEPS` as one call; returns the entries it
    added to the tracer's targets (none when they were there already), for :func:`unregister_targets`.

    The steps have no converter: a plain conversion reports each as one unsupported call, a hybrid
    conversion (``fallback=True``) runs it in PyTorch, its outputs' first dims bounded by the step's rule and
    a method's ``self`` saved as plain data. A process that loads a saved hybrid module calls this first."""
    from torch2x import tracer

    _hybrid_hooks()
    known = {(id(owner), name) for owner, name, _ in tracer._EXTRA_TARGETS}
    added = []
    for step in DETECTION_STEPS:
        owner = _resolve(step.owner)
        # a class is patched as an object; a module by name (skipped while it is not imported)
        target = owner if inspect.isclass(owner) else step.owner
        if (id(target), step.name) not in known:
            register_target(target, step.name, step.qualname)
            added.append(tracer._EXTRA_TARGETS[-1])
    return added


def _hybrid_hooks() -> None:
    """Tell the hybrid core how to save each method step's ``self`` (plain data, rebuilt on load by
    :func:`minimal_self`) and how to bound each step's outputs (:meth:`DetectionStep.output_bound`)."""
    from torch2x import steps

    for step in DETECTION_STEPS:
        steps.register_whole_step(step.qualname, "data-dependent detection post-processing, run whole")
        if step.bound is not None:
            steps.register_step_bound(step.qualname, step.output_bound)
        owner = _resolve_or_none(step.owner)
        if inspect.isclass(owner):
            steps.register_plain_object(owner, f"{step.qualname} self", functools.partial(self_state, step),
                                        functools.partial(minimal_self, step))


def _resolve_or_none(dotted: str) -> Any:
    try:
        return _resolve(dotted)
    except (ImportError, AttributeError):
        return None


def unregister_targets(added: list) -> None:
    """Undo :func:`register_targets` (the entries it returned): the tracer traces into the steps again."""
    from torch2x import tracer

    for entry in added:
        tracer._EXTRA_TARGETS.remove(entry)


def self_state(step: DetectionStep, owner: Any) -> dict:
    """The attributes ``step`` reads from ``owner`` (its ``self``) as plain data: dotted names for
    attributes of sub-objects, plus ``"<sub>.__class__"`` naming each sub-object's class. Example::

        self_state(STEPS_BY_QUALNAME[q], model.roi_heads)["detections_per_img"]  # 100
    """
    state: dict = {}
    for name in step.reads:
        obj = owner
        *path, attr = name.split(".")
        for part in path:
            obj = getattr(obj, part)
        if path:
            state[".".join(path) + ".__class__"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
        value = getattr(obj, attr)
        state[name] = tuple(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
    return state


def minimal_self(step: DetectionStep, state: dict) -> Any:
    """An object the unpatched method of ``step`` runs on: the attributes of ``state`` (from
    :func:`self_state`) and the methods ``step.calls`` bound to it. Sub-objects are built only from
    the box coder classes; another class name is refused."""
    cls = _resolve(step.owner)
    obj = types.SimpleNamespace()
    subs: dict = {}
    for key, value in state.items():
        if key.endswith(".__class__"):
            if value not in _SUB_OBJECT_CLASSES:
                raise ValueError(f"{step.qualname}: refusing to build {key[:-len('.__class__')]} of class {value!r} "
                                 f"(allowed: {sorted(_SUB_OBJECT_CLASSES)})")
            sub_cls = _resolve(value)
            subs[key[:-len(".__class__")]] = sub_cls.__new__(sub_cls)
    for name in step.reads:
        *path, attr = name.split(".")
        target = subs[".".join(path)] if path else obj
        setattr(target, attr, state[name])
    for path, sub in subs.items():
        setattr(obj, path, sub)
    for name in step.calls:
        setattr(obj, name, types.MethodType(inspect.getattr_static(cls, name), obj))
    return obj


@contextmanager
def steps_as_inputs(stand_ins: list, step_inputs: list | None = None) -> Iterator[None]:
    """While converting, every step of :data:`DETECTION_STEPS` becomes new network inputs, one per output
    tensor, with a dynamic first dim (-1): so the parts after the steps convert as they will in a hybrid
    conversion, without one. ``stand_ins`` receives ``(input name, PyTorch value, first-dim bound or None)``
    per new input; ``step_inputs`` (when given) ``(network tensor or None, PyTorch value)`` per tensor a step
    reads (None: not computed by the network), for marking them as outputs. For checks and measurements only:
    the steps' outputs do not depend on their inputs in this network; feed the values PyTorch's steps give.
    Example::

        stand_ins = []
        with steps_as_inputs(stand_ins):
            net = torch2x.build_network(model, [[image]], strict=False)
    """
    from torch2x.dtypes import to_trt
    from torch2x.registry import CONVERTERS, Converter
    from torch2x.tracer import tensor_leaves

    def stand_in(step: DetectionStep) -> Callable:
        def convert(ctx: Any, call: Any) -> list:
            bound = step.output_bound(call.args, call.kwargs)
            if step_inputs is not None:
                step_inputs.extend((ctx.trt(t) if ctx.has(t) else None, t.clone())
                                   for t in tensor_leaves((call.args, call.kwargs)))
            short = step.qualname.rsplit(".", 2)
            out = []
            for t in tensor_leaves(call.output):
                name = f"{short[-2]}.{short[-1]}:{len(stand_ins)}"
                shape = tuple(-1 if d == 0 else int(s) for d, s in enumerate(t.shape))
                itensor = ctx.raw_network.add_input(name, to_trt(t.dtype), shape)
                stand_ins.append((name, t.clone(), bound))
                ctx._noted(itensor, tuple(t.shape))
                out.append(ctx.cast(itensor, ctx.dtype_for(t.dtype)))
            return out

        return convert

    added = register_targets()
    saved = {s.qualname: CONVERTERS.get(s.qualname) for s in DETECTION_STEPS}
    for step in DETECTION_STEPS:
        CONVERTERS[step.qualname] = Converter(step.qualname, stand_in(step), inspect.signature(step.function()), False)
    try:
        yield
    finally:
        for name, conv in saved.items():
            if conv is None:
                CONVERTERS.pop(name, None)
            else:
                CONVERTERS[name] = conv
        unregister_targets(added)


@converter("torchvision.models.detection.transform.resize_keypoints", signature="keypoints, original_size, new_size")
def resize_keypoints(ctx: Any, call: Any) -> Any:
    """torchvision scales x and y in place through views (``resized[..., 0] *= ratio_w``), which the
    network can only follow at fixed sizes; one multiply by ``[ratio_w, ratio_h, 1, ...]`` over the last
    dim computes the same float32 products and follows a dynamic number of boxes."""
    keypoints = call.arg("keypoints")
    ratio_h, ratio_w = (torch.tensor(s, dtype=torch.float32) / torch.tensor(s_orig, dtype=torch.float32)
                        for s, s_orig in zip(call.arg("new_size"), call.arg("original_size"), strict=True))
    scale = torch.ones(keypoints.shape[-1], dtype=torch.float32)
    scale[0], scale[1] = ratio_w, ratio_h
    return ctx.elementwise(ctx.trt(keypoints), ctx.constant(scale, trt.DataType.FLOAT), trt.ElementWiseOperation.PROD)


# GeneralizedRCNNTransform.postprocess looks it up in its module's globals
register_target(f"{_DETECTION}.transform", "resize_keypoints", f"{_DETECTION}.transform.resize_keypoints")


# Hybrid conversions and saved-program loads intercept the steps (importing torchvision only then).
steps_registry.on_demand(register_targets)
