"""converters/activation.py: each activation against PyTorch, over arguments, ranks and fp16."""
import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import _Wrap, check_module

import torch2x


def late(path):
    """``torch.<path>`` looked up at call time: the tracer patches torch's attributes, which
    references taken while collecting tests would bypass."""
    return lambda *args: operator.attrgetter(path)(torch)(*args)


SHAPES = [(7,), (2, 3, 4), (1, 4, 3, 3)]

_ACTIVATIONS = {
    "relu": late("nn.functional.relu"), "torch_relu": late("relu"), "relu_method": lambda x: x.relu(),
    "relu6": late("nn.functional.relu6"),
    "sigmoid": late("sigmoid"), "sigmoid_method": lambda x: x.sigmoid(), "expit": late("special.expit"),
    "F_sigmoid": late("nn.functional.sigmoid"), "tanh": late("tanh"), "F_tanh": late("nn.functional.tanh"),
    "softsign": late("nn.functional.softsign"), "selu": late("nn.functional.selu"),
    "torch_selu": late("selu"), "logsigmoid": late("nn.functional.logsigmoid"),
    "leaky_relu": late("nn.functional.leaky_relu"),
    "leaky_relu_0.2": lambda x: F.leaky_relu(x, 0.2), "hardtanh": late("nn.functional.hardtanh"),
    "hardtanh_args": lambda x: F.hardtanh(x, -0.5, 2.0), "elu": late("nn.functional.elu"),
    "elu_0.5": lambda x: F.elu(x, 0.5),
    "celu": late("nn.functional.celu"), "celu_2": lambda x: F.celu(x, 2.0),
    "torch_celu": lambda x: torch.celu(x, 0.5),
    "softplus": late("nn.functional.softplus"), "softplus_beta": lambda x: F.softplus(x, beta=2.0),
    "softplus_threshold": lambda x: F.softplus(x, beta=1.5, threshold=1.0),
    "hardsigmoid": late("nn.functional.hardsigmoid"),
    "hardswish": late("nn.functional.hardswish"), "silu": late("nn.functional.silu"),
    "mish": late("nn.functional.mish"), "gelu": late("nn.functional.gelu"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "rrelu_eval": lambda x: F.rrelu(x, 0.1, 0.3),
    "torch_rrelu": lambda x: torch.rrelu(x, 0.1, 0.3), "softshrink": late("nn.functional.softshrink"),
    "softshrink_1": lambda x: F.softshrink(x, 1.0), "hardshrink": late("nn.functional.hardshrink"),
    "hardshrink_method": lambda x: x.hardshrink(0.8), "tanhshrink": late("nn.functional.tanhshrink"),
    "threshold": lambda x: F.threshold(x, 0.3, -2.0), "torch_threshold": lambda x: torch.threshold(x, -0.1, 5.0),
    "relu_": lambda x: F.relu(x * 1, inplace=True), "leaky_relu_": lambda x: F.leaky_relu_(x * 1, 0.1),
    "sigmoid_": lambda x: (x * 1).sigmoid_(), "hardtanh_": lambda x: F.hardtanh(x * 1, inplace=True),
    "elu_": lambda x: F.elu(x * 1, inplace=True),
}


@pytest.mark.parametrize("name", sorted(_ACTIVATIONS))
def test_activation(name):
    check_module(_ACTIVATIONS[name], torch.randn(2, 3, 4) * 3)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_modules_over_ranks(shape):
    modules = [nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Mish(), nn.Softplus(), nn.PReLU()]
    check_module(lambda x: tuple(m(x) for m in modules), torch.randn(shape) * 3)


@pytest.mark.parametrize("module", [
    nn.ReLU6(), nn.Hardsigmoid(), nn.LeakyReLU(0.3), nn.ELU(0.7), nn.CELU(1.5), nn.SELU(), nn.RReLU(), nn.GLU(),
    nn.GLU(dim=1), nn.LogSigmoid(), nn.Softshrink(0.3), nn.Hardshrink(0.3), nn.Tanhshrink(), nn.Threshold(0.1, 20),
    nn.Softsign(), nn.Hardtanh(-2, 2), nn.Sigmoid(), nn.Tanh(), nn.GELU("tanh"), nn.Softplus(2, 5),
], ids=lambda m: repr(m))
def test_modules(module):
    check_module(module, torch.randn(2, 4, 6) * 3)


def test_hard_functions_at_their_corners():
    # hardsigmoid/hardswish/relu6 switch exactly at -3, 3 and 6.
    x = torch.tensor([-4.0, -3.0, -2.999, 0.0, 2.999, 3.0, 5.0, 6.0, 6.5])
    check_module(lambda x: torch.stack([F.hardsigmoid(x), F.hardswish(x), F.relu6(x)]), x)


@pytest.mark.parametrize("num_parameters", [1, 4])
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 5), (1, 4, 3, 3)])
def test_prelu(num_parameters, shape):
    module = nn.PReLU(num_parameters)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-0.5, 0.5, num_parameters))
    check_module(module, torch.randn(shape))


def test_prelu_unbatched_1d():
    check_module(lambda x: F.prelu(x, torch.tensor([0.1])), torch.randn(3))


def test_rrelu_training_is_reported():
    report = torch2x.report(_Wrap(lambda x: F.rrelu(x * 1, training=True)), [torch.randn(4)])
    assert not report.ok


@pytest.mark.parametrize("modules", [[nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Mish()],
                                     [nn.Sigmoid(), nn.ELU(), nn.Softplus(), nn.LogSigmoid()]], ids=str)
def test_fp16(modules):
    check_module(lambda x: tuple(m(x) for m in modules), torch.randn(2, 8, 4) * 3, rtol=1e-2, fp16=True)
