"""Hybrid execution (fallback=True): calls TensorRT cannot run execute in PyTorch between engine segments.

Every case: the interpreted hybrid program equals PyTorch (float32 within 1e-4, others exactly), each segment's
engine builds, and the state dict round trip with ``weights_only=True`` gives the same program and engines
(tests/harness.py check_hybrid)."""
import io

import pytest
import torch
import torch.nn.functional as F

import torch2x
from harness import check_hybrid, torch_steps
from torch2x import flavour
from torch2x.hybrid import HybridError, HybridModule, HybridNetwork
from torch2x.plugins import plugin_op
from torch2x.steps import StepError
from torch2x.tracer import register_target, traceable


class Around(torch.nn.Module):
    """Two convolutions with ``middle`` between them."""

    def __init__(self, middle, channels=4):
        super().__init__()
        self.first = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.middle = middle
        self.second = torch.nn.Conv2d(channels, 5, 3, padding=1)

    def forward(self, x):
        return self.second(self.middle(self.first(x)))


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _image(seed=0, shape=(1, 3, 8, 16)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_call_without_converter_between_two_convolutions():
    model = Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs()[..., :8].relu()))
    net = check_hybrid(model, _image(), others=[(_image(1),)])
    assert torch_steps(net) == ["torch.fft.rfft", "torch.Tensor.abs"]
    assert len(net.segments) == 2 and net.torch_calls == 2
    entry = net.report.unsupported["torch.fft.rfft"]
    assert "runs in PyTorch" in entry.reason and entry.module_paths == {"middle": 1}
    text = str(net)
    assert "2 TensorRT engine(s)" in text and "pytorch: torch.fft.rfft at middle" in text
    assert "engine 1" in text and "in: v" in text  # the tensors crossing each boundary


@pytest.mark.parametrize("op", ["nonzero", "masked_select", "unique"])
def test_data_dependent_sizes_reach_the_next_engine_as_dynamic_dims(op):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.lin = torch.nn.Linear(4, 6)

        def forward(self, x):
            rows = self.conv(x).permute(0, 2, 3, 1).reshape(-1, 4)
            if op == "nonzero":
                picked = rows[torch.nonzero(rows[:, 0] > 0).squeeze(1)]
            elif op == "masked_select":
                picked = rows.masked_select(rows[:, :1] > 0).reshape(-1, 4)
            else:
                picked = torch.unique(rows.round(), dim=0)
            return self.lin(picked).relu() * 2

    x, other = _image(), _image(3)
    model = Model().eval()
    with torch.no_grad():
        assert model(x).shape[0] != model(other).shape[0]  # the second image keeps another number of rows
    net = check_hybrid(model, x, others=[(other,)])
    assert any(op in fn for fn in torch_steps(net))
    ranges = [r for profile in net.segments[-1].profiles for r in profile.values()]
    assert ranges, "the rows picked by the data-dependent op reach the last engine as a dynamic dim"
    low, _, high = ranges[0]
    assert low[0] == 0 and high[0] >= 8 * 16  # at most every row: not the example's count


def test_nms_bound_is_the_number_of_boxes():
    import torchvision

    def fn(boxes, scores):
        keep = torchvision.ops.nms(boxes * 1.0, scores.sigmoid(), 0.5)
        return boxes[keep] * 2, scores[keep] + 1

    def data(seed):
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(30, 2, generator=g) * 50
        return torch.cat([xy, xy + 5 + torch.rand(30, 2, generator=g) * 20], 1), torch.randn(30, generator=g)

    net = check_hybrid(Fn(fn), *data(0), others=[data(1)])
    assert "torchvision.ops.nms" in torch_steps(net)[0] or "nms" in torch_steps(net)[0]
    bounded = [hi for seg in net.segments for ranges in seg.profiles for (_, _, hi) in ranges.values()]
    assert bounded and all(h[0] == 30 for h in bounded)


def test_float64_island_runs_in_pytorch():
    model = Around(Fn(lambda y: (y.double() * 1e-3 + 1.0).log().float() * 1000.0))
    net = check_hybrid(model, _image())
    assert torch_steps(net) == ["torch.Tensor.double", "torch.Tensor.__mul__", "torch.Tensor.__add__",
                                "torch.Tensor.log", "torch.Tensor.float"]
    assert "float64" in net.report.unsupported["torch.Tensor.double"].reason


@plugin_op("t2xhybrid::scaled_tanh", shape=lambda x, scale: x.shape)
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.tanh(x) * scale


@pytest.mark.skipif(flavour.SUPPORTS_PLUGINS, reason="plugin ops are engine layers where TensorRT has plugins")
def test_plugin_op_runs_in_pytorch_on_tensorrt_rtx():
    model = Around(Fn(lambda y: scaled_tanh(y, scale=1.5)))
    net = check_hybrid(model, _image())
    assert torch_steps(net) == ["t2xhybrid::scaled_tanh"]
    assert "needs plugin support" in net.report.unsupported["t2xhybrid::scaled_tanh"].reason
    assert len(net.segments) == 2  # no placeholder left: every engine builds (checked above)


def test_user_listed_ops_and_modules_run_in_pytorch():
    model = Around(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Hardswish()))
    net = check_hybrid(model, _image(), torch_executed_ops=["hardswish"])
    assert torch_steps(net) == ["torch.nn.functional.hardswish"]
    assert "torch_executed_ops" in net.report.unsupported["torch.nn.functional.hardswish"].reason
    by_path = check_hybrid(model, _image(), torch_executed_modules=["middle.0"])
    assert torch_steps(by_path) == ["torch.nn.functional.relu"]
    by_class = check_hybrid(model, _image(), torch_executed_modules=["ReLU"])
    assert torch_steps(by_class) == ["torch.nn.functional.relu"]


def test_several_and_nested_outputs_cross_boundaries():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            values, inverse, counts = torch.unique(y.round(), return_inverse=True, return_counts=True)
            z = (inverse.float() * 0.5 + y).relu()
            return {"features": (y, [z, counts * 2]), "values": values, "scale": 3}

    net = check_hybrid(Model(), _image(), others=[(_image(5),)])
    assert torch_steps(net) == ["torch.unique"]
    step = next(s for s in net.program["steps"] if "engine" not in s)
    assert len(step["outputs"]) == 3


def test_segment_smaller_than_min_block_size_runs_in_pytorch():
    def middle(y):
        y = torch.fft.rfft(y, dim=-1).abs()
        y = y + 1.0  # alone between two PyTorch steps: a one-call segment
        return torch.fft.irfft(y.to(torch.complex64), n=16, dim=-1)

    model = torch.nn.Sequential(Around(Fn(middle)), torch.nn.ReLU())  # conv, relu: 2 calls after the middle
    model[0].first = torch.nn.Sequential(model[0].first, torch.nn.ReLU())  # and 2 before it
    every = check_hybrid(model, _image())
    assert len(every.segments) == 3
    folded = check_hybrid(model, _image(), min_block_size=2)
    assert len(folded.segments) == 2
    assert "torch.Tensor.__add__" in torch_steps(folded)
    assert "min_block_size=2" in folded.report.unsupported["torch.Tensor.__add__"].reason


def test_without_fallback_calls_the_result_is_the_plain_network_and_module():
    model = Around(torch.nn.ReLU())
    net = torch2x.build_network(model, [_image()], fallback=True)
    assert isinstance(net, torch2x.ConvertedNetwork)
    assert isinstance(torch2x.torch2x(model, [_image()], fallback=True), torch2x.TRTModule)


def test_fallback_off_keeps_refusing_unsupported_calls():
    model = Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs()[..., :8]))
    with pytest.raises(torch2x.UnsupportedOperatorError, match="torch.fft.rfft"):
        torch2x.torch2x(model, [_image()])


def test_torch2x_returns_a_hybrid_module_that_saves_and_loads_weights_only():
    model = Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs()[..., :8]))
    module = torch2x.torch2x(model, [_image()], fallback=True)
    assert isinstance(module, HybridModule) and not module.report.ok
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    restored = type(module)()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.program == module.program and len(restored.engines) == 2
    with pytest.raises(torch2x.TRTModuleError, match="NVIDIA GPU|CUDA"):
        restored(_image())  # running the engines needs a GPU


def _saved_program(fn_name: str) -> dict:
    model = Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs()[..., :8]))
    state = torch2x.torch2x(model, [_image()], fallback=True).state_dict()
    state["program"]["steps"][1]["fn"] = fn_name
    return state


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "torch.load", "subprocess.check_output"])
def test_loading_a_program_naming_a_function_outside_the_allow_list_is_refused(name):
    with pytest.raises(StepError, match=f"calls '{name}'.*refusing to load"):
        HybridModule().load_state_dict(_saved_program(name))


def test_loading_a_malformed_program_is_refused():
    state = _saved_program("torch.fft.rfft")
    state["program"]["steps"][1]["args"] = {"tuple": [{"ref": 99}]}
    with pytest.raises(StepError, match="reads a value no earlier step makes"):
        HybridModule().load_state_dict(state)
    state["program"]["version"] = 99
    with pytest.raises(StepError, match="not a torch2x hybrid program"):
        HybridModule().load_state_dict(state)


def test_a_call_with_a_lambda_argument_is_refused_at_conversion():
    model = Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs().apply_(lambda v: v * 2)))
    with pytest.raises(HybridError, match=r"torch.Tensor.apply_ at middle .*no plain form.*What to do"):
        torch2x.build_network(model, [_image()], fallback=True)


def test_an_unnameable_registered_function_is_refused_at_conversion():
    doubled = traceable("t2xhybrid.doubled_lambda")(lambda y: torch.fft.rfft(y, dim=-1).abs() * 2)
    with pytest.raises(HybridError, match="t2xhybrid.doubled_lambda at middle .*lambda, closure or bound method"):
        torch2x.build_network(Around(Fn(doubled)), [_image()], fallback=True)

    class Helper:
        def twice(self, y):
            return torch.fft.rfft(y, dim=-1).abs() * 2

    helper = Helper()
    register_target(helper, "twice", "t2xhybrid.helper_twice")
    with pytest.raises(HybridError, match="t2xhybrid.helper_twice at middle .*method of one object"):
        torch2x.build_network(Around(Fn(lambda y: helper.twice(y))), [_image()], fallback=True)


def test_fallback_options_are_checked():
    model = Around(torch.nn.ReLU())
    with pytest.raises(ValueError, match="for fallback=True"):
        torch2x.build_network(model, [_image()], torch_executed_ops=["relu"])
    with pytest.raises(ValueError, match="min_block_size must be a positive int"):
        torch2x.build_network(model, [_image()], fallback=True, min_block_size=0)
    with pytest.raises(TypeError, match="takes a list of names"):
        torch2x.build_network(model, [_image()], fallback=True, torch_executed_ops="relu")


def test_interpret_checks_the_number_of_inputs():
    net = torch2x.build_network(Around(Fn(lambda y: torch.fft.rfft(y, dim=-1).abs()[..., :8])), [_image()],
                                fallback=True)
    assert isinstance(net, HybridNetwork)
    with pytest.raises(ValueError, match="takes 1 input tensors, got 2"):
        net.interpret(_image(), _image())


def test_relu_through_functional_alias_is_unaffected():
    check = torch2x.build_network(Around(Fn(F.relu)), [_image()], fallback=True)
    assert isinstance(check, torch2x.ConvertedNetwork)
