"""Network interpreter: run an ``INetworkDefinition`` with PyTorch (see ``core``)."""
from .core import (  # noqa: F401
    Env, Interpreter, InterpreterInputError, LayerExecutionError, UnsupportedLayerError, interpret, rule,
)
from . import rules_tensor, rules_nn, rules_attention  # noqa: F401,E402  (register the layer rules)
from . import rules_plugins  # noqa: F401,E402  (NMS and torch2x plugin layers)
