"""Matrix and grid ops built from slices, gathers and masks: triangles and diagonals, cross products,
distances, grids and combinations, Kronecker products, rotations, differences and integrals, matrix
powers and norms, FFT shifts and ``as_strided``.

TensorRT has no layer for any of these. Diagonals are one strided slice of the flattened matrix,
triangles and embedded diagonals a select against a mask, ``as_strided`` one gather of the positions
its strides read, and the linear maps along one dim that PyTorch computes with a stencil
(``torch.gradient``) one matrix multiply by the stencil's matrix.
"""
from __future__ import annotations

import itertools
import math
import operator

import torch

from torch2x.context import ConversionError, sizes
from torch2x.flavour import trt
from torch2x.registry import converter
from torch2x.shapes import is_traced

from .elementwise import FLOATS, aliases, binary, out_type, select
from .linear import matmul
from .reduce import _norm, reduce, vector_norm
from .shape import _reversed

DT = trt.DataType
Op = trt.ElementWiseOperation
Red = trt.ReduceOperation


def _static(op: str, *sizes_: object) -> None:
    """Refuse a size that depends on a dynamic dim where the op's layout needs it fixed."""
    if any(is_traced(s) for s in sizes_):
        raise ConversionError(f"{op} needs a fixed size on the dims it rearranges; make those dims static")


def empty(ctx, like, shape) -> trt.ITensor:
    """A tensor of ``like``'s type whose ``shape`` holds a 0: a zero-length slice of it, reshaped (TensorRT
    takes empty tensors; a constant cannot be empty). For ops whose PyTorch result is empty."""
    flat = ctx.reshape(like, (-1,)) if len(like.shape) != 1 else like
    return ctx.reshape(ctx.slice(flat, (0,), (0,)), shape)


def _last_two(ctx, x, dim1: int, dim2: int):
    """``x`` with axes ``dim1``, ``dim2`` moved last (the others keep their order), and those two axes."""
    rank = len(x.shape)
    a1, a2 = ctx.axis(dim1, rank), ctx.axis(dim2, rank)
    if a1 == a2:
        raise ConversionError(f"diagonal dims {dim1} and {dim2} are the same axis")
    return ctx.permute(x, [a for a in range(rank) if a not in (a1, a2)] + [a1, a2])


def _diagonal(ctx, x, offset: int, dim1: int, dim2: int):
    """``torch.diagonal(x, offset, dim1, dim2)``: the two axes moved last and merged, then one slice
    whose stride (a row plus one) walks the diagonal."""
    y = _last_two(ctx, x, dim1, dim2)
    *lead, n1, n2 = ctx.dims(y)
    _static("diagonal", n1, n2)
    length = min(n1, n2 - offset) if offset >= 0 else min(n1 + offset, n2)
    if length <= 0:
        return empty(ctx, y, (*lead, 0))
    flat = ctx.reshape(y, (*lead, n1 * n2))
    start = offset if offset >= 0 else -offset * n2
    k = len(lead)
    return ctx.slice(flat, [0] * k + [start], (*lead, length), [1] * k + [n2 + 1])


@converter("torch.diagonal", "torch.Tensor.diagonal", "torch.diagonal_copy",
           signature="input, offset=0, dim1=0, dim2=1")
def diagonal(ctx, call):
    return _diagonal(ctx, ctx.trt(call.arg("input")), int(call.arg("offset")), call.arg("dim1"), call.arg("dim2"))


@converter("torch.linalg.diagonal", signature="A, *, offset=0, dim1=-2, dim2=-1")
def linalg_diagonal(ctx, call):
    return _diagonal(ctx, ctx.trt(call.arg("A")), int(call.arg("offset")), call.arg("dim1"), call.arg("dim2"))


# (host comparison, network comparison, the integer bound it compares with, given the offset)
_BANDS = {"<=": (operator.le, Op.LESS, 1), ">=": (operator.ge, Op.GREATER, -1), "==": (operator.eq, Op.EQUAL, 0)}


def _band_mask(ctx, n, m, offset: int, keep: str):
    """A bool ``[n, m]`` mask of the positions whose column minus row ``d`` satisfies ``d keep offset``
    (``keep`` one of ``<=``, ``>=``, ``==``): a constant for static sizes, else aranges compared at run time."""
    host, op, shift = _BANDS[keep]
    if not (is_traced(n) or is_traced(m)):
        d = torch.arange(m).reshape(1, m) - torch.arange(n).reshape(n, 1)
        return ctx.constant(host(d, offset), DT.BOOL)
    d = ctx.elementwise(ctx.reshape(ctx.arange(m), (1, m)), ctx.reshape(ctx.arange(n), (n, 1)), Op.SUB)
    return ctx.elementwise(d, offset + shift, op)


def _triangle(keep):
    def convert(ctx, call):
        source = call.arg("input")
        x = ctx.trt(source)
        if len(x.shape) < 2:
            raise ConversionError(f"{call.op} of a tensor with fewer than 2 dims")
        n, m = ctx.dims(x)[-2:]
        mask = _band_mask(ctx, n, m, int(call.arg("diagonal")), keep)
        return select(ctx, mask, x, 0, x.dtype)

    return convert


converter(*aliases("tril"), signature="input, diagonal=0, *, out=None")(_triangle("<="))
converter(*aliases("triu"), signature="input, diagonal=0, *, out=None")(_triangle(">="))


def _diag_embed(ctx, x, offset: int, dim1: int, dim2: int):
    """``torch.diag_embed``: the last dim of ``x`` padded to the matrix size and broadcast along rows
    (or columns, below the main diagonal), then a select against the diagonal's mask; the two new axes
    are moved to ``dim1``, ``dim2``."""
    *lead, n = ctx.dims(x)
    _static("diag_embed", n)
    m = n + abs(offset)
    k = len(lead)
    padded = ctx.slice(x, [0] * (k + 1), (*lead, m), mode=trt.SampleMode.FILL) if m != n else x
    values = ctx.reshape(padded, (*lead, m, 1) if offset >= 0 else (*lead, 1, m))
    out = select(ctx, _band_mask(ctx, m, m, offset, "=="), values, 0, x.dtype)
    rank = k + 2
    a1, a2 = ctx.axis(dim1, rank), ctx.axis(dim2, rank)
    if a1 == a2:
        raise ConversionError(f"diag_embed dims {dim1} and {dim2} are the same axis")
    others = iter(range(k))
    return ctx.permute(out, [k if a == a1 else k + 1 if a == a2 else next(others) for a in range(rank)])


@converter("torch.diag_embed", "torch.Tensor.diag_embed", signature="input, offset=0, dim1=-2, dim2=-1")
def diag_embed(ctx, call):
    return _diag_embed(ctx, ctx.trt(call.arg("input")), int(call.arg("offset")), call.arg("dim1"), call.arg("dim2"))


@converter("torch.diag", "torch.Tensor.diag", signature="input, diagonal=0, *, out=None")
def diag(ctx, call):
    x = ctx.trt(call.arg("input"))
    offset = int(call.arg("diagonal"))
    if len(x.shape) == 1:
        return _diag_embed(ctx, x, offset, 0, 1)
    return _diagonal(ctx, x, offset, 0, 1)


@converter("torch.diagflat", "torch.Tensor.diagflat", signature="input, offset=0")
def diagflat(ctx, call):
    source = call.arg("input")
    return _diag_embed(ctx, ctx.reshape(ctx.trt(source), (source.numel(),)), int(call.arg("offset")), 0, 1)


@converter("torch.trace", "torch.Tensor.trace", signature="input")
def trace(ctx, call):
    x = ctx.trt(call.arg("input"), ctx.dtype_for(call.output.dtype))
    return reduce(ctx, _diagonal(ctx, x, 0, 0, 1), Red.SUM, 0, False)


@converter("torch.block_diag", signature="*tensors")
def block_diag(ctx, call):
    # Each block padded with zeros to the full width at its column offset (one FILL slice), then the
    # blocks stacked by rows.
    dtype = ctx.dtype_for(call.output.dtype)
    blocks = []
    for t in call.arg("tensors"):
        shape = (1, 1) if t.dim() == 0 else (1, t.shape[0]) if t.dim() == 1 else sizes(t)
        blocks.append(ctx.reshape(ctx.trt(t, dtype), shape))
    width = call.output.shape[1]
    rows, offset = [], 0
    for b in blocks:
        r, c = ctx.dims(b)
        _static("block_diag", r, c)
        rows.append(ctx.slice(b, (0, -offset), (r, width), mode=trt.SampleMode.FILL) if c != width else b)
        offset += c
    if len(rows) == 1:
        return rows[0]
    layer = ctx.network.add_concatenation(rows)
    layer.axis = 0
    return layer.get_output(0)


# ----------------------------------------------------------------------------- products and distances

def _rotated(ctx, x, axis: int, shift: int):
    """``x`` along ``axis`` (size 3) read from index ``i + shift`` (mod 3): one gather."""
    index = ctx.constant(torch.tensor([(i + shift) % 3 for i in range(3)]), DT.INT64)
    return ctx.network.add_gather(x, index, axis).get_output(0)


def _cross(ctx, call, dim):
    out = call.output
    dtype = ctx.dtype_for(out.dtype)
    shape = sizes(out)
    a = ctx.expand(ctx.trt(call.arg("input"), dtype), shape)
    b = ctx.expand(ctx.trt(call.arg("other"), dtype), shape)
    if dim is None:  # torch.cross's deprecated default: the first dim of size 3
        dim = next(d for d, n in enumerate(shape) if n == 3)
    axis = ctx.axis(dim, len(shape))
    # (a x b)_i = a_{i+1} b_{i+2} - a_{i+2} b_{i+1}
    left = ctx.elementwise(_rotated(ctx, a, axis, 1), _rotated(ctx, b, axis, 2), Op.PROD)
    right = ctx.elementwise(_rotated(ctx, a, axis, 2), _rotated(ctx, b, axis, 1), Op.PROD)
    return ctx.elementwise(left, right, Op.SUB)


@converter("torch.cross", "torch.Tensor.cross", signature="input, other, dim=None, *, out=None")
def cross(ctx, call):
    return _cross(ctx, call, call.arg("dim"))


@converter("torch.linalg.cross", signature="input, other, *, dim=-1, out=None")
def linalg_cross(ctx, call):
    return _cross(ctx, call, call.arg("dim"))


@converter("torch.cdist", signature="x1, x2, p=2.0, compute_mode=None", fp32=True)
def cdist(ctx, call):
    # Every pair's difference [..., P, R, M] and its p-norm over M (PyTorch's matrix-multiply shortcut
    # for p=2 is a speed trick that rounds differently; the direct form is the definition).
    dtype = out_type(ctx, call)
    x1, x2 = ctx.trt(call.arg("x1"), dtype), ctx.trt(call.arg("x2"), dtype)
    *b1, p, m = ctx.dims(x1)
    *b2, r, _ = ctx.dims(x2)
    diff = ctx.elementwise(ctx.reshape(x1, (*b1, p, 1, m)), ctx.reshape(x2, (*b2, 1, r, m)), Op.SUB)
    return vector_norm(ctx, diff, call.arg("p"), -1, False)


@converter("torch.dist", "torch.Tensor.dist", signature="input, other, p=2", fp32=True)
def dist(ctx, call):
    dtype = ctx.dtype_for(call.output.dtype)
    diff = ctx.elementwise(ctx.trt(call.arg("input"), dtype), ctx.trt(call.arg("other"), dtype), Op.SUB)
    return vector_norm(ctx, diff, call.arg("p"), None, False)


def _cov(ctx, call, source, dtype):
    """torch.cov as PyTorch computes it: (weighted) means removed, X @ (w X)^T over the normalizer (0 when
    it is not positive, as PyTorch sets it)."""
    x = ctx.trt(source, dtype)
    if len(x.shape) < 2:
        x = ctx.reshape(x, (1, -1))
    _, n = ctx.dims(x)
    fweights, aweights = call.arg("fweights", None), call.arg("aweights", None)
    correction = call.arg("correction", 1)
    w = None
    for weights in (fweights, aweights):
        if weights is not None:
            t = ctx.reshape(ctx.trt(weights, dtype), (1, n))
            w = t if w is None else ctx.elementwise(w, t, Op.PROD)
    if w is None:
        mean = reduce(ctx, x, Red.AVG, 1, True)
        norm = ctx.scalar(float(max(n - correction, 0)), dtype)
    else:
        total = reduce(ctx, w, Red.SUM, 1, True)
        mean = ctx.elementwise(reduce(ctx, ctx.elementwise(x, w, Op.PROD), Red.SUM, 1, True), total, Op.DIV)
        norm = total
        if aweights is not None and correction != 0:
            spread = reduce(ctx, ctx.elementwise(w, ctx.reshape(ctx.trt(aweights, dtype), (1, n)), Op.PROD),
                            Red.SUM, 1, True)
            norm = ctx.elementwise(total, ctx.elementwise(ctx.elementwise(spread, float(correction), Op.PROD),
                                                           total, Op.DIV), Op.SUB)
        elif correction != 0:
            norm = ctx.elementwise(total, float(correction), Op.SUB)
        norm = ctx.elementwise(norm, 0.0, Op.MAX)  # PyTorch sets a non-positive normalizer to 0
    centered = ctx.elementwise(x, mean, Op.SUB)
    weighted = centered if w is None else ctx.elementwise(centered, w, Op.PROD)
    c = matmul(ctx, centered, weighted, dtype, transpose_b=True)
    return ctx.elementwise(c, ctx.reshape(norm, ()) if len(norm.shape) else norm, Op.DIV)


@converter("torch.cov", "torch.Tensor.cov", signature="input, *, correction=1, fweights=None, aweights=None",
           fp32=True)
def cov(ctx, call):
    return ctx.reshape(_cov(ctx, call, call.arg("input"), out_type(ctx, call)), sizes(call.output))


@converter("torch.corrcoef", "torch.Tensor.corrcoef", signature="input", fp32=True)
def corrcoef(ctx, call):
    dtype = out_type(ctx, call)
    c = _cov(ctx, call, call.arg("input"), dtype)
    k = ctx.dims(c)[0]
    if k == 1 and call.output.dim() == 0:  # one variable: c / c
        return ctx.reshape(ctx.elementwise(c, c, Op.DIV), ())
    std = ctx.unary(_diagonal(ctx, c, 0, 0, 1), trt.UnaryOperation.SQRT)
    c = ctx.elementwise(ctx.elementwise(c, ctx.reshape(std, (k, 1)), Op.DIV), ctx.reshape(std, (1, k)), Op.DIV)
    return ctx.elementwise(ctx.elementwise(c, -1.0, Op.MAX), 1.0, Op.MIN)


@converter("torch.nn.functional.pdist", "torch.pdist", signature="input, p=2", fp32=True)
def pdist(ctx, call):
    # The rows of every pair i < j (row-major, as PyTorch orders them) gathered, subtracted, and normed.
    source = call.arg("input")
    n = source.shape[0]
    pairs = list(itertools.combinations(range(n), 2))
    x = ctx.trt(source, ctx.dtype_for(call.output.dtype))
    if not pairs:
        return empty(ctx, x, (0,))
    first, second = (ctx.constant(torch.tensor(side), DT.INT64) for side in zip(*pairs, strict=True))
    diff = ctx.elementwise(ctx.network.add_gather(x, first, 0).get_output(0),
                           ctx.network.add_gather(x, second, 0).get_output(0), Op.SUB)
    return vector_norm(ctx, diff, call.arg("p"), -1, False)


@converter("torch.kron", "torch.Tensor.kron", signature="input, other, *, out=None")
def kron(ctx, call):
    # Interleave the dims: a as [a0, 1, a1, 1, ...], b as [1, b0, 1, b1, ...]; their product reshaped
    # merges each pair into a0*b0, a1*b1, ...
    dtype = out_type(ctx, call)
    a, b = call.arg("input"), call.arg("other")
    rank = max(a.dim(), b.dim())
    sa = (1,) * (rank - a.dim()) + sizes(a)
    sb = (1,) * (rank - b.dim()) + sizes(b)
    ta = ctx.reshape(ctx.trt(a, dtype), [d for n in sa for d in (n, 1)])
    tb = ctx.reshape(ctx.trt(b, dtype), [d for n in sb for d in (1, n)])
    return ctx.reshape(binary(ctx, ta, tb, Op.PROD, dtype), sizes(call.output))


def _matmul(ctx, a, b):
    """``a @ b`` for network tensors of equal rank >= 2; integers (which TensorRT's matrix multiply
    refuses) as a broadcast product summed over the shared dim."""
    if a.dtype in FLOATS:
        return ctx.network.add_matrix_multiply(a, trt.MatrixOperation.NONE, b, trt.MatrixOperation.NONE).get_output(0)
    *lead, n, k = ctx.dims(a)
    m = ctx.dims(b)[-1]
    product = ctx.elementwise(ctx.reshape(a, (*lead, n, k, 1)), ctx.reshape(b, (*ctx.dims(b)[:-2], 1, k, m)), Op.PROD)
    return reduce(ctx, product, Red.SUM, -2, False)


@converter("torch.linalg.matrix_power", "torch.matrix_power", "torch.Tensor.matrix_power",
           signature="input, n, *, out=None")
def matrix_power(ctx, call):
    source, n = call.arg("input"), int(call.arg("n"))
    x = ctx.trt(source)
    if n < 0:
        raise ConversionError("matrix_power with a negative exponent needs a matrix inverse, which TensorRT "
                              "has no layer for")
    if n == 0:
        k = source.shape[-1]
        return ctx.expand(ctx.constant(torch.eye(k), x.dtype), sizes(source))
    result, power = None, x
    while n:  # square-and-multiply: about 2 log2(n) matrix multiplies
        if n & 1:
            result = power if result is None else _matmul(ctx, result, power)
        n >>= 1
        if n:
            power = _matmul(ctx, power, power)
    return result


def _substitute(ctx, a, b, upper: bool, unit: bool):
    """X with ``a @ X = b`` for triangular ``a`` (``[..., n, n]``, ``b`` ``[..., n, k]``, same batch dims),
    row by row as forward (or back) substitution does: n rounds of a slice, a matrix multiply with the
    rows found so far, a subtraction and a division by the diagonal entry."""
    *lead, n, k = ctx.dims(b)
    _static("triangular solve", n, k, *lead)
    z = [0] * len(lead)
    rows: dict = {}
    for i in (reversed(range(n)) if upper else range(n)):
        row = ctx.slice(b, z + [i, 0], (*lead, 1, k))
        done = sorted(rows)
        if done:
            known = rows[done[0]] if len(done) == 1 else ctx.network.add_concatenation([rows[j] for j in done])
            if len(done) > 1:
                known.axis = len(lead)
                known = known.get_output(0)
            coeffs = ctx.slice(a, z + [i, done[0]], (*lead, 1, len(done)))
            row = ctx.elementwise(row, matmul(ctx, coeffs, known, row.dtype), Op.SUB)
        if not unit:
            row = ctx.elementwise(row, ctx.slice(a, z + [i, i], (*lead, 1, 1)), Op.DIV)
        rows[i] = row
    if n == 1:
        return rows[0]
    layer = ctx.network.add_concatenation([rows[j] for j in range(n)])
    layer.axis = len(lead)
    return layer.get_output(0)


def _transposed(ctx, x):
    rank = len(x.shape)
    return ctx.permute(x, _swap(rank, rank - 2, rank - 1))


@converter("torch.linalg.solve_triangular", signature="A, B, *, upper, left=True, unitriangular=False, out=None",
           fp32=True)
def solve_triangular(ctx, call):
    dtype = out_type(ctx, call)
    shape = sizes(call.output)
    a, b = call.arg("A"), call.arg("B")
    if call.output.numel() == 0:  # a constant cannot be empty: slice a non-empty operand
        return empty(ctx, ctx.trt(a if ctx.is_traced(a) or a.numel() else b, dtype), shape)
    ta = ctx.expand(ctx.trt(a, dtype), shape[:-2] + tuple(a.shape[-2:]))
    tb = ctx.expand(ctx.trt(b, dtype), shape)
    upper, unit = bool(call.arg("upper")), bool(call.arg("unitriangular"))
    if call.arg("left"):
        return _substitute(ctx, ta, tb, upper, unit)
    # X A = B is A^T X^T = B^T, and A^T is triangular the other way
    return _transposed(ctx, _substitute(ctx, _transposed(ctx, ta), _transposed(ctx, tb), not upper, unit))


@converter("torch.triangular_solve", "torch.Tensor.triangular_solve",
           signature="input, A, upper=True, transpose=False, unitriangular=False", fp32=True)
def triangular_solve(ctx, call):
    solution, coefficient = call.output
    dtype = ctx.dtype_for(solution.dtype)
    a, b = call.arg("A"), call.arg("input")
    if solution.numel() == 0:  # empty batches or systems: empty results (a constant cannot be empty)
        tb = ctx.trt(b, dtype)
        coeffs = empty(ctx, tb, sizes(coefficient)) if coefficient.numel() == 0 else ctx.trt(a, dtype)
        return empty(ctx, tb, sizes(solution)), coeffs
    ta = ctx.expand(ctx.trt(a, dtype), sizes(coefficient))
    tb = ctx.expand(ctx.trt(b, dtype), sizes(solution))
    upper = bool(call.arg("upper"))
    if call.arg("transpose"):
        ta, upper = _transposed(ctx, ta), not upper
    return _substitute(ctx, ta, tb, upper, bool(call.arg("unitriangular"))), ctx.expand(ctx.trt(a, dtype),
                                                                                         sizes(coefficient))


@converter("torch.linalg.matrix_norm", signature="A, ord='fro', dim=(-2, -1), keepdim=False, *, dtype=None, out=None",
           fp32=True)
def matrix_norm(ctx, call):
    return _matrix_norm(ctx, call, call.arg("A"), call.arg("ord"), call.arg("dim"))


def _matrix_norm(ctx, call, source, ord, dim):
    x = ctx.trt(source, out_type(ctx, call))
    rank = len(x.shape)
    rows, cols = (ctx.axis(d, rank) for d in dim)
    keepdim = call.arg("keepdim")
    if ord == "fro":
        return vector_norm(ctx, x, 2, (rows, cols), keepdim)
    if ord in ("nuc", 2, -2):
        raise ConversionError(f"matrix norm ord={ord!r} needs singular values (an SVD), which TensorRT has no "
                              "layer for; 'fro', 1, -1, inf and -inf are supported")
    if ord not in (1, -1, math.inf, -math.inf):
        raise ConversionError(f"matrix norm ord={ord!r} is not a matrix norm")
    # ord=±1: the largest/smallest column sum of |a|; ord=±inf: the largest/smallest row sum.
    summed, kept = (rows, cols) if abs(ord) == 1 else (cols, rows)
    sums = reduce(ctx, ctx.unary(x, trt.UnaryOperation.ABS), Red.SUM, summed, True)
    out = reduce(ctx, sums, Red.MAX if ord > 0 else Red.MIN, kept, True)
    return out if keepdim else ctx.reshape(out, sizes(call.output))


_vector_norm = _norm("ord", 2)


@converter("torch.linalg.norm", signature="input, ord=None, dim=None, keepdim=False, *, out=None, dtype=None",
           fp32=True)
def linalg_norm(ctx, call):
    """torch.linalg.norm: a matrix norm when ``ord`` is given over two dims (or a 2-D input), else a
    vector norm (reduce.py's, which serves torch.norm and linalg.vector_norm too)."""
    source, ord, dim = call.arg("input"), call.arg("ord"), call.arg("dim")
    two_dims = (dim is None and source.dim() == 2) or (isinstance(dim, (tuple, list)) and len(dim) == 2)
    if ord is None or not two_dims:
        return _vector_norm(ctx, call)
    return _matrix_norm(ctx, call, source, ord, (-2, -1) if dim is None else dim)


def _powers(ctx, x, count: int, increasing: bool):
    """``x[..., None] ** [0, 1, ..., count - 1]`` (or decreasing) by repeated multiplication, which is exact
    for integers and is how PyTorch computes it (a running product)."""
    dims = ctx.dims(x)
    column = ctx.expand(ctx.scalar(1, x.dtype), dims)
    columns = []
    for k in range(count):
        columns.append(ctx.reshape(column, (*dims, 1)))
        if k + 1 < count:
            column = x if k == 0 else ctx.elementwise(column, x, Op.PROD)
    if not increasing:
        columns.reverse()
    if len(columns) == 1:
        return columns[0]
    layer = ctx.network.add_concatenation(columns)
    layer.axis = len(dims)
    return layer.get_output(0)


@converter("torch.linalg.vander", signature="x, *, N=None")
def linalg_vander(ctx, call):
    x = ctx.trt(call.arg("x"), ctx.dtype_for(call.output.dtype))
    return _powers(ctx, x if len(x.shape) else ctx.reshape(x, (1,)), call.output.shape[-1], True)  # 0-d: one row


@converter("torch.vander", signature="x, N=None, increasing=False")
def vander(ctx, call):
    return _powers(ctx, ctx.trt(call.arg("x"), ctx.dtype_for(call.output.dtype)), call.output.shape[-1],
                   call.arg("increasing"))


@converter("torch.renorm", "torch.Tensor.renorm", "torch.Tensor.renorm_",
           signature="input, p, dim, maxnorm, *, out=None", fp32=True)
def renorm(ctx, call):
    # Each slice along dim whose p-norm exceeds maxnorm is scaled to maxnorm (with PyTorch's 1e-7 guard).
    x = ctx.trt(call.arg("input"), out_type(ctx, call))
    rank = len(x.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    norm = vector_norm(ctx, x, call.arg("p"), [a for a in range(rank) if a != axis], True)
    maxnorm = float(call.arg("maxnorm"))
    factor = ctx.elementwise(maxnorm, ctx.elementwise(norm, 1e-7, Op.SUM), Op.DIV, x.dtype)
    over = ctx.elementwise(norm, maxnorm, Op.GREATER)
    return ctx.elementwise(x, select(ctx, over, factor, 1.0, x.dtype), Op.PROD)


# ----------------------------------------------------------------------------- grids and combinations

def _tensor_list(call, name: str) -> list:
    tensors = call.arg(name)
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tensors[0]
    return list(tensors)


@converter("torch.meshgrid", signature="*tensors, indexing=None")
def meshgrid(ctx, call):
    tensors = _tensor_list(call, "tensors")
    xy = call.arg("indexing") == "xy" and len(tensors) >= 2
    shape = [t.numel() for t in tensors]
    position = list(range(len(tensors)))
    if xy:  # 'xy' (Cartesian) swaps the first two output dims
        shape[0], shape[1] = shape[1], shape[0]
        position[0], position[1] = 1, 0
    outs = []
    for t, p in zip(tensors, position, strict=True):
        view = [1] * len(shape)
        view[p] = t.numel()
        outs.append(ctx.expand(ctx.reshape(ctx.trt(t, ctx.dtype_for(t.dtype)), view), shape))
    return outs


@converter("torch.cartesian_prod", signature="*tensors")
def cartesian_prod(ctx, call):
    tensors = _tensor_list(call, "tensors")
    dtype = out_type(ctx, call)
    if len(tensors) == 1:
        return ctx.trt(tensors[0], dtype)
    shape = [t.numel() for t in tensors]
    columns = []
    for k, t in enumerate(tensors):
        view = [1] * (len(shape) + 1)
        view[k] = t.numel()
        columns.append(ctx.expand(ctx.reshape(ctx.trt(t, dtype), view), shape + [1]))
    layer = ctx.network.add_concatenation(columns)
    layer.axis = len(shape)
    return ctx.reshape(layer.get_output(0), (math.prod(shape), len(tensors)))


@converter("torch.combinations", signature="input, r=2, with_replacement=False")
def combinations(ctx, call):
    source, r = call.arg("input"), int(call.arg("r"))
    pick = itertools.combinations_with_replacement if call.arg("with_replacement") else itertools.combinations
    index = list(pick(range(source.numel()), r))
    x = ctx.trt(source)
    if not index or r == 0:
        return empty(ctx, x, sizes(call.output))
    return ctx.network.add_gather(x, ctx.constant(torch.tensor(index), DT.INT64), 0).get_output(0)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


@converter("torch.nn.functional.unfold", signature="input, kernel_size, dilation=1, padding=0, stride=1")
def unfold(ctx, call):
    # im2col: the zero-padded image flattened per channel, and one gather of every window's pixels in
    # PyTorch's (kernel position, window) order (exact for any values, no multiply by a one-hot kernel).
    source = call.arg("input")
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (_pair(call.arg(k)) for k in ("kernel_size", "dilation", "padding",
                                                                             "stride"))
    x = ctx.trt(source)
    *lead, h, w = ctx.dims(x)
    _static("unfold", h, w)
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    rank = len(lead) + 2
    if ph or pw:
        x = ctx.slice(x, [0] * len(lead) + [-ph, -pw], (*lead, hp, wp), mode=trt.SampleMode.FILL)
    x = ctx.reshape(x, (*lead, hp * wp))
    rows = (torch.arange(oh) * sh).reshape(1, 1, oh, 1) + (torch.arange(kh) * dh).reshape(kh, 1, 1, 1)
    cols = (torch.arange(ow) * sw).reshape(1, 1, 1, ow) + (torch.arange(kw) * dw).reshape(1, kw, 1, 1)
    index = (rows * wp + cols).reshape(kh * kw, oh * ow)
    y = ctx.network.add_gather(x, ctx.constant(index, DT.INT64), rank - 2).get_output(0)  # [..., C, K, L]
    return ctx.reshape(y, sizes(call.output))


# ----------------------------------------------------------------------------- rotations and shifts

def _swap(rank: int, a: int, b: int) -> list:
    order = list(range(rank))
    order[a], order[b] = b, a
    return order


@converter("torch.rot90", "torch.Tensor.rot90", signature="input, k=1, dims=(0, 1)")
def rot90(ctx, call):
    x = ctx.trt(call.arg("input"))
    rank = len(x.shape)
    a, b = (ctx.axis(d, rank) for d in call.arg("dims"))
    k = int(call.arg("k")) % 4
    if k == 0:
        return x
    if k == 2:
        return _reversed(ctx, x, {a, b})
    # k=1: flip dims[1], then swap; k=3: flip dims[0], then swap (PyTorch's own decomposition)
    return ctx.permute(_reversed(ctx, x, {b if k == 1 else a}), _swap(rank, a, b))


def _fft_shift(inverse: bool):
    def convert(ctx, call):
        # A WRAP slice starting at the shift rolls every axis at once, at any (dynamic) size.
        x = ctx.trt(call.arg("input"))
        rank = len(x.shape)
        dims = call.arg("dim")
        axes = range(rank) if dims is None else [ctx.axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims)]
        size = ctx.dims(x)
        start = [0] * rank
        for a in axes:  # fftshift: out[i] = in[(i - n//2) mod n]; ifftshift: in[(i + n//2) mod n]
            start[a] = size[a] // 2 if inverse else size[a] - size[a] // 2
        return ctx.slice(x, start, size, mode=trt.SampleMode.WRAP)

    return convert


converter("torch.fft.fftshift", signature="input, dim=None")(_fft_shift(False))
converter("torch.fft.ifftshift", signature="input, dim=None")(_fft_shift(True))


# ----------------------------------------------------------------------------- differences and integrals

def _along(ctx, x, axis: int, start: int, length):
    """``x`` narrowed to ``[start, start + length)`` on ``axis``."""
    size = list(ctx.dims(x))
    begin = [0] * len(size)
    begin[axis], size[axis] = start, length
    return ctx.slice(x, begin, size)


@converter("torch.diff", "torch.Tensor.diff", signature="input, n=1, dim=-1, prepend=None, append=None, *, out=None")
def diff(ctx, call):
    source = call.arg("input")
    dtype = out_type(ctx, call)
    x = ctx.trt(source, dtype)
    rank = len(x.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    parts = []
    for name in ("prepend", "append"):
        extra = call.arg(name)
        if extra is not None:
            shape = list(ctx.dims(x))
            shape[axis] = extra.shape[axis] if isinstance(extra, torch.Tensor) and extra.dim() == rank else 1
            parts.append(ctx.expand(ctx.trt(extra, dtype), shape))
        else:
            parts.append(None)
    pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
    if len(pieces) > 1:
        layer = ctx.network.add_concatenation(pieces)
        layer.axis = axis
        x = layer.get_output(0)
    length = ctx.dims(x)[axis]
    _static("diff", length)
    for _ in range(int(call.arg("n"))):
        length -= 1
        if length <= 0:
            return empty(ctx, x, sizes(call.output))
        hi, lo = _along(ctx, x, axis, 1, length), _along(ctx, x, axis, 0, length)
        x = ctx.elementwise(hi, lo, Op.XOR if dtype == DT.BOOL else Op.SUB)  # torch: bool diff is xor
    return x


def _trapezoids(ctx, call):
    """The trapezoid areas along ``dim``: (y[1:] + y[:-1]) / 2 times the spacing (dx, or x's steps)."""
    dtype = out_type(ctx, call)
    y = ctx.trt(call.arg("y"), dtype)
    rank = len(y.shape)
    axis = ctx.axis(call.arg("dim"), rank)
    n = ctx.dims(y)[axis]
    _static(call.op, n)
    if n < 2:
        return None, axis
    mean = ctx.elementwise(ctx.elementwise(_along(ctx, y, axis, 1, n - 1), _along(ctx, y, axis, 0, n - 1), Op.SUM),
                           0.5, Op.PROD)
    x = call.arg("x")
    if x is None:
        dx = call.arg("dx")
        return (mean if dx is None or dx == 1 else ctx.elementwise(mean, float(dx), Op.PROD)), axis
    xt = ctx.trt(x, dtype)
    if x.dim() == 1:  # 1-D sample points along dim
        view = [1] * rank
        view[axis] = x.numel()
        xt, x_axis = ctx.reshape(xt, view), axis
    else:
        x_axis = ctx.axis(call.arg("dim"), x.dim())
    steps = ctx.elementwise(_along(ctx, xt, x_axis, 1, n - 1), _along(ctx, xt, x_axis, 0, n - 1), Op.SUB)
    return ctx.elementwise(mean, steps, Op.PROD), axis


_TRAPEZOID = "y, x=None, *, dx=None, dim=-1"


@converter("torch.trapezoid", "torch.trapz", signature=_TRAPEZOID, fp32=True)
def trapezoid(ctx, call):
    areas, axis = _trapezoids(ctx, call)
    if areas is None:  # one sample: zero area
        return ctx.expand(ctx.scalar(0.0, out_type(ctx, call)), sizes(call.output))
    return reduce(ctx, areas, Red.SUM, axis, False)


@converter("torch.cumulative_trapezoid", signature=_TRAPEZOID, fp32=True)
def cumulative_trapezoid(ctx, call):
    areas, axis = _trapezoids(ctx, call)
    if areas is None:
        return empty(ctx, ctx.trt(call.arg("y"), out_type(ctx, call)), sizes(call.output))
    layer = ctx.network.add_cumulative(areas, ctx.scalar(axis, DT.INT32), trt.CumulativeOperation.SUM, False, False)
    return layer.get_output(0)


def _spacings(spacing, count: int) -> list:
    """torch.gradient's ``spacing`` as one entry per differentiated dim (a number or a coordinate tensor)."""
    if spacing is None:
        return [1.0] * count
    if isinstance(spacing, (int, float)) or (isinstance(spacing, torch.Tensor) and spacing.dim() == 0):
        return [spacing] * count
    spacing = list(spacing)
    return spacing * count if len(spacing) == 1 else spacing


@converter("torch.gradient", signature="input, *, spacing=None, dim=None, edge_order=1", fp32=True)
def gradient(ctx, call):
    # PyTorch's stencil (central differences inside, one-sided of order edge_order at the ends, for
    # uniform or given coordinates) is linear along each dim: its matrix G, read off by applying
    # torch.gradient to the identity, turns it into one matrix multiply per dim.
    source = call.arg("input")
    dtype = out_type(ctx, call)
    x = ctx.trt(source, dtype)
    rank = len(x.shape)
    dims = call.arg("dim")
    axes = (list(range(rank)) if dims is None
            else [ctx.axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims)])
    outs = []
    for a, h in zip(axes, _spacings(call.arg("spacing"), len(axes)), strict=True):
        if ctx.is_traced(h):
            raise ConversionError("torch.gradient with coordinates computed in the network; pass constant spacing")
        n = ctx.dims(x)[a]
        _static("gradient", n)
        h = h.double() if isinstance(h, torch.Tensor) else float(h)
        g = torch.gradient(torch.eye(n, dtype=torch.float64), spacing=[h], dim=0, edge_order=call.arg("edge_order"))[0]
        y = matmul(ctx, ctx.permute(x, _swap(rank, a, rank - 1)), g.T.float(), dtype)
        outs.append(ctx.permute(y, _swap(rank, a, rank - 1)))
    return outs


# ----------------------------------------------------------------------------- as_strided

def strided_positions(ctx, source: torch.Tensor, size, stride, storage_offset) -> torch.Tensor:
    """The (row-major) element positions of ``source`` that ``source.as_strided(size, stride, storage_offset)``
    reads. as_strided addresses the input's storage: each storage position is mapped to the element stored
    there, and a pattern reaching storage the input does not cover is a ConversionError."""
    if any(d < 0 for d in ctx.trt(source).shape):
        raise ConversionError("as_strided of a tensor with dynamic dims: its strides are the example's")
    length = source.untyped_storage().nbytes() // source.element_size()
    owner = torch.full((length,), -1, dtype=torch.long)
    where = torch.arange(length).as_strided(source.shape, source.stride(), source.storage_offset())
    owner[where.reshape(-1)] = torch.arange(source.numel())
    offset = source.storage_offset() if storage_offset is None else int(storage_offset)
    positions = owner.as_strided(tuple(size), tuple(stride), offset)
    if (positions < 0).any():
        raise ConversionError("as_strided reads storage outside the input's elements (a view of a larger tensor); "
                              "apply it to the larger tensor, or clone the input first")
    return positions


@converter("torch.as_strided", "torch.Tensor.as_strided", "torch.as_strided_copy",
           signature="input, size, stride, storage_offset=None")
def as_strided(ctx, call):
    source = call.arg("input")
    positions = strided_positions(ctx, source, call.arg("size"), call.arg("stride"), call.arg("storage_offset"))
    flat = ctx.reshape(ctx.trt(source), (source.numel(),))
    if positions.numel() == 0:
        return empty(ctx, flat, sizes(positions))
    return ctx.network.add_gather(flat, ctx.constant(positions, DT.INT64), 0).get_output(0)
