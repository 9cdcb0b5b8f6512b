"""converters/search.py: searchsorted and bucketize (PyTorch's binary search, NaNs included), isin."""
import pytest
import torch

from harness import assert_reported, check_module, random_tensor as _make

_NAN = float("nan")


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_searchsorted_1d(dtype):
    seq = _make((7,), dtype).sort().values
    values = torch.cat([seq[:3], _make((3, 4), dtype).reshape(-1)]).reshape(3, 5)  # ties with the sequence too
    check_module(lambda s, v: [torch.searchsorted(s, v), torch.searchsorted(s, v, right=True),
                               torch.searchsorted(s, v, side="right", out_int32=True), torch.searchsorted(s, 3),
                               torch.bucketize(v, s), torch.bucketize(v, s, right=True, out_int32=True)], seq, values)


def test_searchsorted_nd_with_sorter():
    seq = torch.randn(2, 3, 6)
    sorter = seq.argsort(-1)
    check_module(lambda s, v: [torch.searchsorted(s.sort().values, v), torch.searchsorted(s, v, sorter=sorter),
                               torch.searchsorted(s, v, right=True, sorter=sorter)], seq, torch.randn(2, 3, 4))


def test_searchsorted_nans_go_where_pytorch_puts_them():
    seq = torch.tensor([-1.0, 0.0, 2.0, _NAN])
    values = torch.tensor([_NAN, 0.0, 5.0, -3.0, 2.0, float("inf")])
    check_module(lambda s, v: [torch.searchsorted(s, v), torch.searchsorted(s, v, right=True),
                               torch.bucketize(v, s[:3])], seq, values)


def test_searchsorted_of_one_and_empty():
    check_module(lambda s, v: [torch.searchsorted(s[:1], v), torch.searchsorted(s, v[:0]),
                               torch.bucketize(v, s[:1], right=True)], torch.tensor([0.5, 1.0]), torch.randn(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_isin(dtype):
    x, t = _make((3, 4), dtype), _make((5,), dtype)
    x[0, :2] = t[:2]
    check_module(lambda a, b: [torch.isin(a, b), torch.isin(a, b, invert=True), torch.isin(a, b[0]),
                               torch.isin(a[0, 0], b)], x, t)


def test_isin_with_a_scalar():
    check_module(lambda a: [torch.isin(a, 2), torch.isin(a, torch.tensor([2.0, 1.5]))],
                 torch.tensor([[1.0, 2.0], [1.5, 3.0]]))


def test_histc():
    # values on the edges (the max goes in the last bin), outside the range, NaN (dropped)
    # and PyTorch's own bin boundaries, where the float32 formula and the linspace edges disagree
    x = torch.cat([torch.randn(40) * 3, torch.tensor([0.0, 1.0, 2.5, 5.0, -1.0, 7.0, float("nan"), -2.0]),
                   torch.linspace(-3, 3, 101), torch.linspace(-2.0, 2.5, 8)])
    check_module(lambda t: [torch.histc(t, 4, 0, 5), torch.histc(t, bins=7, min=-2.0, max=2.5),
                            t.histc(1, -10, 10), torch.histc(t, 100, -3, 3)], x)


def test_histc_over_the_data_range_is_reported():
    assert_reported(r"pass min and max", lambda t: torch.histc(t, 5), torch.randn(10))
