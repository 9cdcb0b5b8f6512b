"""User plugin ops: on full TensorRT a plugin layer built with tensorrt.plugin, run by the interpreter with the
op's PyTorch implementation; on TensorRT-RTX (no plugin layers) a report entry naming the op."""
import pytest
import torch

import torch2x
from harness import check_module, compare
from torch2x import flavour
from torch2x.interpreter import rules_plugins
from torch2x.plugins import PLUGIN_OPS, plugin_op


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
    return entry


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
    assert set(report.unsupported) == {"t2xtest::scaled_tanh"}  # clamp_sum only reads its poisoned output
    assert _rtx_entry(report, "t2xtest::scaled_tanh").module_paths == {"<root>": 1}
    with pytest.raises(torch2x.UnsupportedOperatorError, match="t2xtest::scaled_tanh"):
        torch2x.build_network(Net(via_torch_ops), [x])


def test_torch_library_op_is_intercepted():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    fn = lambda a, b: torch.ops.t2xtest.clamp_sum(a, b, 0.25)  # noqa: E731
    if flavour.SUPPORTS_PLUGINS:
        check_module(fn, a, b, build=False)
    else:
        _rtx_entry(torch2x.report(fn, [a, b]), "t2xtest::clamp_sum")
    assert torch.equal(fn(a, b), (a + b).clamp(max=0.25))  # patches are gone after tracing


def test_multi_output_plugin_op():
    x = torch.randn(5, 3)
    if flavour.SUPPORTS_PLUGINS:
        check_module(lambda x: split_rows(x, 2), x, build=False)
    else:
        entry = _rtx_entry(torch2x.report(lambda x: split_rows(x, 2), [x]), "t2xtest::split_rows")
        assert entry.count == 1


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
    import json

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
