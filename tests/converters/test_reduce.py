"""converters/reduce.py: reductions, max/min with indices, statistics, norms, softmax family, cumulative ops."""
import pytest
import torch
import torch.nn.functional as F
from harness import check_module, random_tensor as _make

X = (2, 3, 4)
DIMS = [None, 1, -1, (0, 2), [1, 2]]


def several(*fns):
    """One module computing every ``fn``: one conversion checks many ops (conversions are the slow part)."""
    return lambda *xs: tuple(fn(*xs) for fn in fns)


def _dim_kw(dim):
    return {} if dim is None else {"dim": dim}


_DIM_OPS = ["sum", "mean", "amax", "amin", "nansum", "logsumexp", "std", "var", "norm"]


def _reduce_over(op, dim, keepdim):
    kwargs = dict(_dim_kw(dim), keepdim=keepdim)
    if dim is None and op == "logsumexp":
        kwargs["dim"] = (0, 1, 2)
    if dim is None and op in ("sum", "mean", "nansum"):
        kwargs = {"dim": ()} if keepdim else {}  # keepdim needs a dim there; () means every dim
    return lambda x: getattr(torch, op)(x, **kwargs)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=str)
def test_reduce_dims(dim, keepdim):
    check_module(several(*[_reduce_over(op, dim, keepdim) for op in _DIM_OPS]), torch.randn(X))


@pytest.mark.parametrize("fn", [
    lambda x: x.sum(), lambda x: x.mean(), lambda x: x.prod(), lambda x: x.prod(1), lambda x: torch.prod(x, -1, True),
    lambda x: x.sum(dtype=torch.float16), lambda x: x.mean((2, 3), keepdim=True), lambda x: x.amax(),
    lambda x: torch.sum(x, [1], True), lambda x: x.nanmean(1), lambda x: x.var(1, unbiased=False),
    lambda x: x.std(False), lambda x: torch.var(x, 1, True, True), lambda x: torch.std(x, (1, 2), correction=0),
    lambda x: x.var(correction=2), lambda x: torch.var_mean(x, 1), lambda x: torch.std_mean(x, (2, 3), keepdim=True),
], ids=["sum_all", "mean_all", "prod_all", "prod_dim", "prod_keep", "sum_dtype", "mean_se", "amax_all",
        "sum_list", "nanmean", "var_biased", "std_unbiased_positional", "var_positional", "std_correction0",
        "var_correction2", "var_mean", "std_mean"])
def test_reduce_calls(fn):
    check_module(fn, torch.randn(2, 3, 4, 5) * 0.5 + 1)


@pytest.mark.parametrize("fn", [
    lambda x: x.sum(), lambda x: x.sum(1), lambda x: x.prod(1), lambda x: x.amax(0), lambda x: x.max(),
    lambda x: x.max(1), lambda x: x.argmin(), lambda x: x.cumsum(1), lambda x: (x > 0).sum(1),
    lambda x: (x > 0).any(1), lambda x: x.count_nonzero(1), lambda x: x.float().mean(0),
    lambda x: x.sum(1, dtype=torch.float32),
], ids=["sum", "sum_dim", "prod", "amax", "max", "max_dim", "argmin", "cumsum", "bool_sum", "any", "count_nonzero",
        "mean", "sum_dtype"])
def test_reduce_int(fn):
    check_module(fn, torch.randint(-4, 5, (3, 5)))


def test_reduce_int32():
    check_module(several(lambda x: x.sum(1), lambda x: x.amax(0), lambda x: x.max(1), lambda x: x.argmin(),
                         lambda x: x.cumsum(1), lambda x: x.prod(1)), torch.randint(-4, 5, (3, 5), dtype=torch.int32))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_min_with_dim(dim, keepdim):
    check_module(lambda x: (torch.max(x, dim, keepdim), torch.min(x, dim, keepdim)), torch.randn(X))


@pytest.mark.parametrize("fn", [
    lambda x, y: torch.max(x), lambda x, y: x.min(), lambda x, y: torch.max(x, y), lambda x, y: x.min(y),
    lambda x, y: x.max(dim=2).values, lambda x, y: x.min(dim=1)[1], lambda x, y: torch.max(x, 1, keepdim=True)[0],
    lambda x, y: torch.max(x, other=y),
], ids=["max_all", "min_all", "binary_max", "binary_min", "values", "indices", "keep", "other_kw"])
def test_max_min_forms(fn):
    check_module(fn, torch.randn(X), torch.randn(4))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [None, 0, 2, -2])
def test_arg(dim, keepdim):
    check_module(lambda x: (torch.argmax(x, dim, keepdim), torch.argmin(x, dim, keepdim)), torch.randn(X))


@pytest.mark.parametrize("fn", [
    lambda x: x.argmax(1), lambda x: x.argmin(0), lambda x: x.max(1), lambda x: x.min(1, keepdim=True),
    lambda x: x.argmax(), lambda x: x[0].max(0),
], ids=["argmax", "argmin", "max", "min", "argmax_all", "max_1d"])
def test_ties_take_the_first_index(fn):
    check_module(fn, torch.tensor([[1, 3, 3, 0], [2, 2, 1, 2], [0, 0, 0, 0]]))


@pytest.mark.parametrize("fn", [
    lambda x: x.all(), lambda x: x.any(), lambda x: x.all(1), lambda x: x.any(-1, keepdim=True),
    lambda x: torch.all(x, dim=0), lambda x: (x.int() * 2).any(1), lambda x: x.float().all(), lambda x: x.max(1),
    lambda x: x.sum(), lambda x: x.amax(1), lambda x: x.int().argmax(1), lambda x: x.min(0),
], ids=["all", "any", "all_dim", "any_keep", "all_kw", "any_int", "all_float", "max_dim", "sum", "amax", "argmax",
        "min_dim"])
def test_bool_reductions(fn):
    x = torch.rand(3, 4) > 0.3
    x[0] = True
    check_module(fn, x)


@pytest.mark.parametrize("fn", [
    lambda x: x.norm(), lambda x: x.norm(dim=1), lambda x: x.norm(p=1, dim=-1, keepdim=True),
    lambda x: torch.norm(x, float("inf"), dim=2), lambda x: torch.linalg.vector_norm(x, 3, dim=(1, 2)),
    lambda x: torch.linalg.vector_norm(x, 0), lambda x: torch.linalg.vector_norm(x, -float("inf"), 1),
    lambda x: torch.linalg.norm(x, dim=1), lambda x: torch.linalg.norm(x), lambda x: torch.norm(x, "fro", (1, 2)),
    lambda x: torch.linalg.norm(x, 1, dim=-1), lambda x: x.norm(0.5, 1),
], ids=["fro", "dim", "l1_keep", "inf", "l3_dims", "l0", "neg_inf", "linalg_dim", "linalg_all", "fro_dims",
        "linalg_l1", "p_half"])
def test_norms(fn):
    x = torch.randn(X)
    x[0, 0, 0] = 0.0
    check_module(fn, x)


@pytest.mark.parametrize("dim, shape", [(d, s) for s in [(5,), (2, 3, 4), (1, 2, 3, 4)] for d in (0, 1, -1)
                                         if d < len(s)], ids=str)
def test_softmax_family(dim, shape):
    check_module(lambda x: (F.softmax(x, dim), F.log_softmax(x, dim), F.softmin(x, dim)), torch.randn(shape) * 4)


@pytest.mark.parametrize("fn", [
    lambda x: torch.softmax(x, 1), lambda x: x.softmax(-1), lambda x: x.log_softmax(1),
    lambda x: torch.log_softmax(x, 0),
    lambda x: F.softmax(x, 1, dtype=torch.float32), lambda x: torch.special.softmax(x, 2),
    lambda x: torch.nn.Softmax(dim=1)(x), lambda x: torch.nn.LogSoftmax(dim=-1)(x), lambda x: torch.nn.Softmin(1)(x),
    lambda x: torch.nn.Softmax2d()(x), lambda x: F.softmax(x, dim=None, _stacklevel=5),
], ids=["torch", "method", "log_method", "torch_log", "dtype", "special", "module", "log_module", "softmin_module",
        "softmax2d", "implicit_dim"])
def test_softmax_forms(fn):
    check_module(fn, torch.randn(2, 3, 4) * 4)


def test_log_softmax_far_tail():
    # log(softmax) underflows to -inf here; log_softmax must not.
    check_module(lambda x: F.log_softmax(x, -1), torch.tensor([[0.0, -200.0, 100.0], [1.0, 2.0, 3.0]]))


def test_logsumexp_infinite_slices():
    x = torch.tensor([[-float("inf"), -float("inf")], [1.0, -float("inf")], [3.0, 4.0]])
    check_module(lambda x: torch.logsumexp(x, 1), x)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumulative(dim):
    check_module(lambda x: (torch.cumsum(x, dim), torch.cumprod(x, dim)), torch.randn(X))


@pytest.mark.parametrize("fn", [
    lambda x: x.cumsum(1, dtype=torch.float32), lambda x: x.cumprod(1), lambda x: (x > 0).cumsum(0),
    lambda x: (x * 1).cumsum_(1),
], ids=["cumsum_dtype", "cumprod_zero_neg", "cumsum_bool", "cumsum_"])
def test_cumulative_forms(fn):
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0], [2.0, 0.0, -1.0, 4.0], [-1.0, -1.0, -2.0, 0.5]])
    check_module(fn, x)


def test_cumprod_int():
    check_module(lambda x: x.cumprod(1), torch.tensor([[1, -2, 3, 2], [2, 0, -1, 4]]))


@pytest.mark.parametrize("fn", [
    lambda x: x.mean((2, 3), keepdim=True), lambda x: x.sum(1), lambda x: F.softmax(x, 1), lambda x: x.var(1),
    lambda x: x.norm(dim=1), lambda x: F.log_softmax(x, -1), lambda x: x.amax(1), lambda x: x.cumsum(3),
], ids=["mean_se", "sum", "softmax", "var", "norm", "log_softmax", "amax", "cumsum"])
def test_fp16(fn):
    check_module(fn, torch.randn(2, 8, 6, 6), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("fn", [
    lambda x: torch.topk(x, 2), lambda x: x.topk(2, dim=0, largest=False), lambda x: torch.topk(x, 1, 1),
    lambda x: torch.sort(x), lambda x: x.sort(dim=0, descending=True), lambda x: torch.argsort(x, 1),
    lambda x: x.argsort(descending=True), lambda x: x[0, 0].topk(2), lambda x: x[0, 0].sort(),
    lambda x: x.kthvalue(2), lambda x: torch.kthvalue(x, 1, 0, True), lambda x: x.median(), lambda x: x.median(1),
    lambda x: torch.median(x, -1, keepdim=True), lambda x: x[0, 0].median(0), lambda x: torch.aminmax(x),
    lambda x: x.aminmax(dim=1, keepdim=True),
], ids=["topk", "topk_smallest", "topk_1", "sort", "sort_desc", "argsort", "argsort_desc", "topk_1d", "sort_1d",
        "kthvalue", "kthvalue_keep", "median_all", "median_dim", "median_keep", "median_1d", "aminmax",
        "aminmax_dim"])
def test_topk_sort(fn):
    check_module(fn, torch.randn(X))


def test_max_with_nan_points_at_the_nan():
    x = torch.tensor([[1.0, float("nan"), 3.0], [2.0, 0.5, 1.0]])
    check_module(lambda x: (x.max(1), x.argmax(1), x.argmin(1)), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.bool])
def test_cummax_cummin(dtype):
    x = _make((3, 5, 4), dtype) if dtype != torch.int32 else torch.randint(-3, 3, (3, 5, 4), dtype=dtype)  # ties
    check_module(lambda t: [*torch.cummax(t, 1), *torch.cummin(t, -1), *t.cummax(0), *torch.cummin(t[0, 0, 0], 0)], x)


def test_cummax_cummin_after_nan():
    x = torch.tensor([[1.0, 3.0, 3.0, float("nan"), 2.0, float("nan"), 5.0], [2.0, 1.0, 1.0, 0.0, 4.0, 4.0, -1.0]])
    check_module(lambda t: [*torch.cummax(t, 1), *torch.cummin(t, 1)], x)



@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_sum_to_size(dtype):
    check_module(lambda t: [t.sum_to_size(1, 4), t.sum_to_size((1, 3, 1)), t.sum_to_size(2, 3, 4), t.sum_to_size(1)],
                 _make((2, 3, 4), dtype))



def test_logcumsumexp():
    inf = float("inf")
    check_module(lambda t, s: [torch.logcumsumexp(t, 1), t.logcumsumexp(-1), torch.logcumsumexp(s, 0)],
                 torch.randn(2, 5, 3) * 10, torch.tensor([-inf, -1000.0, 0.0, 1.0, inf, 2.0, -inf]))
