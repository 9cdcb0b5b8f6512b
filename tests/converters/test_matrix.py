"""converters/matrix.py: triangles and diagonals, cross products, distances, grids, rotations, differences and
integrals, matrix powers and norms, FFT shifts, as_strided."""
import pytest
import torch

import torch2x
from harness import assert_reported, check_module, random_tensor as _make

DTYPES = [torch.float32, torch.int32, torch.bool]


# Several cases per conversion (outputs are compared one by one): tracing costs more than the layers.

@pytest.mark.parametrize("dtype", DTYPES)
def test_triangles(dtype):
    check_module(lambda *xs: [out for x in xs for out in (torch.tril(x), torch.triu(x, -2), x.tril(1), x.triu(7),
                                                          torch.tril(x, -9), x.clone().triu_(2))],
                 _make((4, 5), dtype), _make((5, 3), dtype), _make((2, 3, 4), dtype))


_DIAGONALS = [[(0, 0, 1), (2, 0, 1), (-3, 0, 1), (1, 1, 0), (4, -2, -1)], [(0, -1, 0), (1, 0, 2), (-1, 2, 1)],
              [(-1, 1, -1), (2, 0, 3)]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal(dtype):
    check_module(lambda *xs: [out for x, cases in zip(xs, _DIAGONALS, strict=True) for out in
                              [torch.diagonal(x, *case) for case in cases] +
                              [x.diagonal(dim1=-2, dim2=-1), torch.linalg.diagonal(x, offset=-1)]],
                 _make((4, 5), dtype), _make((2, 3, 4), dtype), _make((2, 3, 4, 5), dtype))


_EMBEDS = [[(0, -2, -1), (2, 0, 1), (-1, 1, 0)], [(-1, -2, -1), (1, 0, 2), (0, -1, 0)], [(-2, 1, 3), (3, 0, -1)]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_diag_embed(dtype):
    check_module(lambda *xs: [out for x, cases in zip(xs, _EMBEDS, strict=True) for out in
                              [torch.diag_embed(x, *case) for case in cases] + [x.diag_embed()]],
                 _make((4,), dtype), _make((2, 3), dtype), _make((2, 2, 3), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_diag_and_diagflat(dtype):
    check_module(lambda *xs: [out for x in xs for out in
                              (torch.diag(x), torch.diag(x, -2), x.diag(1), torch.diagflat(x), x.diagflat(-3))],
                 _make((4,), dtype), _make((3, 4), dtype), _make((5, 2), dtype))


def test_empty_results_are_empty_tensors():
    # TensorRT holds empty tensors (zero-length slices); PyTorch returns them for these arguments
    check_module(lambda x, v: [torch.diagonal(x, 5), torch.combinations(v[:2], 3), torch.diff(v[:3], 3),
                               torch.cumulative_trapezoid(x[:, :1]), torch.pdist(x[:1]), x.as_strided((2, 0), (1, 1)),
                               x.diff(2, 0) + 1],
                 torch.randn(2, 4), torch.randn(5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_trace_and_block_diag(dtype):
    check_module(lambda a, b, c, d: ([] if dtype == torch.bool else [torch.trace(a), b.trace()]) +  # no bool trace
                 [torch.block_diag(a, b, c, d), torch.block_diag(c), torch.block_diag(d, a)],
                 _make((3, 4), dtype), _make((3, 2), dtype), _make((2,), dtype), _make((), dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("shapes,dim", [(((4, 3), (4, 3)), -1), (((3, 3, 5), (3, 1, 5)), 0), (((2, 3), (1, 3)), 1)])
def test_cross(shapes, dim, dtype):
    check_module(lambda x, y: [torch.linalg.cross(x, y, dim=dim), x.cross(y, dim=dim), torch.cross(x, y)],
                 _make(shapes[0], dtype), _make(shapes[1], dtype))


@pytest.mark.parametrize("shapes", [((4, 3), (5, 3)), ((2, 4, 3), (2, 30, 3)), ((2, 1, 3, 2), (4, 5, 2))])
def test_cdist(shapes):
    check_module(lambda x, y: [torch.cdist(x, y, p=p) for p in (2.0, 1.0, 0.0, 3.0, float("inf"))],
                 torch.randn(shapes[0]), torch.randn(shapes[1]))


@pytest.mark.parametrize("shape", [(2, 6, 3), (7, 4)])
def test_pdist(shape):
    x = torch.randn(shape[-2:])
    check_module(lambda t: [torch.pdist(t), torch.nn.functional.pdist(t, 1.0), torch.pdist(t, 0.5),
                            torch.pdist(t, float("inf"))], x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_vander(dtype):
    check_module(lambda x, s: [torch.linalg.vander(x), torch.linalg.vander(x, N=2), torch.vander(x[0]),
                               torch.vander(x[1], 5, True), torch.linalg.vander(s, N=3), torch.vander(x[0], N=1)],
                 _make((2, 4), dtype) % 5, _make((), dtype) % 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron(dtype):
    check_module(lambda a, b, c: [torch.kron(a, b), torch.kron(b, c), a.kron(c)],
                 _make((2, 3), dtype), _make((3, 2), dtype), _make((2, 1, 3), dtype))


@pytest.mark.parametrize("indexing", ["ij", "xy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_meshgrid_and_cartesian_prod(indexing, dtype):
    a, b, c = _make((3,), dtype), _make((4,), dtype), _make((), dtype)
    check_module(lambda x, y, z: torch.meshgrid(x, y, z, indexing=indexing), a, b, c)
    check_module(lambda x, y: torch.meshgrid([x, y], indexing=indexing), a, b)
    check_module(lambda x, y, z: torch.cartesian_prod(x, y, z), a, b, _make((2,), dtype))
    check_module(lambda x: torch.cartesian_prod(x) + 0, a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_combinations(dtype):
    check_module(lambda x: [torch.combinations(x, r, replacement) for r, replacement in
                            ((2, False), (3, False), (2, True), (1, False), (4, True))], _make((4,), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rot90(dtype):
    cases = [(1, (0, 1)), (2, (0, 1)), (3, (1, 0)), (-1, (-1, 0)), (5, (1, 2)), (-6, (2, 0))]
    check_module(lambda x: [torch.rot90(x, k, dims) for k, dims in cases] + [x.rot90(), torch.rot90(x, 4) * 1],
                 _make((2, 3, 4), dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_fft_shifts(dtype):
    check_module(lambda x: [op(x, dim=dim) for op in (torch.fft.fftshift, torch.fft.ifftshift)
                            for dim in (None, 0, -1, (0, 2))], _make((3, 4, 5), dtype))


def test_fft_shift_follows_a_dynamic_dim():
    def fn(x):
        return torch.fft.fftshift(x, dim=0)

    net = torch2x.build_network(fn, [torch.randn(5, 2)], input_names=["x"], dynamic_shapes={"x": {0: (1, 5, 8)}})
    for n in (1, 4, 5, 8):
        x = torch.randn(n, 2)
        assert torch.equal(net.interpret(x), fn(x)), n


def test_tril_and_diagonal_follow_a_dynamic_batch():
    def fn(x):
        return torch.tril(x, -1).diagonal(0, -2, -1) + torch.triu(x).sum(-1)

    net = torch2x.build_network(fn, [torch.randn(3, 4, 4)], input_names=["x"], dynamic_shapes={"x": {0: (1, 3, 6)}})
    for n in (1, 3, 6):
        x = torch.randn(n, 4, 4)
        assert torch.allclose(net.interpret(x), fn(x), atol=1e-6), n
    assert net.build_engine() is not None


def test_triangles_follow_dynamic_matrix_dims():
    def fn(x):
        return torch.triu(x, 1)

    net = torch2x.build_network(fn, [torch.randn(3, 4)], input_names=["x"],
                                dynamic_shapes={"x": {0: (2, 3, 6), 1: (2, 4, 6)}})
    for shape in ((2, 2), (6, 3), (3, 6)):
        x = torch.randn(shape)
        assert torch.equal(net.interpret(x), fn(x)), shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_diff(dtype):
    before, after = _make((4, 2), dtype), _make((1, 5), dtype)
    check_module(lambda t: [torch.diff(t), torch.diff(t, 2, 0), t.diff(1, 1, prepend=before),
                            torch.diff(t, 3, -2, append=after), torch.diff(t, 2, -1, before, before)],
                 _make((4, 5), dtype))


@pytest.mark.parametrize("op", [torch.trapezoid, torch.trapz, torch.cumulative_trapezoid])
def test_trapezoid(op):
    # the sample points are traced inputs too: 1-D along dim, or one per element
    check_module(lambda t, x1, xn, i: [op(t), op(t, dx=0.5, dim=0), op(t, x1), op(t, xn, dim=0), op(i, dim=-1)],
                 torch.randn(3, 5), torch.rand(5).cumsum(0), torch.rand(3, 5).cumsum(0), _make((3, 5), torch.int64))


def test_trapezoid_of_one_sample_is_zero():
    check_module(lambda t: torch.trapezoid(t) + t.sum(), torch.randn(3, 1))


@pytest.mark.parametrize("edge_order", [1, 2])
def test_gradient(edge_order):
    coordinates = [torch.rand(n).cumsum(0) + 0.1 for n in (4, 5)]
    check_module(lambda t, v: [torch.gradient(t, edge_order=edge_order),
                               torch.gradient(t, spacing=2.0, dim=1, edge_order=edge_order),
                               torch.gradient(t, spacing=[0.5, 3.0], dim=[0, -1], edge_order=edge_order),
                               torch.gradient(t, spacing=coordinates, edge_order=edge_order),
                               torch.gradient(t, spacing=coordinates[1:], dim=-1, edge_order=edge_order),
                               torch.gradient(v, spacing=0.25, edge_order=edge_order)],
                 torch.randn(4, 5), torch.randn(6))


def test_gradient_with_traced_coordinates_is_reported():
    assert_reported(r"coordinates computed", lambda t, c: torch.gradient(t, spacing=(c,)), torch.randn(5),
                    torch.rand(5).cumsum(0))


def test_renorm():
    check_module(lambda x: [torch.renorm(x, 2, 0, 1.0), x.renorm(1, -1, 2.0), torch.renorm(x, 3.5, 1, 0.5),
                            x.renorm(2, 2, 100.0), x.clone().renorm_(float("inf"), 0, 1.0)], torch.randn(3, 4, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_matrix_power(dtype):
    x = torch.randn(2, 3, 3) / 2 if dtype.is_floating_point else torch.randint(-3, 4, (2, 3, 3))
    check_module(lambda t: [torch.linalg.matrix_power(t, n) for n in (0, 1, 2, 3, 6)] + [t[0].matrix_power(5)], x)


def test_negative_matrix_power_is_reported():
    assert_reported(r"inverse", lambda t: torch.linalg.matrix_power(t, -1), torch.randn(3, 3))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [(-2, -1), (0, 2), (2, 0)])
def test_matrix_norm(dim, keepdim):
    ords = ["fro", 1, -1, float("inf"), float("-inf")]
    check_module(lambda x: [torch.linalg.matrix_norm(x, o, dim, keepdim) for o in ords] +
                 [torch.linalg.norm(x, o, dim, keepdim) for o in ords], torch.randn(3, 4, 5))


@pytest.mark.parametrize("ord", ["nuc", 2, -2])
def test_spectral_matrix_norms_are_reported(ord):
    assert_reported(r"singular values", lambda x: torch.linalg.matrix_norm(x, ord), torch.randn(3, 3))


def test_linalg_norm_stays_a_vector_norm():
    check_module(lambda x: torch.linalg.norm(x), torch.randn(3, 4))
    check_module(lambda x: torch.linalg.norm(x, 3, dim=1), torch.randn(3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_as_strided(dtype):
    cases = [((2, 2), (1, 2), 0), ((3, 3), (1, 1), 1), ((2, 3, 2), (0, 3, 1), 2), ((), (), 5)]
    check_module(lambda x: [torch.as_strided(x, *case) for case in cases] + [x.as_strided((4,), (2,))],
                 _make((3, 4), dtype))


def test_as_strided_of_a_view_reads_its_storage():
    # x.t() is a view: as_strided walks the shared storage, not the transposed order
    check_module(lambda x: torch.as_strided(x.t(), (3, 2), (1, 3)), torch.randn(2, 3))
    check_module(lambda x: torch.as_strided(x[1:], (2, 2), (2, 1)), torch.randn(6))


def test_as_strided_outside_the_input_is_reported():
    assert_reported(r"outside the input", lambda x: torch.as_strided(x[2:], (2,), (1,), 0), torch.randn(6))


def test_unfold():  # PyTorch's im2col takes floats only
    F = torch.nn.functional
    check_module(lambda x: [F.unfold(x, 3), F.unfold(x, (2, 3), dilation=(2, 1), padding=1, stride=(1, 2)),
                            F.unfold(x[0], 2, stride=2), F.unfold(x, 1)], torch.randn(2, 3, 6, 7))


def test_cov_corrcoef_and_dist():
    fweights, aweights = torch.tensor([1, 3, 2, 1, 2]), torch.rand(5) + 0.1
    check_module(lambda x, v: [torch.cov(x), torch.cov(x, correction=0), x.cov(correction=2, fweights=fweights),
                               torch.cov(x, aweights=aweights), torch.cov(x, fweights=fweights, aweights=aweights),
                               torch.cov(v), torch.corrcoef(x), v.corrcoef(), torch.dist(x, v), x[0].dist(v, 0),
                               torch.dist(x, v, 3.0), torch.dist(x, v, float("inf"))],
                 torch.randn(3, 5), torch.randn(5))


def _triangular(n, batch=()):
    return torch.randn(*batch, n, n).tril() + 3 * torch.eye(n)  # well conditioned


def test_solve_triangular():
    lower, upper = _triangular(4, (2,)), _triangular(4, (2,)).mT
    check_module(lambda a, u, b, c: [torch.linalg.solve_triangular(a, b, upper=False),
                                     torch.linalg.solve_triangular(u, b, upper=True, unitriangular=True),
                                     torch.linalg.solve_triangular(a, c, upper=False, left=False),
                                     torch.linalg.solve_triangular(u[0], b, upper=True),
                                     *torch.triangular_solve(b, u), *torch.triangular_solve(b, a, upper=False),
                                     *torch.triangular_solve(b, a, upper=False, transpose=True, unitriangular=True)],
                 lower, upper, torch.randn(2, 4, 3), torch.randn(3, 4))
