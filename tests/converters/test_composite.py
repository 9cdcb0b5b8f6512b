"""converters/composite.py and the composite mechanism (torch2x.composite): ops computed as compositions
of converted ops, checked against PyTorch through the interpreter; composites that disagree with PyTorch,
or whose parts cannot be converted, are reported."""
import json

import pytest
import torch
import torch.nn.functional as F
from harness import check_module

import torch2x
from torch2x.registry import COMPOSITES


def several(*fns):
    return lambda *xs: tuple(fn(*xs) for fn in fns)


def test_elementwise_composites():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    a[0, :3] = torch.tensor([0.0, float("inf"), -float("inf")])
    b[0, :3] = torch.tensor([0.0, float("inf"), -float("inf")])
    check_module(several(lambda x, y: torch.deg2rad(x), lambda x, y: torch.rad2deg(x), lambda x, y: torch.sinc(x),
                         torch.logaddexp, torch.logaddexp2,
                         lambda x, y: torch.heaviside(x, y), torch.isclose, lambda x, y: torch.isposinf(x),
                         lambda x, y: torch.isneginf(x), lambda x, y: torch.isreal(x), torch.xlogy,
                         lambda x, y: torch.special.entr(x.abs()), lambda x, y: torch.special.ndtr(x),
                         lambda x, y: torch.special.xlog1py(x, y.abs()), lambda x, y: x.resolve_conj().conj(),
                         lambda x, y: torch.resolve_neg(x).real, torch.copysign, lambda x, y: torch.signbit(x)),
                 a, b, build=False)


def test_integer_inputs_promote_like_pytorch():
    x = torch.randint(-90, 90, (4, 6), dtype=torch.int32)
    check_module(several(torch.deg2rad, torch.sinc, lambda t: torch.isposinf(t), torch.isreal), x, build=False)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction):
    x, y, w = torch.randn(4, 6), torch.randn(4, 6), torch.rand(4, 6)
    check_module(several(lambda a, b, c: F.mse_loss(a, b, reduction=reduction),
                         lambda a, b, c: F.mse_loss(a, b, reduction=reduction, weight=c),
                         # (not l1_loss(weight=): under a TorchFunctionMode, as while tracing, PyTorch 2.14's
                         # F.l1_loss drops its weight argument, so the traced pass itself is unweighted)
                         lambda a, b, c: F.l1_loss(a, b, reduction=reduction),
                         lambda a, b, c: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.5),
                         lambda a, b, c: F.huber_loss(a, b, reduction=reduction, delta=0.7, weight=c),
                         lambda a, b, c: F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction=reduction),
                         lambda a, b, c: F.poisson_nll_loss(a, c + 1, full=True, reduction=reduction),
                         lambda a, b, c: F.gaussian_nll_loss(a, b, c + 0.1, full=True, reduction=reduction),
                         lambda a, b, c: F.soft_margin_loss(a, b.sign(), reduction=reduction),
                         lambda a, b, c: F.binary_cross_entropy(c, torch.sigmoid(b), reduction=reduction)),
                 x, y, w, build=False)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_with_class_indices_and_probabilities(reduction, smoothing):
    logits, weight = torch.randn(5, 4, 3), torch.rand(4)
    target = torch.tensor([[0, 1, 3], [2, -100, 1], [3, 3, 0], [1, 0, 2], [-100, 2, 2]])
    probs = torch.softmax(torch.randn(5, 4, 3), 1)
    check_module(several(
        lambda x, t, p, w: F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing),
        lambda x, t, p, w: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing),
        lambda x, t, p, w: F.cross_entropy(x, t.clamp(min=0), w, ignore_index=1, reduction=reduction),
        lambda x, t, p, w: F.cross_entropy(x, p, w, reduction=reduction, label_smoothing=smoothing),
        lambda x, t, p, w: F.cross_entropy(x[:, :, 0], t[:, 0].clamp(min=0), reduction=reduction),
        lambda x, t, p, w: F.nll_loss(F.log_softmax(x, 1), t, w, reduction=reduction)),
        logits, target, probs, weight, build=False)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ranking_and_embedding_losses(reduction):
    a, b, c = torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 8)
    pos_weight = torch.rand(8)
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    check_module(several(
        lambda a, b, c, y: F.binary_cross_entropy_with_logits(a, torch.sigmoid(b), reduction=reduction,
                                                              pos_weight=pos_weight),
        lambda a, b, c, y: F.margin_ranking_loss(a[:, 0], b[:, 0], y, margin=0.1, reduction=reduction),
        lambda a, b, c, y: F.triplet_margin_loss(a, b, c, swap=True, reduction=reduction),
        lambda a, b, c, y: F.hinge_embedding_loss(a[:, 0], y, reduction=reduction),
        lambda a, b, c, y: F.cosine_embedding_loss(a, b, y, margin=0.2, reduction=reduction),
        lambda a, b, c, y: F.multilabel_soft_margin_loss(a, (b > 0).float(), reduction=reduction),
        lambda a, b, c, y: F.multi_margin_loss(a, torch.tensor([0, 3, 7, 1, 1, 5]), p=2, reduction=reduction),
        lambda a, b, c, y: F.cosine_similarity(a, b, dim=1),
        lambda a, b, c, y: F.pairwise_distance(a, b, p=3.0, keepdim=True)),
        a, b, c, y, build=False)


def test_composite_layers_build_an_engine():
    check_module(lambda x, y: F.cross_entropy(x, y.argmax(1)) + torch.logaddexp(x, y).sum(), torch.randn(4, 5),
                 torch.randn(4, 5))


def test_a_composite_that_disagrees_with_pytorch_is_reported(monkeypatch):
    # a wrong composite must never bind: the real result checks it on the example
    monkeypatch.setitem(COMPOSITES, "torch.logaddexp", lambda a, b: torch.maximum(a, b))
    rep = torch2x.report(lambda x, y: torch.logaddexp(x, y), [torch.randn(3), torch.randn(3)])
    assert "differs from PyTorch" in rep.unsupported["torch.logaddexp"].reason


def test_a_composite_whose_parts_do_not_convert_is_reported(monkeypatch):
    monkeypatch.setitem(COMPOSITES, "torch.logaddexp", lambda a, b: torch.special.bessel_j0(a) * 0 + torch.log(
        torch.exp(a) + torch.exp(b)))
    rep = torch2x.report(lambda x, y: torch.logaddexp(x, y), [torch.randn(3), torch.randn(3)])
    assert list(rep.unsupported) == ["torch.logaddexp"]  # the op the model called, with the part that failed
    assert "bessel_j0" in rep.unsupported["torch.logaddexp"].reason


def test_a_composite_that_refuses_its_arguments_is_reported():
    rep = torch2x.report(lambda x: torch.polygamma(2, x), [torch.rand(5) + 0.5])
    assert "polygamma with n > 0" in rep.unsupported["torch.polygamma"].reason


def test_user_composite_registration():
    @torch2x.composite("torch.nn.functional.softmin")
    def softmin(input, dim=None, _stacklevel=3, dtype=None):
        return torch.softmax(-input, dim)

    saved = torch2x.registry.CONVERTERS.pop("torch.nn.functional.softmin", None)
    try:
        net = check_module(lambda x: F.softmin(x, 1), torch.randn(2, 5), build=False)
        assert net.report.converted_calls >= 2  # softmin and the calls inside it
    finally:
        COMPOSITES.pop("torch.nn.functional.softmin")
        if saved is not None:
            torch2x.registry.CONVERTERS["torch.nn.functional.softmin"] = saved


# --------------------------------------------------------------------------- float64


@pytest.mark.parametrize("fn", [
    lambda x: torch.softmax(x, 1, dtype=torch.float64),
    lambda x: x.double() * 2,
    lambda x: x.to(torch.float64).sum(1),
    lambda x: torch.float_power(x.abs(), 2),
], ids=["softmax-dtype", "double", "to", "float_power"])
def test_float64_computes_in_float32_with_a_note(fn):
    x = torch.randn(3, 4)
    net = torch2x.build_network(fn, [x])  # strict: converts, with a note
    assert net.report.ok
    out, ref = net.interpret(x), fn(x)
    assert out.dtype == torch.float32 and ref.dtype == torch.float64
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert any("float64" in n for n in net.report.notes)
    assert "note: " in str(net.report) and "float64" in str(net.report)
    assert any("float64" in n for n in json.loads(net.report.to_json())["notes"])


def test_float64_inside_the_network_narrows_without_an_output_note():
    x = torch.randn(3, 4)
    net = torch2x.build_network(lambda t: (t.double() * 3).float(), [x])
    assert torch.allclose(net.interpret(x), x * 3)
    assert net.report.notes == [f"torch.Tensor.{op}: computes float64 in float32 (TensorRT has no float64)"
                                for op in ("double", "__mul__")]


def test_float64_inputs_stay_refused():
    with pytest.raises(TypeError, match="float64"):
        torch2x.build_network(lambda t: t * 2, [torch.randn(3, dtype=torch.float64)])


def test_gamma_functions_over_the_whole_line():
    # negatives near the poles included: the reflection reduces pi * x first, as float32 needs
    x = torch.cat([torch.linspace(-9.9, 12, 397), torch.tensor([0.5, 1.0, 2.0, 1e-3, -1e-3, 40.0])])
    check_module(several(torch.lgamma, torch.digamma, lambda t: torch.mvlgamma(t.abs() + 2, 3),
                         lambda t: torch.special.gammaln(t)), x, build=False)
