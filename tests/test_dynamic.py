"""Dynamic shapes: input ranges become -1 dims and optimization profiles; the network is checked at
min, opt, max and sizes between; ops that fix a dynamic dim are reported."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torch2x
from harness import LastHiddenState, relative_error, torchvision_model
from torch2x.flavour import trt
from torch2x.shapes import TracedInt


def _cnn(name):
    return torchvision_model(name, 64)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large"])
def test_dynamic_batch_matches_pytorch_across_the_range(name):
    model = _cnn(name)
    net = torch2x.build_network(model, [torch.randn(4, 3, 64, 64)], input_names=["x"],
                                dynamic_shapes={"x": {0: (1, 4, 16)}})
    assert tuple(net.network.get_input(0).shape) == (-1, 3, 64, 64)
    assert tuple(net.network.get_output(0).shape) == (-1, 1000)
    for batch in (1, 2, 4, 9, 16):  # min, between, opt, between, max
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x)
        err = relative_error(net.interpret(x), ref)
        assert err <= 1e-4, f"batch {batch}: relative error {err:.2e}"
    assert len(net.build_engine()) > 0  # the profile goes into the builder config


def test_fixed_shape_resnet50_has_no_shape_layers():
    net = torch2x.build_network(_cnn("resnet50"), [torch.randn(1, 3, 64, 64)])
    types = {net.network.get_layer(i).type for i in range(net.network.num_layers)}
    assert trt.LayerType.SHAPE not in types and trt.LayerType.SHUFFLE in types


def test_ops_that_fix_a_dynamic_dim_are_reported():
    def fn(x):
        return torch.cat([x, x[:1].expand(int(x.shape[0]), -1)], dim=1)  # int() freezes the example's batch

    rep = torch2x.report(fn, [torch.randn(2, 5)], dynamic_shapes={"input_0": {0: (1, 2, 8)}})
    assert not rep.ok
    reasons = " ".join(u.reason for u in rep.unsupported.values())
    assert "dynamic dimension" in reasons
    with pytest.raises(torch2x.UnsupportedOperatorError, match="dynamic dimension"):
        torch2x.build_network(fn, [torch.randn(2, 5)], dynamic_shapes={"input_0": {0: (1, 2, 8)}})


def test_trtmodule_refuses_inputs_outside_every_profile():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    profiles = [{"x": {0: (1, 1, 2)}}, {"x": {0: (3, 4, 8)}}]
    model_trt = torch2x.torch2x(model, [torch.randn(4, 4)], input_names=["x"], dynamic_shapes=profiles)
    assert model_trt.meta["input_shapes"] == [[-1, 4]]
    assert model_trt.select_profile([torch.randn(2, 4)]) == 0
    assert model_trt.select_profile([torch.randn(5, 4)]) == 1
    with pytest.raises(ValueError, match=r"input 'x' dim 0 is 9, outside the engine's range \[1, 2\] "
                                         r"\(and no other of the 2 profiles fits\)"):
        model_trt(torch.randn(9, 4))
    with pytest.raises(ValueError, match=r"input 'x' has shape \(5, 3\), the engine takes \(-1, 4\)"):
        model_trt(torch.randn(5, 3))


@pytest.mark.parametrize("spec, error, message", [
    ({"y": {0: (1, 2, 4)}}, ValueError, r"names inputs \['y'\]; the inputs are \['input_0'\]"),
    ({"input_0": {0: (3, 4, 8)}}, ValueError, r"shape \(2, 5\) in the example, outside its range \[3, 5\]..\[8, 5\]"),
    ({"input_0": {0: (4, 2, 8)}}, ValueError, r"need 0 <= min <= opt <= max"),
    ({"input_0": {0: (1, 2)}}, ValueError, r"must be \(min, opt, max\)"),
])
def test_bad_dynamic_shapes_are_refused_clearly(spec, error, message):
    with pytest.raises(error, match=message):
        torch2x.build_network(lambda x: x.relu(), [torch.randn(2, 5)], dynamic_shapes=spec)


# ----------------------------------------------------------------------------- traced sizes

def _check_range(net, model, shapes, make, tol=1e-4):
    """Interpret ``net`` at each shape and compare with ``model`` (PyTorch) there."""
    for shape in shapes:
        x = make(shape)
        with torch.no_grad():
            ref = model(x)
        out = net.interpret(x)
        if isinstance(ref, dict):
            out, ref = out["out"], ref["out"]
        err = relative_error(out, ref)
        assert err <= tol, f"shape {shape}: relative error {err:.2e}"


def _shape_arithmetic(x):
    b, n = x.shape
    y = torch.cat([x, x[:1].expand(b, -1)], dim=1)  # expand to the traced batch
    z = y.view(b, 2, y.size(1) // 2)[:, :, 1:] + y[:, -n + 1:].unsqueeze(1)
    steps = torch.arange(x.size(0), dtype=torch.float32).reshape(-1, 1, 1)  # a fill of the traced length
    w = z + steps + torch.zeros(b, 1, 1) + torch.ones_like(z) * x.numel()
    return w.reshape(-1, z.shape[-1])[: 2 * b - 1]


@pytest.mark.parametrize("fn, example, spec, shapes", [
    (_shape_arithmetic, (3, 6), {0: (1, 3, 8)}, [(1, 6), (2, 6), (3, 6), (5, 6), (8, 6)]),
    (lambda x: F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] + 3), mode="bilinear"), (1, 2, 8, 8),
     {2: (4, 8, 16), 3: (4, 8, 16)}, [(1, 2, 4, 4), (1, 2, 8, 8), (1, 2, 16, 16), (1, 2, 5, 11), (1, 2, 12, 7)]),
    (lambda x: x.flatten(0, 1).view(x.shape[0], x.shape[1], -1).transpose(1, 2)[..., ::2] * x.size(-1) % 5,
     (2, 4, 6), {0: (1, 2, 4), 1: (3, 4, 9)}, [(1, 3, 6), (2, 4, 6), (4, 9, 6), (3, 5, 6), (2, 8, 6)]),
    (lambda x: torch.cat(F.pad(x, (1, 2, 0, 2), value=0.5).chunk(2, dim=1)[::-1], dim=-1), (2, 4, 5),
     {0: (1, 2, 3), 2: (3, 5, 9)}, [(1, 4, 3), (2, 4, 5), (3, 4, 9), (2, 4, 4), (1, 4, 7)]),
    (lambda x: torch.cat([p.flip(-1) for p in x.chunk(3, dim=-1)] + list(x.split([1, x.shape[-1] - 1], -1)), -1),
     (2, 4, 9), {2: (6, 9, 12)}, [(2, 4, 6), (2, 4, 9), (2, 4, 12)]),
    (lambda x: x.narrow(-1, 1, x.shape[-1] - 2) * x.narrow(0, -1, 1).narrow(2, 0, x.size(2) - 2), (3, 4, 9),
     {0: (2, 3, 5), 2: (6, 9, 12)}, [(2, 4, 6), (3, 4, 9), (5, 4, 12), (4, 4, 7)]),
    (lambda x: torch.roll(x, shifts=(1, -2), dims=(0, 2)) + x.roll(3) + x.roll(-1, 1), (2, 4, 5),
     {0: (1, 2, 3), 2: (3, 5, 9)}, [(1, 4, 3), (2, 4, 5), (3, 4, 9), (2, 4, 4), (1, 4, 7)]),
])
def test_python_shape_arithmetic_follows_dynamic_dims(fn, example, spec, shapes):
    net = torch2x.build_network(fn, [torch.randn(example)], input_names=["x"], dynamic_shapes={"x": spec})
    assert all(net.network.get_input(0).shape[d] == -1 for d in spec)
    _check_range(net, fn, shapes, torch.randn, tol=1e-6)
    assert net.build_engine() is not None


def test_static_dims_stay_static_under_dynamic_shapes():
    seen = {}

    def fn(x):
        seen["batch"], seen["features"] = type(x.shape[0]), type(x.size(1))
        return x.view(x.shape[0], x.shape[1] // 2, 2).sum(-1)

    net = torch2x.build_network(fn, [torch.randn(3, 8)], input_names=["x"], dynamic_shapes={"x": {0: (1, 3, 8)}})
    assert seen == {"batch": TracedInt, "features": int}
    types = [net.network.get_layer(i).type for i in range(net.network.num_layers)]
    assert trt.LayerType.SHAPE not in types  # view(b, 4, 2) copies the batch: no shape arithmetic needed
    _check_range(net, fn, [(1, 8), (5, 8), (8, 8)], torch.randn, tol=1e-6)


def test_fcn_resnet50_dynamic_height_and_width():
    model = torchvision_model("fcn_resnet50", 64)
    net = torch2x.build_network(model, [torch.randn(1, 3, 64, 64)], input_names=["x"],
                                dynamic_shapes={"x": {2: (32, 64, 80), 3: (32, 64, 80)}})
    assert tuple(net.network.get_output(0).shape) == (1, 21, -1, -1)
    _check_range(net, model, [(1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 80, 80), (1, 3, 48, 72), (1, 3, 40, 56)],
                 torch.randn)


def test_vit_b_16_dynamic_batch():
    model = torchvision_model("vit_b_16", 224)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises it: all-zero logits
    net = torch2x.build_network(model, [torch.randn(2, 3, 224, 224)], input_names=["x"],
                                dynamic_shapes={"x": {0: (1, 2, 4)}})
    assert tuple(net.network.get_output(0).shape) == (-1, 1000)
    _check_range(net, model, [(b, 3, 224, 224) for b in (1, 2, 4, 3)], torch.randn)


def _hf_model(kind):
    import transformers as hf

    torch.manual_seed(0)
    model = hf.BertModel(hf.BertConfig()) if kind == "bert" else hf.GPT2Model(hf.GPT2Config())
    return LastHiddenState(model).eval()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_transformers_dynamic_batch_and_sequence(kind):
    model = _hf_model(kind)
    net = torch2x.build_network(model, [torch.randint(0, 1000, (2, 16))], input_names=["ids"],
                                dynamic_shapes={"ids": {0: (1, 2, 4), 1: (4, 16, 32)}})
    assert tuple(net.network.get_output(0).shape) == (-1, -1, 768)
    _check_range(net, model, [(1, 4), (2, 16), (4, 32), (3, 9), (2, 25)], lambda s: torch.randint(0, 1000, s))


def test_dynamic_shapes_under_fp16():
    """Reduced precision adds casts between the traced tensors; traced sizes must see through them."""
    import transformers as hf

    torch.manual_seed(0)
    bert = hf.BertModel(hf.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      intermediate_size=128)).eval()
    model = lambda ids: bert(input_ids=ids).last_hidden_state  # noqa: E731
    net = torch2x.build_network(model, [torch.randint(0, 1000, (2, 16))], input_names=["ids"], fp16=True,
                                dynamic_shapes={"ids": {0: (1, 2, 4), 1: (4, 16, 32)}})
    _check_range(net, model, [(1, 4), (4, 32), (3, 9)],
                 lambda s: torch.randint(0, 1000, s), tol=1e-2)  # measured 6.6e-4
