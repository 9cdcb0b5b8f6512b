"""converters/creation.py: *_like, new_*, fill_/zero_, copy_, and random creation reported as unsupported."""
import operator

import pytest
import torch
from harness import _Wrap, check_module

import torch2x


def late(path):
    """``torch.<path>`` looked up at call time: the tracer patches torch's attributes, which
    references taken while collecting tests would bypass."""
    return lambda *args: operator.attrgetter(path)(torch)(*args)



@pytest.mark.parametrize("fn", [
    lambda x: torch.zeros_like(x) + x, lambda x: torch.ones_like(x) * x, lambda x: torch.full_like(x, 2.5) - x,
    lambda x: torch.zeros_like(x, dtype=torch.int64), lambda x: torch.ones_like(x, dtype=torch.bool),
    lambda x: torch.full_like(x, 7, dtype=torch.int32), lambda x: torch.empty_like(x).zero_() + x,
    lambda x: x.new_zeros((2, 5)), lambda x: x.new_ones(3, 2), lambda x: x.new_full((4,), -1.5),
    lambda x: x.new_empty((2, 2)).fill_(3.0), lambda x: x.new_zeros(2, dtype=torch.int64),
    lambda x: x.new_tensor([1.0, 2.0, 3.0]) * x[0, 0, :3], lambda x: x.new_tensor(x) + 1,
    lambda x: (x * 1).fill_(0.5), lambda x: (x * 1).zero_(), lambda x: (x * 1).fill_(x[0, 0, 0]),
    lambda x: (x * 1).fill_(torch.tensor(4.0)), lambda x: torch.fill(x, 1.5),
    lambda x: torch.zeros_like(x[0, 0, 0]), lambda x: torch.full_like(x.int(), 2.7),
], ids=["zeros_like", "ones_like", "full_like", "zeros_like_int", "ones_like_bool", "full_like_int", "empty_like",
        "new_zeros", "new_ones", "new_full", "new_empty_fill", "new_zeros_int", "new_tensor", "new_tensor_traced",
        "fill_", "zero_", "fill_traced", "fill_0d", "torch_fill", "zeros_like_0d", "full_like_truncates"])
def test_creation(fn):
    check_module(fn, torch.randn(2, 3, 4))


@pytest.mark.parametrize("fn", [
    lambda x, y: (x * 1).copy_(y), lambda x, y: (x * 1).copy_(y[0]), lambda x, y: (x * 1).int().copy_(y),
    lambda x, y: torch.zeros(2, 3, 4).copy_(x) * 2,
], ids=["same_shape", "broadcast", "cast", "into_constant"])
def test_copy_(fn):
    check_module(fn, torch.randn(2, 3, 4), torch.randn(2, 3, 4) * 4)


@pytest.mark.parametrize("fn", [
    lambda x: torch.as_tensor(x, dtype=torch.int64), lambda x: torch.asarray(x[0]) + 1,
    lambda x: torch.as_tensor([1.0, 2.0]) + x[0, :2], lambda x: x.new_tensor([[1, 2]]) * x[:, :2],
], ids=["as_tensor_cast", "asarray", "constant_data", "new_tensor_constant"])
def test_tensor_from_data(fn):
    check_module(fn, torch.randn(2, 4))


def test_fp16():
    check_module(lambda x: torch.ones_like(x) * x + torch.full_like(x, 0.25), torch.randn(3, 4), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("fn", [late("rand_like"), late("randn_like"), lambda x: torch.randint_like(x, 5),
                                lambda x: (x * 1).uniform_(), late("bernoulli")],
                         ids=["rand_like", "randn_like", "randint_like", "uniform_", "bernoulli"])
def test_random_is_reported(fn):
    report = torch2x.report(_Wrap(lambda x: fn(x.sigmoid())), [torch.randn(4)])
    assert not report.ok
    assert "random" in str(report)


# With dynamic shapes a size read from a dynamic dim is traced, so creation calls from Python sizes
# alone reach these converters: their sizes (and arange's values) must follow the input.
@pytest.mark.parametrize("fn", [
    lambda x: x + torch.zeros(x.shape[0], 3),
    lambda x: x * torch.ones((x.size(0), 1), dtype=torch.float32),
    lambda x: x - torch.full((x.shape[0], 3), 1.5),
    lambda x: x + torch.empty(x.shape[0], 3).fill_(2.0),
    lambda x: x + torch.arange(x.shape[0]).reshape(-1, 1),
    lambda x: x + torch.arange(1, 2 * x.shape[0] + 1, 2, dtype=torch.float32).unsqueeze(1),
    lambda x: x * torch.arange(x.size(0) - 1, x.size(0) + 2).to(x.dtype),
    lambda x: torch.zeros_like(x, dtype=torch.int32) + x.new_ones(x.shape[0], 1, dtype=torch.int32),
    lambda x: x.new_full((x.shape[0], 3), 0.25) * x,
])
def test_creation_from_traced_sizes(fn):
    net = torch2x.build_network(fn, [torch.randn(3, 3)], input_names=["x"], dynamic_shapes={"x": {0: (1, 3, 6)}})
    for batch in (1, 3, 6, 4):
        x = torch.randn(batch, 3)
        out, ref = net.interpret(x), fn(x)
        assert out.dtype == ref.dtype and torch.equal(out, ref), f"batch {batch}"
    assert net.build_engine() is not None
