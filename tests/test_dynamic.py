"""Dynamic shapes: input ranges become -1 dims and optimization profiles; the network is checked at
min, opt, max and sizes between; ops that fix a dynamic dim are reported."""
from __future__ import annotations

import pytest
import torch

import torch2x
from harness import relative_error, torchvision_model
from torch2x.flavour import trt


def _cnn(name):
    return torchvision_model(name, 64)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large"])
def test_dynamic_batch_matches_pytorch_across_the_range(name):
    model = _cnn(name)
    net = torch2x.build_network(model, [torch.randn(4, 3, 64, 64)], input_names=["x"],
                                dynamic_shapes={"x": {0: (1, 4, 16)}})
    assert tuple(net.network.get_input(0).shape) == (-1, 3, 64, 64)
    assert tuple(net.network.get_output(0).shape) == (-1, 1000)
    for batch in (1, 2, 4, 9, 16):  # min, between, opt, between, max
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x)
        err = relative_error(net.interpret(x), ref)
        assert err <= 1e-4, f"batch {batch}: relative error {err:.2e}"
    assert len(net.build_engine()) > 0  # the profile goes into the builder config


def test_fixed_shape_resnet50_has_no_shape_layers():
    net = torch2x.build_network(_cnn("resnet50"), [torch.randn(1, 3, 64, 64)])
    types = {net.network.get_layer(i).type for i in range(net.network.num_layers)}
    assert trt.LayerType.SHAPE not in types and trt.LayerType.SHUFFLE in types


def test_ops_that_fix_a_dynamic_dim_are_reported():
    def fn(x):
        return torch.cat([x, x[:1].expand(x.shape[0], -1)], dim=1)  # expand to the example's batch

    rep = torch2x.report(fn, [torch.randn(2, 5)], dynamic_shapes={"input_0": {0: (1, 2, 8)}})
    assert not rep.ok
    reasons = " ".join(u.reason for u in rep.unsupported.values())
    assert "dynamic dimension" in reasons
    with pytest.raises(torch2x.UnsupportedOperatorError, match="dynamic dimension"):
        torch2x.build_network(fn, [torch.randn(2, 5)], dynamic_shapes={"input_0": {0: (1, 2, 8)}})


def test_trtmodule_refuses_inputs_outside_every_profile():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    profiles = [{"x": {0: (1, 1, 2)}}, {"x": {0: (3, 4, 8)}}]
    model_trt = torch2x.torch2x(model, [torch.randn(4, 4)], input_names=["x"], dynamic_shapes=profiles)
    assert model_trt.meta["input_shapes"] == [[-1, 4]]
    assert model_trt.select_profile([torch.randn(2, 4)]) == 0
    assert model_trt.select_profile([torch.randn(5, 4)]) == 1
    with pytest.raises(ValueError, match=r"input 'x' dim 0 is 9, outside the engine's range \[1, 2\] "
                                         r"\(and no other of the 2 profiles fits\)"):
        model_trt(torch.randn(9, 4))
    with pytest.raises(ValueError, match=r"input 'x' has shape \(5, 3\), the engine takes \(-1, 4\)"):
        model_trt(torch.randn(5, 3))


@pytest.mark.parametrize("spec, error, message", [
    ({"y": {0: (1, 2, 4)}}, ValueError, r"names inputs \['y'\]; the inputs are \['input_0'\]"),
    ({"input_0": {0: (3, 4, 8)}}, ValueError, r"shape \(2, 5\) in the example, outside its range \[3, 5\]..\[8, 5\]"),
    ({"input_0": {0: (4, 2, 8)}}, ValueError, r"need 1 <= min <= opt <= max"),
    ({"input_0": {0: (1, 2)}}, ValueError, r"must be \(min, opt, max\)"),
])
def test_bad_dynamic_shapes_are_refused_clearly(spec, error, message):
    with pytest.raises(error, match=message):
        torch2x.build_network(lambda x: x.relu(), [torch.randn(2, 5)], dynamic_shapes=spec)
