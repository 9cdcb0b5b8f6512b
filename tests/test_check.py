"""check(): layerwise comparison on CPU, pointing at the first layer that goes wrong."""
from __future__ import annotations

import torch
import torch.nn as nn

import torch2x
from torch2x.flavour import trt
from torch2x.registry import CONVERTERS, Converter


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Sequential(nn.ReLU(), nn.Linear(16, 16)), nn.Tanh(), nn.Linear(16, 4))


def test_check_passes_and_lists_every_module():
    result = torch2x.check(_model(), [torch.randn(3, 8)])
    assert result.ok and result.first_failure is None
    names = [r.name for r in result.rows]
    assert names == ["0", "1.0", "1.1", "1", "2", "3", "output output_0"]
    assert all(r.relative_error <= 1e-4 for r in result.rows)
    assert "check: ok" in str(result)


def test_check_points_at_a_wrong_converter(monkeypatch):
    def wrong_relu(ctx, call):  # a deliberately wrong converter: sigmoid instead of relu
        return ctx.activation(call.arg("input"), trt.ActivationType.SIGMOID)

    original = CONVERTERS["torch.nn.functional.relu"]
    monkeypatch.setitem(CONVERTERS, "torch.nn.functional.relu",
                        Converter(original.name, wrong_relu, original.signature, False))
    result = torch2x.check(_model(), [torch.randn(3, 8)])
    assert not result.ok
    assert result.first_failure.name == "1.0"  # the ReLU inside the second block
    assert [r.ok for r in result.rows][:2] == [True, False]
    table = str(result)
    assert "1.0" in table.split("<-- first above tolerance")[0].splitlines()[-1]
    assert "FAILED at 1.0" in table
