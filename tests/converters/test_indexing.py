"""converters/indexing.py: x[...] reads and writes, gathers, scatters, embedding, one_hot, padding."""
import pytest
import torch
import torch.nn.functional as F
from harness import assert_reported, check_module, random_tensor as _make

DTYPES = [torch.float32, torch.int64, torch.bool]


_MASK3 = torch.tensor([True, False, True])
_MASK34 = torch.tensor([[True, False, True, True], [False, False, True, False], [True, True, False, False]])
_IDX = torch.tensor([[0, 2], [1, -1]])

GETITEM = {
    1: [lambda x: x[0], lambda x: x[-1], lambda x: x[1:], lambda x: x[::2], lambda x: x[-4:-1], lambda x: x[None],
        lambda x: x[..., None], lambda x: x[[0, 2, 4]], lambda x: x[torch.tensor([-1, 0, 0])], lambda x: x[5:1],
        lambda x: x[-100:100:3], lambda x: x[torch.tensor(2)], lambda x: x[_IDX]],
    2: [lambda x: x[0], lambda x: x[:, 1:3], lambda x: x[..., ::2], lambda x: x[None, :, -1], lambda x: x[:, [0, 2]],
        lambda x: x[_IDX], lambda x: x[_MASK3], lambda x: x[_MASK34], lambda x: x[1:-1, ..., None],
        lambda x: x[[0, 2], [1, 3]], lambda x: x[[[0], [2]], [1, 3]], lambda x: x[:, _MASK34[0]], lambda x: x[-1, -1],
        lambda x: x[_IDX, 1:], lambda x: x[1, [3, 0]]],
    3: [lambda x: x[0], lambda x: x[:, 1:3], lambda x: x[..., ::2], lambda x: x[None, :, -1], lambda x: x[:, [0, 2]],
        lambda x: x[_IDX], lambda x: x[_MASK3], lambda x: x[:, _MASK34], lambda x: x[1:-1, ..., None],
        lambda x: x[[0, 1], :, [1, 3]], lambda x: x[0, :, [1, 3]], lambda x: x[:, 0, [1, 3]], lambda x: x[..., _IDX],
        lambda x: x[:, None, _IDX, 1:3], lambda x: x[_IDX, None, :, _IDX]],
    4: [lambda x: x[0], lambda x: x[:, 1:3], lambda x: x[..., ::2], lambda x: x[None, :, -1], lambda x: x[:, [0, 2]],
        lambda x: x[_IDX[:, :1]], lambda x: x[1:-1, ..., None], lambda x: x[:, _MASK34], lambda x: x[..., 1, None, 2:],
        lambda x: x[:, [1], :, [0, 2]], lambda x: x[[1, 0], [2, 0], [3, 3], [0, 1]]],
}
SHAPES = {1: (5,), 2: (3, 4), 3: (3, 3, 4), 4: (2, 3, 4, 3)}
# Every case in float32; int64 and bool on ranks 2-3 and every third case of ranks 1 and 4 (runtime).
CASES = [(r, k, d) for r in GETITEM for k in range(len(GETITEM[r])) for d in DTYPES
         if d == torch.float32 or r in (2, 3) or k % 3 == 0]


@pytest.mark.parametrize("rank,case,dtype", CASES)
def test_getitem(rank, case, dtype):
    check_module(GETITEM[rank][case], _make(SHAPES[rank], dtype))


def test_basic_getitem_is_at_most_two_layers():
    converted = check_module(lambda x: x[1:, None, ::2, 0], torch.randn(3, 4, 5))
    assert converted.network.num_layers <= 2


def test_advanced_getitem_is_one_gather():
    converted = check_module(lambda x: x[[0, 1], :, [1, 3]], torch.randn(3, 3, 4))
    assert converted.network.num_layers <= 3  # transpose+reshape, index constant, gather


def test_getitem_with_traced_index():
    check_module(lambda x, i: x[i], torch.randn(5, 3), torch.tensor([4, -1, 0, 2]))
    check_module(lambda x, i: x[:, i, 1:], torch.randn(2, 5, 3), torch.tensor([[4, -1], [0, 2]]))
    check_module(lambda x, i, j: x[i, :, j], torch.randn(4, 2, 5), torch.tensor([3, -1]), torch.tensor([[4], [0]]))


def test_getitem_traced_scalar_index_is_a_select():
    # PyTorch takes a 0-dim index tensor as an integer: x[i, :, [1, 2]] is x[i][:, [1, 2]], not advanced-first.
    check_module(lambda x, i: x[i, :, [1, 2]], torch.randn(3, 4, 5), torch.tensor(-1))
    check_module(lambda x: x[torch.tensor(True), 1:], torch.randn(3, 4))


def test_traced_mask_is_reported():
    assert_reported(r"data-depend", lambda x: x[x > 0], torch.randn(3, 4))


SETITEM = [
    (lambda x: x.__setitem__(0, 1) or x, None),
    (lambda x: x.__setitem__((slice(None), slice(1, 3)), 0) or x, None),
    (lambda x: x.__setitem__((Ellipsis, slice(None, None, 2)), 7) or x, None),
    (lambda x: x.__setitem__(_MASK3, 2) or x, None),
    (lambda x: x.__setitem__((slice(None), [0, 2]), 3) or x, None),
    (lambda x, v: x.__setitem__(0, v) or x, (4,)),
    (lambda x, v: x.__setitem__((slice(1, None), slice(None, None, 2)), v) or x, (2, 2)),
    (lambda x, v: x.__setitem__((slice(None), 1), v) or x, (3,)),
    (lambda x, v: x.__setitem__(_IDX[0], v) or x, (1, 4)),
    (lambda x, v: x.__setitem__(_MASK34, v) or x, (1,)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(SETITEM)))
def test_setitem(case, dtype):
    fn, vshape = SETITEM[case]
    inputs = [_make((3, 4), dtype)] + ([] if vshape is None else [_make(vshape, dtype)])
    check_module(lambda x, *v: fn(x * 1 if dtype != torch.bool else x.clone(), *v), *inputs)


def test_setitem_traced_mask():
    def fn(x):
        y = x.clone()
        y[y > 0] = 0.5
        return y
    check_module(fn, torch.randn(3, 4))


def test_setitem_traced_index():
    check_module(lambda x, i, v: x.__setitem__((slice(None), i), v) or x, torch.randn(4, 3), torch.tensor([0, -1]),
                 torch.randn(4, 1))
    check_module(lambda x, i: x.__setitem__(i, 2.0) or x, torch.randn(4, 2, 3), torch.tensor([2, 0]))


def test_setitem_through_view_updates_base():
    def fn(x):
        y = x.clone()
        y[1][2:] = 5.0
        return y
    check_module(fn, torch.randn(3, 4))


def test_setitem_into_constant_buffer():
    def fn(x):
        buf = torch.zeros(3, 6)
        buf[:, 1:5] = x
        return buf
    check_module(fn, torch.randn(3, 4))


def test_index_put():
    check_module(lambda x, v: x.clone().index_put_((torch.tensor([0, 2]),), v), torch.randn(3, 4), torch.randn(2, 4))
    check_module(lambda x: x.index_put((torch.tensor([0, 2]), torch.tensor([1, 1])), torch.tensor(9.0)),
                 torch.randn(3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select_and_select(dim, dtype):
    x = _make((3, 4, 5), dtype)
    check_module(lambda x: x.index_select(dim, torch.tensor([2, 0, 2])), x)
    check_module(lambda x: torch.index_select(x, dim, torch.tensor(1)), x)
    check_module(lambda x: x.select(dim, -1), x)
    check_module(lambda x: torch.select(x, dim, 1), x)


def test_index_select_traced_index():
    check_module(lambda x, i: x.index_select(1, i), torch.randn(2, 5), torch.tensor([4, 1, 1]))


def test_index_select_of_a_0d_tensor():
    check_module(lambda x: [x.index_select(0, torch.tensor([0])), torch.index_select(x, -1, torch.tensor(0))],
                 torch.tensor(2.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_gather(dim, dtype):
    x = _make((3, 4, 5), dtype)
    full = torch.randint(0, x.shape[dim], (3, 4, 5))
    small = torch.randint(0, x.shape[dim], (2, 3, 2))
    check_module(lambda x: torch.gather(x, dim, full), x)
    check_module(lambda x: x.gather(dim, small), x)
    check_module(lambda x, i: torch.gather(x, dim, i), x, small)


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_take_along_dim(dim):
    x = torch.randn(3, 4)
    if dim is None:
        check_module(lambda x: torch.take_along_dim(x, torch.tensor([0, 11, 5])), x)
    else:
        idx = torch.randint(0, x.shape[dim], (1, 4) if dim == 0 else (3, 2))
        check_module(lambda x: x.take_along_dim(idx, dim), x)


def test_masked_select():
    check_module(lambda x: x.masked_select(_MASK34), torch.randn(3, 4))
    check_module(lambda x: torch.masked_select(x, _MASK34[0]), torch.randn(2, 3, 4))
    assert_reported(r"data-depend", lambda x: x.masked_select(x > 0), torch.randn(3, 4))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding(padding_idx):
    emb = torch.nn.Embedding(10, 4, padding_idx=padding_idx)
    check_module(emb, torch.tensor([[1, 0, 9], [3, 3, 2]]))
    check_module(emb, torch.tensor([[1, 0, 9], [3, 3, 2]]), rtol=1e-2, fp16=True)
    check_module(lambda i: F.embedding(i, emb.weight), torch.tensor([5, 1]))


def test_embedding_max_norm_is_reported():
    assert_reported(r"max_norm", torch.nn.Embedding(10, 4, max_norm=1.0), torch.tensor([1, 2]))


@pytest.mark.parametrize("num_classes", [-1, 6])
def test_one_hot(num_classes):
    check_module(lambda i: F.one_hot(i, num_classes), torch.tensor([[0, 3], [4, 1]]))


def test_one_hot_computed_index():
    check_module(lambda x: F.one_hot(x.argmax(-1), 4).float() * x, torch.randn(2, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_scatter(dtype):
    x = _make((3, 4), dtype)
    idx = torch.tensor([[2, 0, 1, 1], [0, 1, 2, 0]])
    src = _make((3, 5), dtype)
    check_module(lambda x, s: torch.scatter(x, 0, idx, s), x, src)
    check_module(lambda x: x.scatter(1, idx[:, :2], 5), x)
    check_module(lambda x: x.clone().scatter_(0, idx, 2), x)


def test_nonzero_is_reported():
    assert_reported(r"depend", lambda x: torch.where(x > 0)[0], torch.randn(3, 4))
    assert_reported(r"data-depend", lambda x: x.nonzero(), torch.randn(3, 4))


def test_where_three_args():
    check_module(lambda x, y: torch.where(x > 0, x, y), torch.randn(3, 4), torch.randn(4))


PADS = [(1, 2), (0, 1, 2, 0), (1, 1, 1, 1, 1, 1), (-1, 2), (2, -1, 1, -1)]
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad", PADS)
def test_pad(pad, mode):
    # Non-constant modes pad at most the last 3 dims of a tensor with 1-2 more leading dims.
    x = torch.randn(2, 3, 4, 5) if mode == "constant" else torch.randn((2, 3, 4, 5)[: len(pad) // 2 + 2])
    check_module(lambda x: F.pad(x, pad, mode=mode), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_constant_value(dtype):
    check_module(lambda x: F.pad(x, (1, 2, 0, 1), value=1), _make((3, 4), dtype))
    check_module(lambda x: torch.constant_pad_nd(x, (2, 1), 3), _make((3, 4), dtype))


@pytest.mark.parametrize("module", [torch.nn.ZeroPad2d(2), torch.nn.ReflectionPad2d((1, 2, 0, 1)),
                                    torch.nn.ReplicationPad1d(3), torch.nn.CircularPad3d(1),
                                    torch.nn.ConstantPad2d((1, 0, 2, 1), -2.5)])
def test_pad_modules(module):
    x = torch.randn(1, 2, 3, 4, 5) if isinstance(module, torch.nn.CircularPad3d) else torch.randn(1, 2, 4, 5)
    if isinstance(module, torch.nn.ReplicationPad1d):
        x = torch.randn(2, 3, 5)
    check_module(module, x)
    check_module(module, x, rtol=1e-2, fp16=True)


@pytest.mark.parametrize("fn", [lambda x: x[:, [2, 0]][..., 1:], lambda x: F.pad(x, (1, 1), mode="reflect")[0]],
                         ids=lambda f: "")
def test_fp16(fn):
    check_module(fn, torch.randn(2, 3, 4), rtol=1e-2, fp16=True)


def test_index_copy_fill_take():
    idx = torch.tensor([2, 0])
    check_module(lambda x, s: x.index_copy(1, idx, s), torch.randn(3, 4), torch.randn(3, 2))
    check_module(lambda x, i, s: torch.index_copy(x, 0, i, s), torch.randn(3, 4), idx, torch.randn(2, 4))
    check_module(lambda x: x.index_fill(1, idx, -1.0), torch.randn(3, 4))
    check_module(lambda x, i: x.index_fill(0, i, 7), torch.randint(0, 5, (3, 4)), idx)
    check_module(lambda x, i, v: x.__setitem__((slice(None), i), v) or x, torch.randn(3, 4), torch.tensor(1),
                 torch.randn(3))
    check_module(lambda x: torch.take(x, torch.tensor([[0, -1], [5, 3]])), torch.randn(2, 3))
    check_module(lambda x, i: x.take(i), torch.randn(2, 3), torch.tensor([5, 0, 1]))


def test_traced_slice_bound_is_reported():
    assert_reported(r"int\(n\)", lambda x, n: x[: n.sum()], torch.randn(5), torch.tensor([1, 2]))
    check_module(lambda x, n: x[[n.sum(), slice(1, None)]], torch.randn(5, 3), torch.tensor([1, 2]))
