"""Converters for ops TensorRT has no single layer for, and user plugins.

Importing this package registers the converters (torchvision's deform_conv2d, roi_align,
nms/batched_nms; F.grid_sample; torchvision's resize_keypoints) and their tracer targets.
"""
from . import sampling  # noqa: F401
from . import roi_align  # noqa: F401,E402
from . import nms  # noqa: F401,E402
from . import detection  # noqa: F401,E402
from .nms import batched_nms_padded, nms_padded  # noqa: F401,E402
from .custom import PLUGIN_OPS, plugin_op  # noqa: F401,E402
