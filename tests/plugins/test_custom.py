"""User plugin ops: on full TensorRT a plugin layer built with tensorrt.plugin, run by the interpreter with the
op's PyTorch implementation; on TensorRT-RTX (no plugin layers) a report entry naming the op, and placeholder
layers that the interpreter runs with the op's PyTorch implementation but no engine build accepts."""
import json

import pytest
import torch

import torch2x
from harness import check_module, compare
from torch2x import flavour
from torch2x.interpreter import rules_plugins
from torch2x.network import placeholder_ops
from torch2x.plugins import PLUGIN_OPS, plugin_op

rtx_only = pytest.mark.skipif(flavour.SUPPORTS_PLUGINS, reason="placeholders stand in for plugins where TensorRT "
                              "has no plugin layers (TensorRT-RTX)")


@plugin_op("t2xtest::scaled_tanh", shape=lambda x, scale: x.shape)
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.tanh(x) * scale


@plugin_op("t2xtest::split_rows", shape=lambda x, rows: [(rows, x.shape[1]), (x.shape[0] - rows, x.shape[1])],
           dtype=lambda x, rows: [x.dtype, torch.int32], num_outputs=2)
def split_rows(x: torch.Tensor, rows: int):
    return x[:rows] * 2, (x[rows:] * 10).to(torch.int32)


@plugin_op("t2xtest::clamp_sum", shape=lambda a, b, limit: a.shape)
@torch.library.custom_op("t2xtest::clamp_sum", mutates_args=())
def clamp_sum(a: torch.Tensor, b: torch.Tensor, limit: float) -> torch.Tensor:
    return (a + b).clamp(max=limit)


class Net(torch.nn.Module):
    def __init__(self, via_torch_ops=False):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.via_torch_ops = via_torch_ops

    def forward(self, x):
        y = scaled_tanh(self.lin(x), scale=1.5)
        z = torch.ops.t2xtest.clamp_sum(y, x, 0.5) if self.via_torch_ops else clamp_sum(y, x, 0.5)
        return torch.relu(z)


def _rtx_entry(report, op):
    entry = report.unsupported[op]
    assert entry.reason.startswith(f"{op} needs plugin support, which tensorrt_rtx lacks"), entry.reason
    assert entry.placeholder and entry.to_dict()["placeholder"]
    return entry


def _interpreted_on_rtx(fn, *inputs, rtol=1e-4, **options):
    """On TensorRT-RTX: the strict conversion names the op, the lenient one interprets like PyTorch with
    placeholders, and no engine is built from it. Returns the ConvertedNetwork."""
    with pytest.raises(torch2x.UnsupportedOperatorError, match="needs plugin support"):
        torch2x.build_network(fn, list(inputs), **options)
    net = torch2x.build_network(fn, list(inputs), strict=False, **options)
    assert not net.report.ok
    with torch.no_grad():
        reference = fn(*inputs)
    compare(net.interpret(*inputs), reference, rtol)
    held = placeholder_ops(net.network)
    assert held and held == [op for op, u in net.report.unsupported.items() if u.placeholder]
    with pytest.raises(torch2x.EngineBuildError, match=f"placeholders for {held[0]}.*cannot run"):
        net.build_engine(False)
    return net


@pytest.mark.parametrize("via_torch_ops", [False, True])
def test_plugin_ops_convert_or_are_reported(via_torch_ops):
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    if flavour.SUPPORTS_PLUGINS:
        net = check_module(Net(via_torch_ops), x, build=False)  # building runs the plugin: needs a GPU
        types_ = {str(net.network.get_layer(i).type) for i in range(net.network.num_layers)}
        assert any("PLUGIN" in t for t in types_), types_
        assert PLUGIN_OPS["t2xtest::scaled_tanh"].descriptor is not None
        return
    assert flavour.IS_RTX
    report = torch2x.report(Net(via_torch_ops), [x])
    # clamp_sum reads the placeholder's output, which is not poisoned: it is reported on its own account
    assert list(report.unsupported) == ["t2xtest::scaled_tanh", "t2xtest::clamp_sum"]
    assert _rtx_entry(report, "t2xtest::scaled_tanh").module_paths == {"<root>": 1}
    _rtx_entry(report, "t2xtest::clamp_sum")
    assert report.converted_calls == 2  # the linear layer before and the relu after
    with pytest.raises(torch2x.UnsupportedOperatorError, match="t2xtest::scaled_tanh"):
        torch2x.torch2x(Net(via_torch_ops), [x])
    net = _interpreted_on_rtx(Net(via_torch_ops).eval(), x)
    assert placeholder_ops(net.network) == ["t2xtest::scaled_tanh", "t2xtest::clamp_sum"]
    with pytest.raises(torch2x.EngineBuildError, match="placeholders for t2xtest::scaled_tanh"):
        torch2x.torch2x(Net(via_torch_ops), [x], strict=False)


def test_torch_library_op_is_intercepted():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    fn = lambda a, b: torch.ops.t2xtest.clamp_sum(a, b, 0.25)  # noqa: E731
    if flavour.SUPPORTS_PLUGINS:
        check_module(fn, a, b, build=False)
    else:
        _rtx_entry(torch2x.report(fn, [a, b]), "t2xtest::clamp_sum")
        _interpreted_on_rtx(fn, a, b)
    assert torch.equal(fn(a, b), (a + b).clamp(max=0.25))  # patches are gone after tracing


def test_multi_output_plugin_op():
    x = torch.randn(5, 3)
    if flavour.SUPPORTS_PLUGINS:
        check_module(lambda x: split_rows(x, 2), x, build=False)
    else:
        entry = _rtx_entry(torch2x.report(lambda x: split_rows(x, 2), [x]), "t2xtest::split_rows")
        assert entry.count == 1
        net = _interpreted_on_rtx(lambda x: split_rows(x, 2), x)  # float32 and int32 outputs, exactly
        assert [net.network.get_output(i).dtype for i in range(2)] == [flavour.trt.float32, flavour.trt.int32]
        # the int32 output feeds converted ops too
        _interpreted_on_rtx(lambda x: (lambda a, b: a.sum(0) + b.float().sum(0))(*split_rows(torch.relu(x), 2)), x)


@rtx_only
def test_placeholder_input_that_is_also_an_output():
    """Marking a network output renames its tensor; the placeholder still finds the op's input."""
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = self.lin(x)
            return y, scaled_tanh(y, 2.0)

    _interpreted_on_rtx(Shared().eval(), torch.randn(2, 4))


@rtx_only
def test_placeholder_in_reduced_precision():
    torch.manual_seed(0)
    net = _interpreted_on_rtx(Net().eval(), torch.randn(3, 6), rtol=1e-2, fp16=True)
    ph = [net.network.get_layer(i) for i in range(net.network.num_layers)
          if '"placeholder"' in net.network.get_layer(i).metadata]
    assert {layer.get_output(0).dtype for layer in ph} == {flavour.trt.float16}


@rtx_only
def test_check_and_cli_on_placeholder_networks(tmp_path, capsys):
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    with pytest.raises(torch2x.UnsupportedOperatorError, match="t2xtest::scaled_tanh"):
        torch2x.check(Net(), [x])
    result = torch2x.check(Net(), [x], strict=False)
    assert result.ok and [r.name for r in result.rows] == ["lin", "output output_0"]
    assert "note: t2xtest::scaled_tanh, t2xtest::clamp_sum ran with PyTorch in place of placeholders" in str(result)

    from torch2x import cli

    model = tmp_path / "model.py"
    model.write_text("import torch, torch2x\n"
                     "@torch2x.plugins.plugin_op('t2xcli::halve', shape=lambda x: x.shape)\n"
                     "def halve(x: torch.Tensor) -> torch.Tensor:\n"
                     "    return x / 2\n"
                     "class M(torch.nn.Module):\n"
                     "    def forward(self, x):\n"
                     "        return torch.relu(halve(x + 1))\n")
    for command in ("report", "check", "convert"):
        capsys.readouterr()
        args = [command, f"{model}:M", "--shape", "2,3", "--quiet"]
        assert cli.main(args + (["--output", str(tmp_path / "m.pth")] if command == "convert" else [])) == 1
        out = capsys.readouterr()
        assert "t2xcli::halve needs plugin support" in out.out, (command, out)
        if command == "check":  # the numbers are still compared, with the op run in PyTorch
            assert "ran with PyTorch in place of placeholders" in out.out and "output output_0" in out.out, out
    assert not (tmp_path / "m.pth").exists()


def test_plugin_description_from_shape_rule():
    """What the tensorrt.plugin descriptor computes: the shape rule on meta tensors of the input shapes."""
    op = PLUGIN_OPS["t2xtest::split_rows"]
    tensors, attrs = op.split({"x": torch.empty(5, 3), "rows": 2})
    assert (tensors, attrs) == (("x",), {"rows": 2})
    from torch2x.plugins.custom import _annotated_split

    assert _annotated_split(op.signature) == (("x",), {"rows": int})
    assert _annotated_split(PLUGIN_OPS["t2xtest::clamp_sum"].signature) == (("a", "b"), {"limit": float})
    meta = [torch.empty(5, 3, device="meta")]
    assert op.output_shapes(meta, attrs) == [(2, 3), (3, 3)]
    assert op.output_dtypes(meta, attrs) == [torch.float32, torch.int32]
    scaled = PLUGIN_OPS["t2xtest::scaled_tanh"]
    assert scaled.output_shapes([torch.empty(2, 7, device="meta")], {"scale": 1.0}) == [(2, 7)]
    assert scaled.output_dtypes([torch.empty(2, 7, dtype=torch.float16, device="meta")], {"scale": 1.0}) == [
        torch.float16]
    with pytest.raises(torch2x.ConversionError, match="neither a tensor nor"):
        op.split({"x": torch.empty(1), "rows": [1, 2]})


def test_plugin_registration_builds_description():
    if not flavour.SUPPORTS_PLUGINS:  # no tensorrt.plugin here: the conversion names the op instead
        _rtx_entry(torch2x.report(lambda x: scaled_tanh(x, 2.0), [torch.randn(4)]), "t2xtest::scaled_tanh")
        return
    definition = PLUGIN_OPS["t2xtest::scaled_tanh"].descriptor  # registered at decoration: annotated
    assert definition is PLUGIN_OPS["t2xtest::scaled_tanh"].trt_definition(("x",), {"scale": float})
    assert definition is not None and definition.plugin_id == "t2xtest::scaled_tanh"


def test_interpreter_runs_plugin_layer_with_pytorch():
    """The plugin layer rule, on a stand-in layer carrying the metadata (TensorRT-RTX has no plugin layers)."""
    from torch2x.flavour import trt
    from torch2x.trt_logging import LOGGER

    network = flavour.create_network(trt.Builder(LOGGER))
    layer = network.add_identity(network.add_input("x", trt.float32, (4, 3)))
    layer.metadata = json.dumps({"torch2x_plugin": "t2xtest::split_rows", "tensors": ["x"], "attrs": {"rows": 1}})
    x = torch.randn(4, 3)
    compare(rules_plugins._plugin(layer, [x], None), list(split_rows(x, 1)), 0.0)
    layer.metadata = json.dumps({"torch2x_plugin": "t2xtest::unknown", "tensors": ["x"], "attrs": {}})
    with pytest.raises(KeyError, match="not registered in this process"):
        rules_plugins._plugin(layer, [x], None)
    layer.metadata = ""
    with pytest.raises(torch2x.UnsupportedLayerError, match="not made by torch2x"):
        rules_plugins._plugin(layer, [x], None)


def test_plugin_op_name_is_checked():
    with pytest.raises(ValueError, match="namespace::name"):
        plugin_op("no_namespace", shape=lambda x: x.shape)


def test_placeholder_rule_reads_the_tensors_its_metadata_names():
    """A hand-made placeholder: the interpreter orders it after the tensors it names and runs the op on them."""
    from torch2x.flavour import trt
    from torch2x.trt_logging import LOGGER

    network = flavour.create_network(trt.Builder(LOGGER))
    x = network.add_input("x", trt.float32, (2, 3))
    zeros = torch.zeros(2, 3).numpy()
    placeholder = network.add_constant((2, 3), zeros)  # added before the tensor it reads
    doubled = network.add_elementwise(x, x, trt.ElementWiseOperation.SUM).get_output(0)
    doubled.name = "doubled"
    placeholder.metadata = json.dumps({"torch2x_plugin": "t2xtest::scaled_tanh", "placeholder": True, "output": 0,
                                       "tensors": ["x"], "attrs": {"scale": 3.0}, "inputs": ["doubled"]})
    network.mark_output(placeholder.get_output(0))
    value = torch.randn(2, 3)
    out = torch2x.interpret(network, {"x": value})[placeholder.get_output(0).name]
    compare(out, torch.tanh(2 * value) * 3.0, 1e-6)
    assert placeholder_ops(network) == ["t2xtest::scaled_tanh"]
    with pytest.raises(torch2x.EngineBuildError, match="placeholders for t2xtest::scaled_tanh"):
        torch2x.build_engine(trt.Builder(LOGGER), network, progress_monitor=False)
    placeholder.metadata = json.dumps({"placeholder": True, "inputs": ["doubled"]})
    with pytest.raises(torch2x.UnsupportedLayerError, match="not made by torch2x.plugins.plugin_op"):
        torch2x.interpret(network, {"x": value})
