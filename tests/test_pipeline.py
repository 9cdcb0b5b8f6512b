"""The core pipeline: tracing, patch hygiene, threads, report, errors, state dict round trip."""
from __future__ import annotations

import io
import json
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch2x
from torch2x import tracer as tracer_mod
from harness import check_module


def _patched_objects():
    return {(owner, name): owner.__dict__.get(name) for owner, name, *_ in tracer_mod.targets()}


class Unsupported(nn.Module):
    """Calls an op with no converter (torch.cosine_similarity) inside a submodule."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.ReLU())

    def forward(self, x):
        y = self.inner(x)
        return torch.special.bessel_j0(y) + 1


def test_unsupported_op_is_reported_with_module_path():
    rep = torch2x.report(Unsupported(), [torch.randn(2, 3)])
    assert not rep.ok
    entry = rep.unsupported["torch.special.bessel_j0"]
    assert entry.count == 1 and dict(entry.module_paths) == {"<root>": 1}
    assert entry.example == "float32[2, 3]"
    table = str(rep)
    assert "torch.special.bessel_j0" in table and "no converter" in table
    data = json.loads(rep.to_json())
    assert data["ok"] is False and data["unsupported"][0]["op"] == "torch.special.bessel_j0"


def test_unsupported_op_raises_with_report():
    with pytest.raises(torch2x.UnsupportedOperatorError, match="torch.special.bessel_j0 at <root>") as info:
        torch2x.torch2x(Unsupported(), [torch.randn(2, 3)])
    assert "torch.special.bessel_j0" in info.value.report.unsupported


def test_unsupported_call_not_reaching_outputs_passes_when_not_strict():
    def fn(x):
        torch.special.bessel_j0(x)  # result unused
        return F.relu(x)

    x = torch.randn(3, 4)
    net = torch2x.build_network(fn, [x], strict=False)
    assert list(net.report.unsupported) == ["torch.special.bessel_j0"]
    torch.testing.assert_close(net.interpret(x), F.relu(x), rtol=0, atol=0)
    with pytest.raises(torch2x.UnsupportedOperatorError, match="bessel_j0"):
        torch2x.build_network(fn, [x], strict=True)


def test_patches_restored_after_failing_conversion():
    before = _patched_objects()
    original_add = torch.Tensor.__add__

    def boom(x):
        x + 1  # a traced call before the failure
        raise ValueError("model failed")

    with pytest.raises(ValueError, match="model failed"):
        torch2x.build_network(boom, [torch.randn(2)])
    assert _patched_objects() == before
    assert torch.Tensor.__add__ is original_add
    assert not hasattr(torch.Tensor.__add__, "__torch2x_original__")


def test_other_threads_see_plain_torch_during_conversion():
    seen = {}
    started, release = threading.Event(), threading.Event()

    def other():
        started.wait(10)
        a = torch.ones(3)
        # calls go through (possibly patched) attributes but must behave exactly as plain torch
        seen["value"] = (a + 1).relu().sum().item()
        seen["thread_tracer"] = getattr(tracer_mod._local, "tracer", None)
        release.set()

    t = threading.Thread(target=other)
    t.start()

    def model(x):
        started.set()
        release.wait(10)
        return F.relu(x) * 2

    net = check_module(model, torch.randn(4))
    t.join()
    assert seen == {"value": 6.0, "thread_tracer": None}
    assert net.report.converted_calls == 2  # the other thread's add/relu/sum were not converted here


def test_nested_calls_are_not_converted_again():
    # F.hardswish is converted as one call; PyTorch's own internals are not traced separately.
    net = check_module(lambda x: F.hardswish(x), torch.randn(2, 8))
    assert net.report.converted_calls == 1


def test_layer_names_follow_module_paths():
    model = nn.Sequential(nn.Sequential(nn.ReLU()), nn.ReLU())
    net = check_module(model, torch.randn(2, 3))
    names = [net.network.get_layer(i).name for i in range(net.network.num_layers)]
    assert "0.0/relu" in names and "1/relu" in names


def test_nested_inputs_and_outputs():
    def fn(pair, d):
        a, b = pair
        return {"sum": a + d["c"], "parts": [F.relu(b), a * b]}

    x = (torch.randn(2, 3), torch.randn(2, 3))
    net = check_module(fn, x, {"c": torch.randn(2, 3)})
    assert net.input_names == ["input_0", "input_1", "input_2"]
    assert net.output_names == ["output_0", "output_1", "output_2"]


def test_input_output_names_and_passthrough_output():
    net = check_module(lambda x, y: (x, F.relu(y)), torch.randn(2), torch.randn(3),
                       input_names=["a", "b"], output_names=["same", "relu"])
    assert net.input_names == ["a", "b"] and net.output_names == ["same", "relu"]


def test_float64_input_is_refused_clearly():
    with pytest.raises(TypeError, match="float64, which TensorRT has no type for"):
        torch2x.build_network(lambda x: x + 1, [torch.randn(2, dtype=torch.float64)])


def test_fp16_casts_inputs_and_outputs_and_keeps_module_dtype():
    net = check_module(lambda x: F.relu(x) + 1.5, torch.randn(2, 3), fp16=True, rtol=1e-2)
    from torch2x.flavour import trt

    assert net.network.get_input(0).dtype == trt.DataType.FLOAT
    assert net.network.get_output(0).dtype == trt.DataType.FLOAT
    types = [net.network.get_layer(i).get_output(0).dtype for i in range(net.network.num_layers)]
    assert trt.DataType.HALF in types


def _tiny_module():
    return torch2x.torch2x(nn.Sequential(nn.ReLU()), [torch.randn(1, 4)], input_names=["x"])


def test_state_dict_round_trip_weights_only():
    model_trt = _tiny_module()
    buf = io.BytesIO()
    torch.save(model_trt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    restored = torch2x.TRTModule()
    restored.load_state_dict(state)
    assert restored.engine_bytes == model_trt.engine_bytes and len(restored.engine_bytes) > 0
    assert restored.meta == model_trt.meta
    assert restored.meta["input_names"] == ["x"] and restored.meta["input_shapes"] == [[1, 4]]
    assert restored.meta["flavour"] == torch2x.flavour.NAME


def test_trtmodule_refuses_bad_inputs_before_tensorrt():
    model_trt = _tiny_module()
    with pytest.raises(ValueError, match=r"expects 1 input tensors \(\['x'\]\), got 2"):
        model_trt(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(TypeError, match="input 'x' has dtype torch.float16, the engine takes torch.float32"):
        model_trt(torch.randn(1, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"input 'x' has shape \(2, 4\), the engine takes \(1, 4\)"):
        model_trt(torch.randn(2, 4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_trtmodule_without_cuda_says_so():
    with pytest.raises(torch2x.TRTModuleError, match="no CUDA device is available"):
        _tiny_module()(torch.randn(1, 4))


def test_save_engine_writes_plan_and_io_json(tmp_path):
    model_trt = _tiny_module()
    path = str(tmp_path / "tiny.plan")
    model_trt.save_engine(path)
    assert open(path, "rb").read() == model_trt.engine_bytes
    description = json.load(open(path + ".json"))
    assert description["input_names"] == ["x"] and description["output_dtypes"] == ["torch.float32"]


def test_each_weight_is_one_constant():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return x * self.w + self.w

    net = check_module(Shared(), torch.randn(2, 3))
    from torch2x.flavour import trt

    constants = [net.network.get_layer(i) for i in range(net.network.num_layers)
                 if net.network.get_layer(i).type == trt.LayerType.CONSTANT]
    assert len(constants) == 1


def test_call_through_a_captured_reference_is_converted():
    from torch.nn.functional import relu as captured_relu  # taken before the patches: the watch still sees it

    net = check_module(lambda x: captured_relu(x) + 1, torch.randn(2, 3))
    assert net.report.converted_calls == 2


def test_unknown_torch_call_around_the_patches_is_reported_not_frozen():
    def fn(x):
        return torch.ops.aten.special_bessel_j0(x) + 1  # reaches torch without a patched attribute

    rep = torch2x.report(fn, [torch.randn(2, 3)])
    (entry,) = rep.unsupported.values()
    assert "reference taken before tracing" in entry.reason and "bessel_j0" in entry.op
    with pytest.raises(torch2x.UnsupportedOperatorError, match="bessel_j0"):
        torch2x.build_network(fn, [torch.randn(2, 3)])


def test_trtmodule_moves_like_a_module_but_not_to_cpu_or_another_dtype():
    model_trt = _tiny_module()
    assert model_trt.to("cuda:1") is model_trt and model_trt.device == torch.device("cuda:1")
    assert model_trt.cuda(0).device == torch.device("cuda:0")
    with pytest.raises(torch2x.TRTModuleError, match="cannot move to cpu"):
        model_trt.to("cpu")
    with pytest.raises(torch2x.TRTModuleError, match="cannot move to cpu"):
        model_trt.cpu()
    with pytest.raises(torch2x.TRTModuleError, match=r"types are fixed at build time.*\.to\(torch.float16\)"):
        model_trt.to(torch.float16)


def test_in_place_op_on_a_view_writes_through_to_the_base():
    def fn(x):
        y = x * 1
        y[0].add_(1)        # an in-place op on a view changes y
        y[:, :2] *= 2       # augmented assignment on a slice
        return y

    check_module(fn, torch.randn(3, 4))


def test_reading_a_view_that_missed_a_write_is_reported():
    def fn(x):
        y = x * 1
        first, second = y[0], y[1:]
        first.add_(1)       # written through to y, but `second` was taken before
        return y, second.t()

    rep = torch2x.report(fn, [torch.randn(3, 4)])
    assert "modified in place through a view" in rep.unsupported["torch.Tensor.t"].reason


def test_indexing_is_converted_and_torch_still_takes_0d_tensors_as_scalars():
    def fn(x):
        return torch.tensor([x[0].item(), 2.0]) + x[:2] * x[None, 0]

    rep = torch2x.report(fn, [torch.randn(3)])
    assert rep.ok and rep.converted_calls >= 4  # x[0], x[:2], x[None, 0], mul, add
    assert "torch.Tensor.item" in rep.data_dependent
