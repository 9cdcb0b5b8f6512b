"""Neural-network layer rules: real TensorRT networks, interpreted, against direct PyTorch computations.

TensorRT accepts only 2-d and 3-d convolution and pooling windows (addConvolutionNd / addPoolingNd
reject 1-d), so the N-d cases here are 2-d and 3-d.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch2x.flavour import trt
from torch2x.interpreter import interpret

PM = trt.PaddingMode
TOL = dict(rtol=1e-5, atol=1e-5)


def _input(net, x, name="x"):
    dtype = {torch.float32: trt.float32, torch.int8: trt.int8}[x.dtype]
    return net.add_input(name, dtype, tuple(x.shape))


def _run(fresh, layer, feeds, build=False):
    out = layer.get_output(0)
    out.name = "y"
    fresh.network.mark_output(out)
    if build:
        fresh.build()
    return interpret(fresh.network, feeds)["y"]


def _const(net, t):
    a = t.numpy() if isinstance(t, torch.Tensor) else t
    return net.add_constant(a.shape, np.ascontiguousarray(a)).get_output(0)


# ----------------------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    "shape,cin,cout,k,stride,dil,groups,pad",
    [
        ((2, 4, 9, 8), 4, 6, (3, 3), (1, 1), (1, 1), 1, (1, 1)),
        ((1, 4, 11, 10), 4, 8, (3, 2), (2, 3), (2, 1), 2, (2, 0)),
        ((1, 6, 7, 7), 6, 6, (3, 3), (1, 1), (1, 1), 6, (1, 1)),  # depthwise
        ((1, 2, 5, 6, 7), 2, 4, (3, 3, 2), (1, 2, 1), (1, 1, 2), 2, (1, 0, 1)),  # 3-d
    ],
)
def test_convolution_matches_torch(fresh, shape, cin, cout, k, stride, dil, groups, pad):
    net = fresh.network
    x = torch.randn(shape)
    w = torch.randn((cout, cin // groups) + k)
    b = torch.randn(cout)
    layer = net.add_convolution_nd(_input(net, x), cout, k, w.numpy(), b.numpy())
    layer.stride_nd, layer.dilation_nd, layer.padding_nd, layer.num_groups = stride, dil, pad, groups
    got = _run(fresh, layer, {"x": x}, build=len(k) == 2)
    ref = torch.convolution(x, w, b, stride, pad, dil, False, [0] * len(k), groups)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "mode,pre,post,expected_pad",  # expected_pad: F.pad argument (W before, W after, H before, H after)
    [
        (PM.EXPLICIT_ROUND_DOWN, (0, 1), (2, 0), [1, 0, 0, 2]),
        (PM.EXPLICIT_ROUND_UP, (0, 0), (0, 0), [0, 1, 0, 1]),  # 7 -> ceil((7-4)/2)+1 = 3 windows
        (PM.SAME_UPPER, (5, 5), (5, 5), [1, 2, 1, 2]),  # P = 3*2 + 4 - 7 = 3, explicit padding ignored
        (PM.SAME_LOWER, (0, 0), (0, 0), [2, 1, 2, 1]),
    ],
)
def test_convolution_padding_modes(fresh, mode, pre, post, expected_pad):
    net = fresh.network
    x = torch.randn(1, 2, 7, 7)
    w = torch.randn(3, 2, 4, 4)
    layer = net.add_convolution_nd(_input(net, x), 3, (4, 4), w.numpy(), trt.Weights())
    layer.stride_nd = (2, 2)
    layer.pre_padding, layer.post_padding = pre, post
    layer.padding_mode = mode
    got = _run(fresh, layer, {"x": x})
    ref = F.conv2d(F.pad(x, expected_pad), w, stride=2)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_convolution_kernel_and_bias_as_input_tensors(fresh):
    net = fresh.network
    x = torch.randn(1, 4, 6, 6)
    w = torch.randn(2, 2, 3, 3)
    b = torch.randn(2)
    layer = net.add_convolution_nd(_input(net, x), 2, (3, 3), trt.Weights(), trt.Weights())
    layer.num_groups = 2
    layer.set_input(1, _const(net, w))
    layer.set_input(2, _const(net, b))
    got = _run(fresh, layer, {"x": x})
    torch.testing.assert_close(got, F.conv2d(x, w, b, groups=2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "shape,cin,cout,k,stride,dil,groups,pad",
    [
        ((2, 4, 5, 6), 4, 6, (3, 3), (2, 2), (1, 1), 1, (1, 1)),
        ((1, 4, 5, 5), 4, 6, (4, 3), (3, 2), (1, 2), 2, (0, 1)),
        ((1, 2, 3, 4, 3), 2, 4, (2, 3, 2), (2, 1, 2), (1, 1, 1), 2, (0, 1, 0)),
    ],
)
def test_deconvolution_matches_torch(fresh, shape, cin, cout, k, stride, dil, groups, pad):
    net = fresh.network
    x = torch.randn(shape)
    w = torch.randn((cin, cout // groups) + k)
    b = torch.randn(cout)
    layer = net.add_deconvolution_nd(_input(net, x), cout, k, w.numpy(), b.numpy())
    layer.stride_nd, layer.dilation_nd, layer.padding_nd, layer.num_groups = stride, dil, pad, groups
    # The builder rejects strided and dilated deconvolution together ("currently not supported").
    got = _run(fresh, layer, {"x": x}, build=len(k) == 2 and set(dil) == {1})
    ref = torch.convolution(x, w, b, stride, pad, dil, True, [0] * len(k), groups)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "mode,pre,post,crop",  # crop of the full transposed convolution: (H before, H after, W before, W after)
    [
        (PM.EXPLICIT_ROUND_DOWN, (1, 0), (0, 2), (1, 0, 0, 2)),
        (PM.SAME_UPPER, (0, 0), (0, 0), (0, 1, 0, 1)),  # P = max(3 - 2, 0) = 1 -> B = 0, A = 1
        (PM.SAME_LOWER, (0, 0), (0, 0), (1, 0, 1, 0)),
    ],
)
def test_deconvolution_asymmetric_and_same_padding(fresh, mode, pre, post, crop):
    net = fresh.network
    x = torch.randn(1, 2, 4, 5)
    w = torch.randn(2, 3, 3, 3)
    b = torch.randn(3)
    layer = net.add_deconvolution_nd(_input(net, x), 3, (3, 3), w.numpy(), b.numpy())
    layer.stride_nd = (2, 2)
    layer.pre_padding, layer.post_padding = pre, post
    layer.padding_mode = mode
    got = _run(fresh, layer, {"x": x})
    full = F.conv_transpose2d(x, w, b, stride=2)
    hb, ha, wb, wa = crop
    ref = full[:, :, hb: full.shape[2] - ha, wb: full.shape[3] - wa]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("window,stride,pad",
                         [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 0)), ((2, 2), (2, 2), (0, 0))])
def test_average_pooling(fresh, exclude, window, stride, pad):
    net = fresh.network
    x = torch.randn(2, 3, 9, 8)
    layer = net.add_pooling_nd(_input(net, x), trt.PoolingType.AVERAGE, window)
    layer.stride_nd, layer.padding_nd = stride, pad
    layer.average_count_excludes_padding = exclude
    got = _run(fresh, layer, {"x": x}, build=exclude)
    ref = F.avg_pool2d(x, window, stride, pad, count_include_pad=not exclude)
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("kind", ["max", "avg_include", "avg_exclude"])
def test_pooling_round_up_is_ceil_mode(fresh, kind):
    net = fresh.network
    x = torch.randn(1, 2, 8, 10)
    ptype = trt.PoolingType.MAX if kind == "max" else trt.PoolingType.AVERAGE
    layer = net.add_pooling_nd(_input(net, x), ptype, (3, 3))
    layer.stride_nd, layer.padding_nd = (2, 2), (1, 1)
    layer.padding_mode = PM.EXPLICIT_ROUND_UP
    layer.average_count_excludes_padding = kind == "avg_exclude"
    got = _run(fresh, layer, {"x": x})
    if kind == "max":
        ref = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    else:
        ref = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=kind == "avg_include")
    torch.testing.assert_close(got, ref, **TOL)


def test_max_pooling_same_upper_3d(fresh):
    net = fresh.network
    x = torch.randn(1, 2, 5, 6, 7)
    layer = net.add_pooling_nd(_input(net, x), trt.PoolingType.MAX, (2, 3, 3))
    layer.stride_nd = (2, 2, 2)
    layer.padding_mode = PM.SAME_UPPER
    got = _run(fresh, layer, {"x": x}, build=True)
    # D: P = 2*2+2-5 = 1 -> (0, 1); H: P = 2*2+3-6 = 1 -> (0, 1); W: P = 3*2+3-7 = 2 -> (1, 1)
    ref = F.max_pool3d(F.pad(x, [1, 1, 0, 1, 0, 1], value=-math.inf), (2, 3, 3), 2)
    torch.testing.assert_close(got, ref, **TOL)


def test_max_average_blend(fresh):
    net = fresh.network
    x = torch.randn(1, 3, 6, 6)
    layer = net.add_pooling_nd(_input(net, x), trt.PoolingType.MAX_AVERAGE_BLEND, (2, 2))
    layer.stride_nd = (2, 2)
    layer.blend_factor = 0.25
    got = _run(fresh, layer, {"x": x})
    ref = 0.75 * F.max_pool2d(x, 2, 2) + 0.25 * F.avg_pool2d(x, 2, 2)
    torch.testing.assert_close(got, ref, **TOL)


# ----------------------------------------------------------------------------- normalization


def test_layer_norm(fresh):
    net = fresh.network
    x = torch.randn(2, 5, 16)
    g, b = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    layer = net.add_normalization(_input(net, x), _const(net, g), _const(net, b), 1 << 2)
    layer.epsilon = 1e-3
    got = _run(fresh, layer, {"x": x}, build=True)
    ref = F.layer_norm(x, (16,), g.reshape(16), b.reshape(16), eps=1e-3)
    torch.testing.assert_close(got, ref, **TOL)


def test_layer_norm_two_axes(fresh):
    net = fresh.network
    x = torch.randn(3, 4, 6)
    g, b = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    layer = net.add_normalization(_input(net, x), _const(net, g), _const(net, b), (1 << 1) | (1 << 2))
    got = _run(fresh, layer, {"x": x})
    ref = F.layer_norm(x, (4, 6), g[0], b[0], eps=1e-5)
    torch.testing.assert_close(got, ref, **TOL)


def test_normalization_over_a_middle_axis(fresh):
    net = fresh.network
    x = torch.randn(2, 5, 3)
    g, b = torch.randn(1, 5, 1), torch.randn(1, 5, 1)
    layer = net.add_normalization(_input(net, x), _const(net, g), _const(net, b), 1 << 1)
    got = _run(fresh, layer, {"x": x})
    ref = F.layer_norm(x.transpose(1, 2), (5,), g.reshape(5), b.reshape(5), eps=1e-5).transpose(1, 2)
    torch.testing.assert_close(got, ref, **TOL)


def test_instance_norm(fresh):
    net = fresh.network
    x = torch.randn(2, 3, 5, 6)
    g, b = torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1)
    layer = net.add_normalization(_input(net, x), _const(net, g), _const(net, b), (1 << 2) | (1 << 3))
    got = _run(fresh, layer, {"x": x}, build=True)
    ref = F.instance_norm(x, weight=g.reshape(3), bias=b.reshape(3), eps=1e-5)
    torch.testing.assert_close(got, ref, **TOL)


def test_group_norm_per_group_scale(fresh):
    # TensorRT's group normalization takes scale/bias per group ([1, G, 1, 1]); a per-channel
    # [1, C, 1, 1] scale is rejected by the builder, and so are axes that leave a spatial axis out
    # ("reduction dimension 2 must be 1 when nbGroups != 1"), checked on TensorRT-RTX 1.7.
    net = fresh.network
    x = torch.randn(2, 6, 4, 5)
    g, b = torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1)
    layer = net.add_normalization(_input(net, x), _const(net, g), _const(net, b), (1 << 2) | (1 << 3))
    layer.num_groups = 3
    got = _run(fresh, layer, {"x": x}, build=True)
    per_channel = lambda t: t.reshape(3).repeat_interleave(2)  # noqa: E731
    ref = F.group_norm(x, 3, per_channel(g), per_channel(b), eps=1e-5)
    torch.testing.assert_close(got, ref, **TOL)


# ----------------------------------------------------------------------------- resize


def _ref_resize_1d(x, axis, out_len, mode, coord, scale=None, rounding="floor", a=-0.75, exclude=False):
    """A slow, loop-based reference of ONNX/TensorRT resize along one axis."""
    x = x.double().movedim(axis, -1)
    in_len = x.shape[-1]
    cols = []
    for i in range(out_len):
        ratio = 1 / scale if scale is not None else in_len / out_len
        if coord == "align_corners":
            xo = i * (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
        elif coord == "asymmetric":
            xo = i * ratio
        else:
            xo = (i + 0.5) * ratio - 0.5
        clamp = lambda j: min(max(j, 0), in_len - 1)  # noqa: E731
        if mode == "nearest":
            j = {"floor": math.floor(xo), "ceil": math.ceil(xo), "half_up": math.floor(xo + 0.5),
                 "half_down": math.ceil(xo - 0.5)}[rounding]
            cols.append(x[..., clamp(j)])
        elif mode == "linear":
            j = math.floor(xo)
            t = xo - j
            cols.append(x[..., clamp(j)] * (1 - t) + x[..., clamp(j + 1)] * t)
        else:
            j = math.floor(xo)
            t = xo - j
            taps, ws = [], []
            for off in (-1, 0, 1, 2):
                d = abs(t - off)
                w = ((a + 2) * d**3 - (a + 3) * d**2 + 1) if d <= 1 else (a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a)
                if exclude and not 0 <= j + off < in_len:
                    w = 0.0
                taps.append(j + off)
                ws.append(w)
            total = sum(ws) if exclude else 1.0
            cols.append(sum(x[..., clamp(tp)] * (w / total) for tp, w in zip(taps, ws)))
    return torch.stack(cols, -1).movedim(-1, axis).float()


def _resize(net, x, **attrs):
    layer = net.add_resize(_input(net, x))
    for k, v in attrs.items():
        setattr(layer, k, v)
    return layer


RM, RCT, RRM = trt.InterpolationMode, trt.ResizeCoordinateTransformation, trt.ResizeRoundMode


def test_resize_nearest_default_is_torch_nearest(fresh):
    x = torch.randn(1, 2, 5, 4)
    layer = _resize(fresh.network, x, scales=[1, 1, 2, 3])
    got = _run(fresh, layer, {"x": x}, build=True)
    torch.testing.assert_close(got, F.interpolate(x, scale_factor=(2, 3), mode="nearest"), rtol=0, atol=0)


def test_resize_nearest_half_pixel_half_up_is_nearest_exact(fresh):
    x = torch.randn(1, 2, 5, 7)
    layer = _resize(fresh.network, x, shape=(1, 2, 8, 3), coordinate_transformation=RCT.HALF_PIXEL,
                    nearest_rounding=RRM.HALF_UP)
    got = _run(fresh, layer, {"x": x})
    torch.testing.assert_close(got, F.interpolate(x, size=(8, 3), mode="nearest-exact"), rtol=0, atol=0)


@pytest.mark.parametrize("rounding", ["ceil", "half_down", "floor", "half_up"])
@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "align_corners"])
def test_resize_nearest_rounding_modes(fresh, rounding, coord):
    x = torch.randn(2, 3, 7)
    layer = _resize(fresh.network, x, scales=[1, 1, 1.5], coordinate_transformation=getattr(RCT, coord.upper()),
                    nearest_rounding=getattr(RRM, rounding.upper()))
    got = _run(fresh, layer, {"x": x})
    ref = _ref_resize_1d(x, 2, 10, "nearest", coord, scale=1.5, rounding=rounding)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("size", [(9, 13), (3, 4)])
def test_resize_bilinear(fresh, align, size):
    x = torch.randn(1, 3, 6, 7)
    coord = RCT.ALIGN_CORNERS if align else RCT.HALF_PIXEL
    layer = _resize(fresh.network, x, shape=(1, 3) + size, resize_mode=RM.LINEAR, coordinate_transformation=coord)
    got = _run(fresh, layer, {"x": x}, build=align)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=align)
    torch.testing.assert_close(got, ref, **TOL)


def test_resize_trilinear_scales(fresh):
    x = torch.randn(1, 2, 3, 4, 5)
    layer = _resize(fresh.network, x, scales=[1, 1, 2, 2, 2], resize_mode=RM.LINEAR,
                    coordinate_transformation=RCT.HALF_PIXEL)
    got = _run(fresh, layer, {"x": x})
    ref = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("align", [False, True])
def test_resize_bicubic(fresh, align):
    x = torch.randn(1, 2, 5, 6)
    coord = RCT.ALIGN_CORNERS if align else RCT.HALF_PIXEL
    layer = _resize(fresh.network, x, shape=(1, 2, 11, 9), resize_mode=RM.CUBIC, coordinate_transformation=coord)
    got = _run(fresh, layer, {"x": x}, build=not align)
    ref = F.interpolate(x, size=(11, 9), mode="bicubic", align_corners=align)
    torch.testing.assert_close(got, ref, **TOL)


def test_resize_cubic_exclude_outside_and_coefficient(fresh):
    x = torch.randn(2, 3, 6)
    layer = _resize(fresh.network, x, shape=(2, 3, 9), resize_mode=RM.CUBIC, coordinate_transformation=RCT.HALF_PIXEL,
                    cubic_coeff=-0.5, exclude_outside=True)
    got = _run(fresh, layer, {"x": x})
    ref = _ref_resize_1d(x, 2, 9, "cubic", "half_pixel", a=-0.5, exclude=True)
    torch.testing.assert_close(got, ref, **TOL)


def test_resize_linear_non_integer_scale_uses_scale(fresh):
    x = torch.randn(1, 1, 5)
    layer = _resize(fresh.network, x, scales=[1, 1, 1.5], resize_mode=RM.LINEAR,
                    coordinate_transformation=RCT.HALF_PIXEL)
    got = _run(fresh, layer, {"x": x})
    ref = F.interpolate(x, scale_factor=1.5, mode="linear", align_corners=False, recompute_scale_factor=False)
    torch.testing.assert_close(got, ref, **TOL)


def test_resize_single_pixel_selector(fresh):
    x = torch.randn(1, 1, 4, 6)
    layer = _resize(fresh.network, x, shape=(1, 1, 1, 1), resize_mode=RM.LINEAR,
                    coordinate_transformation=RCT.HALF_PIXEL, selector_for_single_pixel=trt.ResizeSelector.UPPER)
    got = _run(fresh, layer, {"x": x})
    torch.testing.assert_close(got, x[:, :, :1, :1], rtol=0, atol=0)


def test_resize_dynamic_shape_from_input(fresh):
    net = fresh.network
    x = torch.randn(1, 2, 3, 4)
    layer = net.add_resize(_input(net, x))
    layer.set_input(1, _const(net, np.array([1, 2, 6, 8], dtype=np.int64)))
    layer.resize_mode = RM.LINEAR
    layer.coordinate_transformation = RCT.ALIGN_CORNERS
    got = _run(fresh, layer, {"x": x})
    torch.testing.assert_close(got, F.interpolate(x, size=(6, 8), mode="bilinear", align_corners=True), **TOL)


# ----------------------------------------------------------------------------- padding, scale, LRN


def test_padding_with_crop(fresh):
    x = torch.randn(2, 3, 5, 6)
    layer = fresh.network.add_padding_nd(_input(fresh.network, x), (1, -2), (2, 1))
    got = _run(fresh, layer, {"x": x}, build=True)
    torch.testing.assert_close(got, F.pad(x, [-2, 1, 1, 2]), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["UNIFORM", "CHANNEL", "ELEMENTWISE"])
def test_scale(fresh, mode):
    net = fresh.network
    x = torch.rand(2, 3, 4, 5) + 0.5
    shape = {"UNIFORM": (1,), "CHANNEL": (3,), "ELEMENTWISE": (3, 4, 5)}[mode]
    s, sh, p = torch.rand(shape) + 0.5, torch.rand(shape), torch.rand(shape) + 0.5
    layer = net.add_scale(_input(net, x), getattr(trt.ScaleMode, mode), sh.numpy().ravel(), s.numpy().ravel(),
                          p.numpy().ravel())
    got = _run(fresh, layer, {"x": x}, build=mode == "CHANNEL")
    view = {"UNIFORM": (), "CHANNEL": (3, 1, 1), "ELEMENTWISE": (3, 4, 5)}[mode]
    ref = (x * s.reshape(view) + sh.reshape(view)) ** p.reshape(view)
    torch.testing.assert_close(got, ref, **TOL)


def test_scale_channel_axis_and_defaults(fresh):
    net = fresh.network
    x = torch.randn(2, 4, 3, 5)
    s = torch.randn(3)
    layer = net.add_scale_nd(_input(net, x), trt.ScaleMode.CHANNEL, None, s.numpy(), None, 2)
    got = _run(fresh, layer, {"x": x})
    torch.testing.assert_close(got, x * s.reshape(3, 1), **TOL)


@pytest.mark.parametrize("window,alpha,beta,k", [(3, 1e-2, 0.75, 1.0), (5, 0.5, 0.5, 2.0)])
def test_lrn(fresh, window, alpha, beta, k):
    x = torch.randn(2, 7, 4, 5)
    layer = fresh.network.add_lrn(_input(fresh.network, x), window, alpha, beta, k)
    got = _run(fresh, layer, {"x": x}, build=window == 3)
    torch.testing.assert_close(got, F.local_response_norm(x, window, alpha, beta, k), **TOL)


# ----------------------------------------------------------------------------- grid sample


@pytest.mark.parametrize("mode,torch_mode", [(RM.LINEAR, "bilinear"), (RM.NEAREST, "nearest"), (RM.CUBIC, "bicubic")])
@pytest.mark.parametrize("sample,padding_mode", [(trt.SampleMode.FILL, "zeros"), (trt.SampleMode.CLAMP, "border"),
                                                 (trt.SampleMode.REFLECT, "reflection")])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample(fresh, mode, torch_mode, sample, padding_mode, align):
    net = fresh.network
    x = torch.randn(2, 3, 5, 6)
    grid = torch.rand(2, 4, 7, 2) * 2.4 - 1.2
    layer = net.add_grid_sample(_input(net, x), _input(net, grid, "g"))
    layer.interpolation_mode, layer.sample_mode, layer.align_corners = mode, sample, align
    got = _run(fresh, layer, {"x": x, "g": grid})
    ref = F.grid_sample(x, grid, mode=torch_mode, padding_mode=padding_mode, align_corners=align)
    torch.testing.assert_close(got, ref, **TOL)


# ----------------------------------------------------------------------------- quantization


def test_quantize_per_tensor_rounds_half_to_even_and_clamps(fresh):
    net = fresh.network
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -2.5, 3.49, 300.0, -300.0]])
    layer = net.add_quantize(_input(net, x), _const(net, np.array(0.5, np.float32)), trt.int8)
    got = _run(fresh, layer, {"x": x}, build=True)
    assert got.dtype == torch.int8
    # x / 0.5 = 1, 3, 5, -1, -5, 6.98, 600, -600
    torch.testing.assert_close(got, torch.tensor([[1, 3, 5, -1, -5, 7, 127, -128]], dtype=torch.int8))

    ties = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.0, 126.5]])
    fresh2 = type(fresh)()
    layer = fresh2.network.add_quantize(_input(fresh2.network, ties), _const(fresh2.network, np.array(1.0, np.float32)),
                                        trt.int8)
    got = _run(fresh2, layer, {"x": ties})
    torch.testing.assert_close(got, torch.tensor([[0, 2, 2, 0, -2, -2, 0, 126]], dtype=torch.int8))


def test_quantize_dequantize_per_channel(fresh):
    net = fresh.network
    x = torch.randn(2, 3, 4) * 4
    scale = torch.tensor([0.05, 0.1, 0.2])
    s = _const(net, scale)
    q = net.add_quantize(_input(net, x), s, trt.int8)
    q.axis = 1
    dq = net.add_dequantize(q.get_output(0), s, trt.float32)
    dq.axis = 1
    qo = q.get_output(0)
    qo.name = "q"
    net.mark_output(qo)
    got = _run(fresh, dq, {"x": x}, build=True)
    ref_q = torch.clamp(torch.round(x / scale.reshape(1, 3, 1)), -128, 127)
    out = interpret(net, {"x": x})
    torch.testing.assert_close(out["q"], ref_q.to(torch.int8))
    torch.testing.assert_close(got, ref_q * scale.reshape(1, 3, 1), **TOL)


def test_dequantize_int8_input(fresh):
    net = fresh.network
    x = torch.tensor([[-128, -1, 0, 5, 127]], dtype=torch.int8)
    dq = net.add_dequantize(_input(net, x), _const(net, np.array(0.25, np.float32)), trt.float32)
    got = _run(fresh, dq, {"x": x})
    torch.testing.assert_close(got, x.float() * 0.25, rtol=0, atol=0)


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn") or not hasattr(trt.DataType, "FP8"), reason="no fp8")
def test_quantize_fp8_clamps_to_448(fresh):
    net = fresh.network
    x = torch.tensor([[1.0, -3.0, 1000.0, -1000.0, 0.3]])
    layer = net.add_quantize(_input(net, x), _const(net, np.array(1.0, np.float32)), trt.DataType.FP8)
    got = _run(fresh, layer, {"x": x})
    assert got.dtype == torch.float8_e4m3fn
    ref = torch.tensor([[1.0, -3.0, 448.0, -448.0, 0.3]]).to(torch.float8_e4m3fn)
    torch.testing.assert_close(got.float(), ref.float(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- reduced precision


def test_half_precision_conv_norm_resize_pool(fresh):
    # A strongly typed float16 network: fp16 weights read back, computed in float32 on CPU, output fp16.
    net = fresh.network
    x = torch.randn(1, 4, 6, 6).half()
    w, b = torch.randn(4, 4, 3, 3).half(), torch.randn(4).half()
    inp = net.add_input("x", trt.float16, tuple(x.shape))
    conv = net.add_convolution_nd(inp, 4, (3, 3), w.numpy(), b.numpy())
    conv.padding_nd = (1, 1)
    g, beta = torch.randn(1, 4, 1, 1).half(), torch.randn(1, 4, 1, 1).half()
    norm = net.add_normalization(conv.get_output(0), _const(net, g), _const(net, beta), (1 << 2) | (1 << 3))
    resize = net.add_resize(norm.get_output(0))
    resize.scales = [1, 1, 2, 2]
    resize.resize_mode = RM.LINEAR
    resize.coordinate_transformation = RCT.HALF_PIXEL
    pool = net.add_pooling_nd(resize.get_output(0), trt.PoolingType.AVERAGE, (2, 2))
    pool.stride_nd = (2, 2)
    got = _run(fresh, pool, {"x": x}, build=True)
    assert got.dtype == torch.float16
    y = F.conv2d(x.float(), w.float(), b.float(), padding=1)
    y = F.instance_norm(y, weight=g.float().reshape(4), bias=beta.float().reshape(4))
    y = F.avg_pool2d(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False), 2)
    torch.testing.assert_close(got.float(), y, rtol=1e-2, atol=1e-2)


def test_resize_nearest_keeps_integer_values(fresh):
    net = fresh.network
    # Resize accepts int8 (not int32) data; nearest must copy values, not interpolate them.
    x = torch.randint(-100, 100, (1, 3, 4), dtype=torch.int8)
    layer = net.add_resize(_input(net, x))
    layer.scales = [1, 2, 3]
    got = _run(fresh, layer, {"x": x})
    assert got.dtype == torch.int8
    torch.testing.assert_close(got, x.repeat_interleave(2, 1).repeat_interleave(3, 2), rtol=0, atol=0)


def test_invalid_layer_is_named_when_the_interpreter_reads_the_network(fresh):
    # TensorRT's resize rejects int32 data; the interpreter names the layer instead of a bare
    # "Could not get tensor shape" from the bindings.
    from torch2x.interpreter import LayerExecutionError

    net = fresh.network
    layer = net.add_resize(net.add_input("x", trt.int32, (1, 3, 4)))
    layer.scales = [1, 2, 3]
    layer.name = "up"
    net.mark_output(layer.get_output(0))
    with pytest.raises(LayerExecutionError, match=r"layer 'up' \(RESIZE\)"):
        interpret(net, {"x": torch.zeros(1, 3, 4, dtype=torch.int32)})
