"""F.grid_sample and torchvision's deform_conv2d against PyTorch/torchvision, through the real builder."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from harness import check_module


def _offsets(n, groups, kh, kw, ho, wo, spread):
    # large spreads push taps outside the image, where torchvision reads zeros
    return torch.randn(n, 2 * groups * kh * kw, ho, wo) * spread


@pytest.mark.parametrize("kernel,stride,padding,dilation,wgroups,ogroups,bias,masked,spread", [
    (3, 1, 1, 1, 1, 1, True, False, 3.0),
    (3, 1, 1, 1, 1, 1, False, True, 3.0),
    (3, 2, 1, 1, 2, 1, True, True, 3.0),
    (3, 1, 2, 2, 1, 2, True, True, 3.0),
    (3, 1, 1, 1, 1, 1, True, True, 12.0),  # most taps land outside the image
    (1, 1, 0, 1, 1, 1, True, True, 3.0),
    (1, 2, 0, 1, 2, 4, False, False, 0.4),
    ((3, 1), (2, 1), (1, 0), (1, 2), 4, 2, True, True, 3.0),
])
def test_deform_conv2d(kernel, stride, padding, dilation, wgroups, ogroups, bias, masked, spread):
    torch.manual_seed(0)
    n, c, h, w, c_out = 2, 8, 7, 9, 4
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(n, c, h, w)
    weight = torch.randn(c_out, c // wgroups, kh, kw)
    b = torch.randn(c_out) if bias else None
    ho, wo = F.conv2d(x, weight, b, stride, padding, dilation, wgroups).shape[-2:]
    offset = _offsets(n, ogroups, kh, kw, ho, wo, spread)
    mask = torch.rand(n, ogroups * kh * kw, ho, wo) if masked else None

    def fn(x, offset, *mask):
        return torchvision.ops.deform_conv2d(x, offset, weight, b, stride, padding, dilation,
                                             mask=mask[0] if mask else None)

    check_module(fn, x, offset, *([mask] if masked else []))


class DCNv2Head(torch.nn.Module):
    """conv -> offsets and mask -> DeformConv2d -> relu -> conv, as in deformable detection heads."""

    def __init__(self, c=8, groups=2):
        super().__init__()
        self.k = 9 * groups
        self.offset_mask = torch.nn.Conv2d(c, 3 * self.k, 3, padding=1)
        torch.nn.init.normal_(self.offset_mask.weight, std=0.3)  # offsets of a few pixels
        self.dcn = torchvision.ops.DeformConv2d(c, 16, 3, padding=1, groups=2)
        self.cls = torch.nn.Conv2d(16, 5, 1)

    def forward(self, x):
        om = self.offset_mask(x)
        offset, mask = om[:, :2 * self.k], om[:, 2 * self.k:].sigmoid()
        return self.cls(torch.relu(self.dcn(x, offset, mask)))


def test_dcnv2_head():
    torch.manual_seed(0)
    net = check_module(DCNv2Head(), torch.randn(1, 8, 10, 12))
    assert "dcn/deform_conv2d" in {net.network.get_layer(i).name.split(".")[0] for i in range(net.network.num_layers)}


def test_deform_conv2d_fp16():
    torch.manual_seed(0)
    check_module(DCNv2Head(), torch.randn(1, 8, 10, 12), rtol=1e-2, fp16=True)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample(mode, padding_mode, align_corners):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7)
    grid = torch.rand(2, 5, 4, 2) * 2.6 - 1.3  # some samples outside the image
    check_module(lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners), x, grid)


def test_grid_sample_5d():
    torch.manual_seed(0)
    x, grid = torch.randn(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 4, 3) * 2.4 - 1.2
    check_module(lambda x, g: F.grid_sample(x, g, align_corners=False), x, grid)


def test_grid_sample_fp16():
    torch.manual_seed(0)
    x, grid = torch.randn(1, 3, 40, 50), torch.rand(1, 7, 9, 2) * 2 - 1
    check_module(lambda x, g: F.grid_sample(x, g, align_corners=True), x, grid, rtol=1e-2, fp16=True)


def test_deform_conv2d_bound_before_conversion():
    """``from torchvision.ops import deform_conv2d`` binds the unpatched function: its torch.ops call converts."""
    from torchvision.ops import deform_conv2d as bound

    torch.manual_seed(0)
    x, weight = torch.randn(1, 4, 6, 6), torch.randn(3, 4, 3, 3)
    offset, mask = torch.randn(1, 18, 6, 6), torch.rand(1, 9, 6, 6)
    net = check_module(lambda x, o, m: bound(x, o, weight, None, padding=1, mask=m), x, offset, mask)
    names = {net.network.get_layer(i).name.split(".")[0] for i in range(net.network.num_layers)}
    assert "deform_conv2d" in names, names


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")  # unit-size grids, kept on purpose
@pytest.mark.parametrize("size", [(2, 3, 5, 7), (1, 2, 1, 4), (2, 1, 3, 4, 5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid(size, align_corners):
    torch.manual_seed(0)
    theta = torch.randn(size[0], len(size) - 2, len(size) - 1)
    check_module(lambda t: F.affine_grid(t, size, align_corners), theta)


class STN(torch.nn.Module):
    """A spatial transformer: localization net -> affine grid -> grid sample."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.Linear(4 * 5 * 5, 6))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        return F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)


def test_spatial_transformer():
    torch.manual_seed(0)
    check_module(STN(), torch.randn(2, 3, 11, 11))
