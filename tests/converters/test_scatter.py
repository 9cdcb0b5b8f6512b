"""converters/scatter.py: reducing scatters (one-hot contractions), index_* writes, view scatters, masked_scatter;
and the aten-level native_batch_norm and grid_sampler converters that sit with their families."""
import pytest
import torch

import torch2x
from harness import assert_reported, check_module, random_tensor as _make

DTYPES = [torch.float32, torch.int32, torch.bool]
# Repeated indices on purpose: TensorRT's scatter would keep one update, these must accumulate.
_INDEX = torch.tensor([[0, 1, 2, 0], [3, 3, 1, 0], [1, 0, 3, 3]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_add(dtype):
    # index smaller than the input on the other dim (the rest keeps the input), src larger than the index
    check_module(lambda x, s: [torch.scatter_add(x, 0, _INDEX, s), x.scatter_add(1, _INDEX, s),
                               x.clone().scatter_add_(-2, _INDEX[:2, :3], s),
                               torch.scatter(x, 0, _INDEX, s, reduce="add")],
                 _make((4, 5), dtype), _make((3, 5), dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(include_self, dtype):
    check_module(lambda x, s: [torch.scatter_reduce(x, 0, _INDEX, s, kind, include_self=include_self)
                               for kind in ("sum", "prod", "mean", "amax", "amin")] +
                 [x.scatter_reduce(-1, _INDEX, s, "amax", include_self=include_self)],
                 _make((4, 5), dtype), _make((3, 4), dtype))


def test_scatter_with_traced_index():
    check_module(lambda x, i, s: [x.scatter_add(1, i, s), x.scatter_reduce(0, i, s, "amin"),
                                  x.scatter(1, i, s, reduce="multiply"), x.scatter(0, i, 2.5)],
                 torch.randn(4, 4), torch.randint(0, 4, (2, 3)), torch.randn(2, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_add(dtype):
    index = torch.tensor([2, 0, 2, 1])  # a repeat: both rows add up
    alpha = 3 if dtype != torch.bool else True
    check_module(lambda x, s, r: [torch.index_add(x, 0, index, s), x.index_add(-1, index, r, alpha=alpha),
                                  x.clone().index_add_(1, index[1:], r[:, 1:])],
                 _make((3, 4), dtype), _make((4, 4), dtype), _make((3, 4), dtype))


@pytest.mark.parametrize("include_self", [True, False])
def test_index_reduce(include_self):
    index = torch.tensor([2, 0, 2, 1])
    check_module(lambda x, s: [torch.index_reduce(x, 0, index, s, kind, include_self=include_self)
                               for kind in ("prod", "mean", "amax", "amin")], torch.randn(3, 4), torch.randn(4, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_copy_and_fill(dtype):
    index = torch.tensor([2, 0])
    check_module(lambda x, s, r, v, z: [torch.index_copy(x, 1, index, s), x.index_copy(-2, index, r),
                                        torch.index_fill(x, 0, index, 1), x.index_fill(-1, index, v),
                                        torch.index_fill(z, 0, torch.tensor([0]), v),
                                        torch.index_copy(z, 0, index[1:], v)],
                 _make((3, 4), dtype), _make((3, 2), dtype), _make((2, 4), dtype), _make((), dtype), _make((), dtype))


def test_index_ops_with_traced_index():
    check_module(lambda x, i, s: [x.index_add(1, i, s), x.index_copy(1, i, s), x.index_fill(1, i, -1.0)],
                 torch.randn(3, 5), torch.tensor([4, 0]), torch.randn(3, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_put_accumulate(dtype):
    rows, cols, mask = torch.tensor([0, 2, 0]), torch.tensor([1, 1, 1]), torch.tensor([True, False, True])
    check_module(lambda x, v: [torch.index_put(x, (rows, cols), v[0, :3], accumulate=True),
                               x.index_put((rows,), v[:3], accumulate=True),
                               x.clone().index_put_((mask,), v[0], accumulate=True),
                               x.index_put((mask & False,), v[0], accumulate=True)],
                 _make((3, 4), dtype), _make((4, 4), dtype))


def test_index_put_accumulate_with_traced_indices_is_reported():
    assert_reported(r"computed in the network", lambda x, i: x.index_put((i,), torch.tensor(1.0), accumulate=True),
                    torch.randn(3), torch.tensor([0, 0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_select_and_slice_scatter(dtype):
    check_module(lambda x, r, c, w: [torch.select_scatter(x, r, 0, 1), x.select_scatter(c, -1, -1),
                                     torch.slice_scatter(x, w, 1, 1, 4, 2), x.slice_scatter(x[1:], start=-2),
                                     torch.slice_scatter(x, c.unsqueeze(1), -1, end=1)],
                 _make((3, 5), dtype), _make((5,), dtype), _make((3,), dtype), _make((3, 2), dtype))


def test_select_scatter_follows_a_dynamic_batch():
    def fn(x, v):
        return torch.select_scatter(x, v, 0, -1)

    net = torch2x.build_network(fn, [torch.randn(4, 3), torch.randn(3)], input_names=["x", "v"],
                                dynamic_shapes={"x": {0: (2, 4, 8)}})
    for n in (2, 5, 8):
        x, v = torch.randn(n, 3), torch.randn(3)
        assert torch.equal(net.interpret(x, v), fn(x, v)), n


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_scatter(dtype):
    check_module(lambda x, a, b, c: [torch.diagonal_scatter(x, a), x.diagonal_scatter(b, 2),
                                     x.diagonal_scatter(c, -1, 1, 0),
                                     torch.diagonal_scatter(x.unsqueeze(0).expand(2, 4, 5), b.expand(2, 3), 2, -2, -1)],
                 _make((4, 5), dtype), _make((4,), dtype), _make((3,), dtype), _make((4,), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_scatter(dtype):
    mask = torch.tensor([[True, False, True, True], [False, False, True, False], [True, True, False, False]])
    check_module(lambda x, s: [torch.masked_scatter(x, mask, s), x.masked_scatter(mask[0], s),
                               x.clone().masked_scatter_(~mask, s)], _make((3, 4), dtype), _make((4, 5), dtype))


def test_masked_scatter_with_a_computed_mask():
    # the mask is computed in the network: the running count still gives every element its source position
    check_module(lambda x, s: [x.masked_scatter(x > 0, s), torch.masked_scatter(x, (x > 0)[0], s)],
                 torch.randn(3, 5), torch.randn(16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_put_and_as_strided_scatter(dtype):
    index = torch.tensor([[0, -1], [5, 0]])  # negative wraps; a repeat accumulates
    check_module(lambda x, s: [torch.put(x, index, s), x.put(index[0], s[0], accumulate=True),
                               x.clone().put_(index, s, accumulate=True),
                               torch.as_strided_scatter(x, s, (2, 2), (1, 3), 1),
                               x.as_strided_scatter(s[0], (2,), (5,))],
                 _make((3, 4), dtype), _make((2, 2), dtype))


def test_put_with_traced_index():
    check_module(lambda x, i, s: [x.put(i, s), x.put(i, s, accumulate=True)], torch.randn(2, 3),
                 torch.tensor([4, -1, 4]), torch.randn(3))


@pytest.mark.parametrize("training", [False, True])
def test_native_batch_norm(training):
    weight, bias, mean, var = torch.randn(3), torch.randn(3), torch.randn(3), torch.rand(3) + 0.5
    check_module(lambda x: torch.native_batch_norm(x, weight, bias, mean.clone(), var.clone(), training, 0.1, 1e-3),
                 torch.randn(2, 3, 4, 5))


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sampler(align_corners):
    x, grid = torch.randn(1, 2, 5, 6), torch.rand(1, 3, 4, 2) * 2.4 - 1.2
    check_module(lambda x, g: [torch.grid_sampler_2d(x, g, mode, padding, align_corners)
                               for mode in (0, 1) for padding in (0, 1, 2)] +
                 [torch.grid_sampler(x, g, 0, 0, align_corners)], x, grid)
    check_module(lambda x, g: torch.grid_sampler_3d(x, g, 0, 1, align_corners),
                 torch.randn(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 4, 3) * 2 - 1)
