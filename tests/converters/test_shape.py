"""converters/shape.py: views, permutations, broadcasting copies, splits, joins, flips, rolls, shuffles."""
import pytest
import torch
import torch.nn.functional as F
from harness import assert_reported, check_module, random_tensor as _make

DTYPES = [torch.float32, torch.int64, torch.bool]


def _layers(converted) -> int:
    return converted.network.num_layers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [
    lambda x: x.view(4, 6), lambda x: x.view(-1), lambda x: x.reshape((3, -1)), lambda x: x.reshape([2, 2, 6]),
    lambda x: torch.reshape(x, torch.Size([6, 4])), lambda x: x.view_as(torch.empty(24, 1)),
    lambda x: x.reshape_as(torch.empty(2, 12)), lambda x: x.flatten(), lambda x: torch.flatten(x, 1),
    lambda x: x.flatten(0, 1), lambda x: x.unflatten(2, (2, 2)), lambda x: torch.unflatten(x, -1, (2, -1)),
    lambda x: x.unsqueeze(1).squeeze(), lambda x: x.unsqueeze(0).squeeze(0), lambda x: x.unsqueeze(-1).squeeze((0, -1)),
    lambda x: torch.unsqueeze(x, 3), lambda x: x.ravel(),
], ids=lambda f: "")
def test_reshapes(fn, dtype):
    check_module(fn, _make((2, 3, 4), dtype))


def test_view_bitcast_is_reported():
    assert_reported(r"reinterprets", lambda x: x.view(torch.int32), torch.randn(2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("fn", [
    lambda x: x.permute(2, 0, 1, 3), lambda x: x.permute((3, 2, 1, 0)), lambda x: torch.permute(x, [0, 2, 1, 3]),
    lambda x: x.transpose(1, 3), lambda x: torch.transpose(x, -1, -2), lambda x: x.swapaxes(0, 2),
    lambda x: torch.swapdims(x, 1, 2), lambda x: x.mT, lambda x: x.movedim(1, -1),
    lambda x: torch.movedim(x, (0, 1), (2, 3)), lambda x: x.moveaxis(-1, 0), lambda x: x.contiguous(),
], ids=lambda f: "")
def test_permutes(fn, dtype):
    check_module(fn, _make((2, 3, 4, 5), dtype))


@pytest.mark.parametrize("shape", [(3,), (3, 4), (2, 3, 4)])
def test_t_and_T(shape):
    check_module(lambda x: x.T + 0, torch.randn(shape))
    if len(shape) <= 2:
        check_module(lambda x: x.t(), torch.randn(shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [
    lambda x: x.expand(2, 3, 4), lambda x: x.expand(5, -1, -1, 4), lambda x: x.expand_as(torch.empty(2, 3, 4)),
    lambda x: torch.broadcast_to(x, (3, 3, 4)), lambda x: x.repeat(2, 1, 3), lambda x: x.repeat(2, 1, 1, 2),
    lambda x: torch.tile(x, (2,)), lambda x: x.tile((2, 2, 1, 1)), lambda x: x.repeat_interleave(2),
    lambda x: x.repeat_interleave(3, dim=1), lambda x: torch.repeat_interleave(x, torch.tensor([1, 0, 2]), dim=1),
], ids=lambda f: "")
def test_broadcast_copies(fn, dtype):
    x = _make((1, 3, 1), dtype)
    check_module(fn, x)


def test_broadcast_tensors():
    check_module(lambda a, b: torch.broadcast_tensors(a, b), torch.randn(3, 1), torch.randn(1, 4))


def test_expand_is_one_layer():
    converted = check_module(lambda x: x.expand(4, 3, 5), torch.randn(3, 1))
    assert _layers(converted) <= 2  # reshape to rank 3, stride-0 slice


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [
    lambda x: x.chunk(2, 1), lambda x: torch.chunk(x, 3, -1), lambda x: x.split(2, 2), lambda x: torch.split(x, 3, 2),
    lambda x: torch.split(x, [1, 4], dim=2), lambda x: x.split([2, 1], 1), lambda x: x.split_with_sizes([3, 2], 2),
    lambda x: torch.tensor_split(x, 3, dim=2), lambda x: x.tensor_split([1, 4], 2), lambda x: x.tensor_split((3, 1), 2),
    lambda x: x.unbind(1), lambda x: torch.unbind(x), lambda x: tuple(x), lambda x: x.narrow(2, 1, 3),
    lambda x: torch.narrow(x, -1, -2, 2), lambda x: x.narrow_copy(1, 0, 2), lambda x: torch.hsplit(x, [2]),
    lambda x: torch.vsplit(x, 2), lambda x: torch.dsplit(x, [1, 3]),
], ids=lambda f: "")
def test_splits(fn, dtype):
    check_module(fn, _make((2, 3, 5), dtype))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    check_module(lambda a, b, c: torch.stack([a, b, c], dim), torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3))


def test_stack_is_two_layers():
    converted = check_module(lambda a, b, c: torch.stack([a, b, c], 1), *[torch.randn(2, 3, 4) for _ in range(3)])
    assert _layers(converted) == 2


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(dim):
    check_module(lambda a, b: torch.cat((a, b), dim), torch.randn(2, 3, 4), torch.randn(2, 3, 4))


def test_cat_promotes_and_mixes_constants():
    const = torch.arange(8).reshape(2, 4)
    check_module(lambda a: torch.cat([a, const, torch.empty(0)], dim=0), torch.randn(3, 4))
    check_module(lambda a, b: torch.concat([a, b], dim=1), torch.randint(0, 5, (2, 2)), torch.randn(2, 3))
    check_module(lambda a, b: torch.concatenate([a, b], axis=-1), torch.rand(2, 2) > 0.5, torch.rand(2, 1) > 0.5)


@pytest.mark.parametrize("fn", [torch.hstack, torch.vstack, torch.dstack, torch.column_stack])
@pytest.mark.parametrize("shape", [(3,), (3, 2)])
def test_hvdstack(fn, shape):
    check_module(lambda a, b: fn([a, b]), torch.randn(shape), torch.randn(shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [
    lambda x: x.flip(0), lambda x: torch.flip(x, (1, 2)), lambda x: x.flip(-1), lambda x: torch.fliplr(x),
    lambda x: x.flipud(), lambda x: x.roll(1, 0), lambda x: torch.roll(x, -2, 2), lambda x: x.roll((1, 5), (1, 2)),
    lambda x: torch.roll(x, 7), lambda x: x.roll(3, -1), lambda x: x.roll((1, 2), (2, 2)),
], ids=lambda f: "")
def test_flip_roll(fn, dtype):
    check_module(fn, _make((2, 3, 4), dtype))


def test_roll_is_slices_and_a_concatenation_per_axis():
    """TensorRT fuses them into the kernel computing the input; a WRAP slice would be a kernel of its own."""
    net = check_module(lambda x: (x * 2).roll((1, -2), (1, 2)), torch.randn(2, 5, 6))
    types = [net.network.get_layer(i).type.name for i in range(net.network.num_layers)]
    assert types.count("CONCATENATION") == 2 and types.count("SLICE") == 4


@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("lead", [(1,), (2,), (2, 2)])
def test_pixel_shuffle(r, lead):
    x = torch.randn(*lead, 2 * r * r, 3, 4)
    check_module(torch.nn.PixelShuffle(r), x)
    check_module(lambda y: F.pixel_unshuffle(y, r), F.pixel_shuffle(x, r))


@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (1, 6, 5)])
@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle(shape, groups):
    check_module(torch.nn.ChannelShuffle(groups), torch.randn(shape))
    check_module(lambda x: F.channel_shuffle(x, groups), torch.randn(shape))


def test_channel_shuffle_is_two_layers():
    assert _layers(check_module(torch.nn.ChannelShuffle(2), torch.randn(1, 8, 4, 4))) == 2


def test_sizes_need_no_layers():
    check_module(lambda x: x.reshape(x.size(0), x.numel() // x.size(0) // x.dim(), x.dim()), torch.randn(2, 3, 4))


@pytest.mark.parametrize("fn", [lambda x: x.permute(0, 2, 1).reshape(2, -1), lambda x: x.flip(1).roll(1, 2),
                                lambda x: torch.stack([x, x], 0).chunk(2, 2)[1]], ids=lambda f: "")
def test_fp16(fn):
    check_module(fn, torch.randn(2, 3, 4), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("dim,size,step", [(0, 2, 1), (1, 2, 2), (-1, 3, 2), (2, 2, 2), (1, 5, 1)])
def test_unfold(dim, size, step):
    check_module(lambda x: x.unfold(dim, size, step), torch.randn(3, 5, 7))


def test_unfold_non_overlapping_is_one_layer():
    assert check_module(lambda x: x.unfold(1, 2, 2), torch.randn(3, 4, 5)).network.num_layers == 1


def test_copy_variants_of_views():
    check_module(lambda x: [torch.permute_copy(x, (2, 0, 1)), torch.t_copy(x[0]), *torch.unbind_copy(x, 1),
                            torch.unfold_copy(x, 2, 2, 1), *torch.split_with_sizes_copy(x, [1, 2], 1),
                            *torch.unsafe_chunk(x, 2, -1), *x.unsafe_chunk(3, 1)], torch.randn(2, 3, 4))


def test_cat_keeps_an_input_empty_only_in_the_example():
    """A 1-D input whose dynamic dim is 0 in the example (an image without detections) is not one of the
    legacy empty tensors torch.cat skips: at other sizes it has values."""
    from harness import check_sizes

    check_sizes(lambda x, y: torch.cat([x, y]) * 2, lambda k: [torch.randn(k), torch.randn(2)], [0, 3, 1],
                {"input_0": {0: (0, 0, 10)}})
