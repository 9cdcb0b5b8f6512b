import pytest
import torch
import torch.nn.functional as F
from harness import check_module


@pytest.mark.parametrize("shape", [(5,), (2, 5), (2, 3, 5), (2, 1, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape, bias):
    check_module(torch.nn.Linear(5, 4, bias=bias), torch.randn(shape))


def test_linear_fp16():
    check_module(torch.nn.Linear(16, 8), torch.randn(2, 3, 16), rtol=1e-2, fp16=True)


def test_linear_weight_is_input():
    check_module(lambda x, w, b: F.linear(x, w, b), torch.randn(3, 5), torch.randn(4, 5), torch.randn(4))


@pytest.mark.parametrize("a,b", [
    ((4,), (4,)), ((4,), (4, 3)), ((2, 4), (4,)), ((2, 4), (4, 3)), ((5, 4), (2, 4, 3)), ((2, 3, 4), (4,)),
    ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)),
])
def test_matmul(a, b):
    check_module(lambda x, y: torch.matmul(x, y), torch.randn(a), torch.randn(b))


def test_matmul_operators():
    w = torch.randn(3, 2)
    check_module(lambda x, y: (x @ y, x.matmul(y), w.matmul(x) @ y), torch.randn(2, 4), torch.randn(4, 5))


def test_rmatmul():
    # a constant on the left of @ dispatches to the traced tensor's __rmatmul__
    w = torch.randn(3, 4)
    check_module(lambda x: (w @ x, x.__rmatmul__(w)), torch.randn(4, 2))


def test_matmul_fp16():
    check_module(lambda x, y: x @ y, torch.randn(2, 8, 16), torch.randn(16, 8), rtol=1e-2, fp16=True)


def test_mm_bmm_mv_dot():
    check_module(lambda a, b, c, d, v: (torch.mm(a, b), torch.bmm(c, d), a.mv(v), torch.dot(v, v), v.vdot(v)),
                 torch.randn(3, 4), torch.randn(4, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(4))


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1.5)])
def test_add_family(beta, alpha):
    def fn(i, a, b, ba, bb, bi, v, iv, v5):
        return (torch.addmm(i, a, b, beta=beta, alpha=alpha),
                torch.baddbmm(bi, ba, bb, beta=beta, alpha=alpha),
                torch.addbmm(i, ba, bb, beta=beta, alpha=alpha),
                torch.addmv(iv, a, v, beta=beta, alpha=alpha),
                torch.addr(i, iv, v5, beta=beta, alpha=alpha))
    check_module(fn, torch.randn(3, 5), torch.randn(3, 4), torch.randn(4, 5), torch.randn(2, 3, 4),
                 torch.randn(2, 4, 5), torch.randn(1, 5), torch.randn(4), torch.randn(3), torch.randn(5))


def test_addmm_broadcast_bias():
    check_module(lambda i, a, b: i.addmm(a, b), torch.randn(5), torch.randn(3, 4), torch.randn(4, 5))


def test_outer():
    check_module(lambda a, b: (torch.outer(a, b), a.ger(b)), torch.randn(3), torch.randn(4))


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk", [(2, 2, 3), (2, 3, 4)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("...ij,...jk->...ik", [(2, 2, 3), (3, 4)]),
    ("b...d,d->b...", [(2, 3, 4, 5), (5,)]),
    ("Ab,bC->AC", [(2, 3), (3, 4)]),
    ("i,j", [(3,), (4,)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ii->i", [(3, 3)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
])
def test_einsum(eq, shapes):
    check_module(lambda *xs: torch.einsum(eq, *xs), *[torch.randn(s) for s in shapes])


def test_einsum_list_operands():
    check_module(lambda a, b: torch.einsum("ij,jk", [a, b]), torch.randn(2, 3), torch.randn(3, 4))


@pytest.mark.parametrize("dims,b", [(2, (4, 5, 2)), (1, (5, 2)), (0, (2,)), (([1, 0], [0, 1]), (4, 3, 2)),
                                    (([2], [1]), (2, 5))])
def test_tensordot(dims, b):
    check_module(lambda x, y: torch.tensordot(x, y, dims), torch.randn(3, 4, 5), torch.randn(b))


@pytest.mark.parametrize("shape", [(4, 3), (2, 4, 3)])
def test_bilinear(shape):
    check_module(torch.nn.Bilinear(3, 5, 2), torch.randn(shape), torch.randn(shape[:-1] + (5,)))


def test_inplace_add_family():
    check_module(lambda i, a, b: (i * 1.0).addmm_(a, b, beta=0.5), torch.randn(3, 5), torch.randn(3, 4),
                 torch.randn(4, 5))


@pytest.mark.filterwarnings("ignore:.*chain_matmul is deprecated")
def test_multi_dot():
    check_module(lambda a, b, c: (torch.linalg.multi_dot([a, b, c]), torch.linalg.matmul(a, b),
                                  torch.chain_matmul(b, c)),
                 torch.randn(3), torch.randn(3, 4), torch.randn(4, 2))


@pytest.mark.parametrize("a,b", [((4,), (4,)), ((2, 4), (3, 4)), ((2, 3, 4), (5, 4)), ((), (3,))])
def test_inner(a, b):
    check_module(lambda x, y: torch.inner(x, y), torch.randn(a), torch.randn(b))


def test_vecdot():
    check_module(lambda x, y: (torch.linalg.vecdot(x, y), torch.linalg.vecdot(x, y, dim=1)), torch.randn(2, 3, 4),
                 torch.randn(3, 4))


def test_einsum_broadcast_size_one():
    check_module(lambda a, b: torch.einsum("bij,bjk->bik", a, b), torch.randn(1, 2, 3), torch.randn(4, 3, 5))
