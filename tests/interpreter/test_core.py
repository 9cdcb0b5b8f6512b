import numpy as np
import pytest
import torch

from torch2x.flavour import trt
from torch2x.interpreter import InterpreterInputError, interpret


def _const_plus_identity(fresh):
    net = fresh.network
    x = net.add_input("x", trt.float32, (2, 3))
    c = net.add_constant((1, 3), np.arange(3, dtype=np.float32))
    out = net.add_identity(c.get_output(0)).get_output(0)
    out.name = "y"
    net.mark_output(out)
    return x


def test_constant_identity_output(fresh):
    _const_plus_identity(fresh)
    out = interpret(fresh.network, {"x": torch.ones(2, 3)})
    torch.testing.assert_close(out["y"], torch.arange(3, dtype=torch.float32).reshape(1, 3), rtol=0, atol=0)


def test_missing_and_extra_inputs_are_named(fresh):
    _const_plus_identity(fresh)
    with pytest.raises(InterpreterInputError, match=r"missing \['x'\], unexpected \['z'\].*inputs are \['x'\]"):
        interpret(fresh.network, {"z": torch.ones(2, 3)})


def test_shape_contradicting_fixed_dim(fresh):
    _const_plus_identity(fresh)
    with pytest.raises(InterpreterInputError, match=r"shape \(2, 4\) but the network declares \(2, 3\)"):
        interpret(fresh.network, {"x": torch.ones(2, 4)})


def test_dtype_mismatch(fresh):
    _const_plus_identity(fresh)
    with pytest.raises(InterpreterInputError, match="dtype torch.float16 but the network declares torch.float32"):
        interpret(fresh.network, {"x": torch.ones(2, 3, dtype=torch.float16)})


def test_capture_unknown_name(fresh):
    _const_plus_identity(fresh)
    with pytest.raises(KeyError, match="nope"):
        interpret(fresh.network, {"x": torch.ones(2, 3)}, capture=["nope"])
