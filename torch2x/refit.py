"""Put a model's weights into a weight-stripped or refittable engine with TensorRT's ``Refitter``.

The weights TensorRT holds are not always the model's parameters as they are (a batch norm folds into
its convolution, reduced precision casts them), so the weights are taken from the network a new
conversion of the model builds: the same conversion gives the same layer names, and the refitter asks
for weights by layer name and role. Refitting needs the deserialized engine, hence a GPU; the weights
themselves are computed anywhere (:func:`network_weights`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .flavour import concrete_layer, trt

_ROLES = {  # layer type -> (WeightsRole, attribute) of the weights its layer holds
    "CONVOLUTION": (("KERNEL", "kernel"), ("BIAS", "bias")),
    "DECONVOLUTION": (("KERNEL", "kernel"), ("BIAS", "bias")),
    "CONSTANT": (("CONSTANT", "weights"),),
    "SCALE": (("SCALE", "scale"), ("SHIFT", "shift")),
}


def network_weights(network: trt.INetworkDefinition) -> dict:
    """``{(layer name, WeightsRole): numpy array}`` for every weight a network's layers hold. Example::

        weights = network_weights(torch2x.build_network(model, [x]).network)
        weights[("conv1/conv2d", trt.WeightsRole.KERNEL)].shape   # folded with bn1, flat
    """
    out = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        roles = _ROLES.get(layer.type.name)
        if not roles:
            continue
        layer = concrete_layer(layer)
        for role, attr in roles:
            value = getattr(layer, attr, None)
            if value is not None and np.asarray(value).size:
                out[(layer.name, getattr(trt.WeightsRole, role))] = np.ascontiguousarray(value)
    return out


def refit_engine(engine: trt.ICudaEngine, weights: dict, logger: Any) -> None:  # pragma: no cover -- needs a GPU
    """Set every weight the engine asks for (``Refitter.get_all``) from ``weights`` and refit it.

    Raises RuntimeError naming a weight the engine wants that ``weights`` lacks, or TensorRT's refusal.
    """
    refitter = trt.Refitter(engine, logger)
    kept = []  # TensorRT reads the arrays during refit_cuda_engine: keep them alive until then
    names, roles = refitter.get_all()
    for name, role in zip(names, roles, strict=True):
        array = weights.get((name, role))
        if array is None:
            raise RuntimeError(f"the engine asks for the {role.name.lower()} weights of layer {name!r}, which the "
                               "model's conversion does not make: refit with the model (and the conversion "
                               "options) the engine was converted from")
        kept.append(array)
        if not refitter.set_weights(name, role, trt.Weights(array)):
            raise RuntimeError(f"TensorRT refused the {role.name.lower()} weights of layer {name!r} "
                               f"(shape {array.shape}, {array.dtype})")
    missing = refitter.get_missing()
    if missing and missing[0]:
        raise RuntimeError(f"weights still missing after refit: {list(missing[0])[:5]}")
    if not refitter.refit_cuda_engine():
        raise RuntimeError("TensorRT's refit_cuda_engine failed (see the torch2x.tensorrt log)")
