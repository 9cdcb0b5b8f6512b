"""torchvision's detection helpers that PyTorch steps of a hybrid module may take as arguments.

With ``fallback=True`` a data-dependent call runs in PyTorch and is saved as plain data
(:mod:`torch2x.steps`); some of torchvision's calls pass small configuration objects (the pooler's
``LevelMapper``, the ``BoxCoder`` of the box heads), which are saved as their attributes and rebuilt on
load. Registered by name: torchvision is imported only when such a program is saved or loaded.
"""
from torch2x.steps import plain_class

for _name in ("torchvision.ops.poolers.LevelMapper", "torchvision.models.detection._utils.BoxCoder"):
    plain_class(_name)
