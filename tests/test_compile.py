"""torch.compile(model, backend="torch2x"): every graph Dynamo captures is converted and, with
options={"interpret": True}, run by the interpreter on CPU; outputs are compared with eager PyTorch."""
from __future__ import annotations

import inspect
import os

import pytest
import torch

import torch2x
from harness import LastHiddenState, compare, torchvision_model
from torch2x import compile as t2c


@pytest.fixture(autouse=True)
def fresh_dynamo():
    t2c.register()  # the entry point does this once torch2x is pip-installed; tests run from the source tree
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled(model, calls, options=None, **compile_kwargs):
    """Compile ``model`` with the torch2x backend (interpreter), check every call against eager PyTorch
    within 1e-4 (float32), and return the graphs the backend compiled during these calls."""
    known = {id(g) for g in t2c.graphs()}
    compiled = torch.compile(model, backend="torch2x", options={"interpret": True, **(options or {})},
                             **compile_kwargs)
    with torch.no_grad():
        for inputs in calls:
            compare(compiled(*inputs), model(*inputs), 1e-4)
    graphs = [g for g in t2c.graphs() if id(g) not in known]
    for g in graphs:
        for entry in g.entries:  # each conversion ran the network, not PyTorch (but its fallback calls)
            assert entry.converted is not None and entry.report.usable and entry.report.converted_calls > 0
    return graphs


def _ids(batch, seq):
    return (torch.randint(0, 1000, (batch, seq)),)


# ----------------------------------------------------------------------------- models

def test_resnet18_dynamic_batch_and_new_resolution():
    model = torchvision_model("resnet18", 32)
    first = torch.randn(2, 3, 32, 32)
    torch._dynamo.mark_dynamic(first, 0)  # a dynamic batch from the start (batch 5 reuses the network); a new
    # resolution recompiles with a dynamic height and width too
    graphs = _compiled(model, [(first,), (torch.randn(5, 3, 32, 32),), (torch.randn(2, 3, 48, 40),)])
    assert len(graphs) == 2 and [len(g.entries) for g in graphs] == [1, 1]
    assert [list(g.entries[0].ranges[0]) for g in graphs] == [[0], [0, 2, 3]]
    lo, hi = graphs[0].entries[0].ranges[0][0]
    assert lo == 2 and hi >= 5  # from Dynamo's lower bound (it specializes sizes 0 and 1)
    assert tuple(graphs[1].entries[0].converted.network.get_input(0).shape) == (-1, 3, -1, -1)
    # 20 convolutions, 20 batch norms, 17 ReLUs, 8 residual adds, max pool, average pool, flatten, linear: the
    # same 69 calls as torch2x(resnet18); the parameters are constants named after the model's
    for g in graphs:
        assert g.report.converted_calls == 69
        assert [s.name for s in g.slots if s.kind == "input"] == ["x"]
        net = g.entries[0].converted.network
        assert "layer1.0.conv1/conv2d" in {net.get_layer(i).name for i in range(net.num_layers)}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_transformers_dynamic_batch_and_sequence(family):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    if family == "bert":
        model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128))
    else:
        model = GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4))
    model = LastHiddenState(model.eval())
    # (2, 8) static; (3, 12) recompiles with a dynamic batch and sequence, which (4, 16) and (2, 5) reuse
    graphs = _compiled(model, [_ids(2, 8), _ids(3, 12), _ids(4, 16), _ids(2, 5)])
    assert len(graphs) == 2 and [len(g.entries) for g in graphs] == [1, 1]
    assert graphs[0].entries[0].ranges == [{}]
    # [Dynamo's lower bound, max(4 x size, 16)], or Dynamo's upper bound: BERT slices its 512 positions
    assert graphs[1].entries[0].ranges == [{0: (2, 16), 1: (2, 512 if family == "bert" else 48)}]
    assert tuple(graphs[1].entries[0].converted.network.get_input(0).shape) == (-1, -1)


def test_vit_b_16():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    graphs = _compiled(model, [(torch.randn(1, 3, 224, 224),)])
    assert len(graphs) == 1
    # Dynamo's graph holds more calls than torch2x(vit_b_16) traces (165: it inlines MultiheadAttention.forward's
    # transposes and dropouts), and gives the same network: 208 layers (the classifier head is a matrix multiply
    # and a bias add with their two constants, which TensorRT fuses into one kernel), at most
    report = graphs[0].report
    assert report.ok and report.converted_calls == 177 and report.num_layers <= 208


def test_small_vit_mark_dynamic_batch_within_bounds():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    first = torch.randn(3, 3, 32, 32)
    torch._dynamo.mark_dynamic(first, 0, min=2, max=8)
    graphs = _compiled(model, [(first,), (torch.randn(8, 3, 32, 32),), (torch.randn(2, 3, 32, 32),)])
    assert len(graphs) == 1 and len(graphs[0].entries) == 1
    assert graphs[0].entries[0].ranges == [{0: (2, 8)}]  # mark_dynamic's bounds become the profile


def test_dynamic_shapes_option_sets_the_range_of_dynamo_dynamic_dims():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    # Dynamo traces nn.Sequential from Module.__call__(*args): its input is named args_0 (see compile_report)
    graphs = _compiled(model, [(torch.randn(b, 8),) for b in (4, 64, 2, 1)],
                       {"dynamic_shapes": {"args_0": {0: (1, 4, 64)}}}, dynamic=True)
    # batch 1 is a graph of its own even with dynamic=True (Dynamo specializes sizes 0 and 1)
    assert len(graphs) == 2 and [len(g.entries) for g in graphs] == [1, 1]
    assert graphs[0].entries[0].ranges == [{0: (1, 64)}] and graphs[1].entries[0].shapes == [[1, 8]]
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="torch2x", dynamic=False,
                             options={"interpret": True, "dynamic_shapes": {"args_0": {0: (1, 4, 64)}}})
    with pytest.warns(UserWarning, match=r"names dims \[0\], which Dynamo captured with a fixed size.*mark_dynamic"):
        compiled(torch.randn(4, 8))


class _Branchy(torch.nn.Module):
    """Two graph breaks: a print, and control flow on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.fc1(x))
        print("torch2x test: a graph break")
        if y.sum() > 10:
            y = y * 2
        else:
            y = -y
        return self.fc2(y), y.shape[0]


def test_graph_breaks_run_in_python_and_every_graph_converts(capsys):
    torch.manual_seed(0)
    model = _Branchy().eval()
    big, small = torch.ones(2, 8) * 5, torch.zeros(2, 8)
    assert model(big)[0].sum() != model(small)[0].sum()  # the two branches differ
    capsys.readouterr()
    graphs = _compiled(model, [(big,), (small,), (big,)], dynamic=False)
    # the code before the print, y.sum() > 10, then each branch with fc2 (the second call takes the other one)
    assert len(graphs) == 4 and all(len(g.entries) == 1 for g in graphs)
    assert capsys.readouterr().out.count("a graph break") == 6  # 3 compiled calls and 3 eager references
    # linear, relu | sum, gt | mul, linear | neg, linear
    assert [g.report.converted_calls for g in graphs] == [2, 2, 2, 2]


def test_compile_report_counts_graphs_breaks_and_calls():
    torch.manual_seed(0)
    report = torch2x.compile_report(_Branchy().eval(), torch.ones(2, 8) * 5)
    assert report.num_graphs == 3 and report.num_graph_breaks == 2
    assert report.converted_calls == 6 and report.ok
    reasons = [b.reason for b in report.graph_breaks]
    assert "print" in reasons[0] and "data-dependent control flow" in reasons[1]
    assert "test_compile.py" in report.graph_breaks[0].location and report.graph_breaks[0].code.startswith("print(")
    text = str(report)
    assert text.startswith("torch2x compile report: 3 graph(s), 2 graph break(s), 6 calls converted")
    assert '"num_graph_breaks": 2' in report.to_json()


# ----------------------------------------------------------------------------- errors and options

class _Inverts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.linalg.inv(self.fc(x))


def test_unconvertible_graph_is_a_clear_torch2x_error():
    compiled = torch.compile(_Inverts().eval(), backend="torch2x", options={"interpret": True})
    with pytest.raises(t2c.GraphConversionError) as info:
        compiled(torch.randn(2, 3, 3))
    message = str(info.value)
    assert "torch2x cannot convert graph 0/0" in message and "torch.linalg.inv" in message
    assert "test_compile.py" in message and "torch.linalg.inv(self.fc(x))" in message  # the graph node's line
    assert "inputs x: float32[2, 3, 3]" in message and "What to do" in message
    assert "torch.linalg.inv" in info.value.report.unsupported
    report = torch2x.compile_report(_Inverts().eval(), torch.randn(2, 3, 3))  # the same, without raising
    assert not report.ok and report.unsupported[0][1].op == "torch.linalg.inv"


def test_fallback_runs_unconvertible_calls_in_pytorch_between_engines():
    torch.manual_seed(0)
    calls = [(torch.randn(b, 3, 3),) for b in (2, 3, 4)]
    graphs = _compiled(_Inverts().eval(), calls, {"fallback": True})
    # hybrid execution takes no dynamic shapes yet: Dynamo's dynamic graph converts once per batch size
    assert len(graphs) == 2 and [len(g.entries) for g in graphs] == [1, 2]
    assert all(e.converted.torch_calls == 1 and e.report.segments for g in graphs for e in g.entries)
    report = torch2x.compile_report(_Inverts().eval(), *calls[0], fallback=True)
    assert report.ok and not report.unsupported and [u.op for _, u in report.fallback] == ["torch.linalg.inv"]
    assert "1 op(s) running in PyTorch" in str(report) and "torch.linalg.inv (in PyTorch)" in str(report)


@torch._dynamo.disable
def _inverse_in_pytorch(x):
    return torch.linalg.inv(x)


class _InvertsOutside(_Inverts):
    def forward(self, x):
        return _inverse_in_pytorch(self.fc(x)) * 2


def test_the_advice_of_the_error_works():
    torch.manual_seed(0)
    # the unconvertible call in a @torch._dynamo.disable function: a graph break, the call runs in PyTorch
    graphs = _compiled(_InvertsOutside().eval(), [(torch.randn(2, 3, 3),)])
    assert len(graphs) == 2 and [g.report.converted_calls for g in graphs] == [1, 1]  # linear | mul


def test_options_are_checked():
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match=r"unknown option\(s\) \['fp61'\]"):
        torch.compile(torch.nn.ReLU(), backend="torch2x", options={"fp61": True})(torch.randn(2))
    torch._dynamo.reset()
    if "fallback" not in inspect.signature(torch2x.build_network).parameters:
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="need hybrid execution"):
            torch.compile(torch.nn.ReLU(), backend="torch2x",
                          options={"interpret": True, "fallback": True})(torch.randn(2))


def test_fp16_and_a_changed_weight():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval()
    compiled = torch.compile(model, backend="torch2x", options={"interpret": True, "fp16": True})
    x = torch.randn(4, 8)
    with torch.no_grad():
        compare(compiled(x), model(x), 1e-2)
        model[0].weight.mul_(-1)  # in place: Dynamo does not recompile, the backend must convert again
        compare(compiled(x), model(x), 1e-2)
    (graph,) = t2c.graphs()[-1:]
    assert len(graph.entries) == 2 and graph.entries[0].converted.precision == "fp16"


def test_int8_with_calibration_batches_of_the_graph_inputs(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 12 * 12, 10)).eval()
    options = {"interpret": True, "int8": True, "calibration_data": [torch.randn(4, 3, 16, 16) for _ in range(4)],
               "calibration_cache": str(tmp_path / "scales.json")}
    compiled = torch.compile(model, backend="torch2x", options=options)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        compare(compiled(x), model(x), 5e-2)  # int8 error, as tests/test_int8.py allows
    assert t2c.graphs()[-1].entries[0].converted.precision == "int8+fp32" and (tmp_path / "scales.json").exists()


def test_engines_need_a_gpu():
    compiled = torch.compile(torch.nn.Linear(4, 4).eval(), backend="torch2x", options={"cuda_graph": True})
    if torch.cuda.is_available():
        pytest.skip("runs engines on this GPU elsewhere")
    with pytest.raises(torch2x.TRTModuleError, match="no CUDA device"):
        compiled(torch.randn(2, 4))  # the engine was built ahead of time; running it needs a GPU
    trt_module = t2c.graphs()[-1].entries[0].trt_module
    assert len(trt_module.engine_bytes) > 0 and trt_module.use_cuda_graph


def test_backend_is_found_through_the_entry_point(monkeypatch):
    """setup.py's torch_dynamo_backends entry point, as pip installs it, is what torch's backend registry
    loads for backend="torch2x" (torch 2.14: registry._discover_entrypoint_backends)."""
    import importlib.metadata
    import setuptools
    from torch._dynamo.backends import registry

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    declared = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: declared.update(kw))
    monkeypatch.chdir(root)
    exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "__main__"})
    (line,) = declared["entry_points"]["torch_dynamo_backends"]
    name, value = (part.strip() for part in line.split("="))
    points = importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(name, value, "torch_dynamo_backends")])
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: points)
    for table in (registry._BACKENDS, registry._COMPILER_FNS):  # forget what register() did
        monkeypatch.delitem(table, "torch2x", raising=False)
    registry._discover_entrypoint_backends.cache_clear()
    try:
        registry._discover_entrypoint_backends()  # (lookup_backend runs it once per process, at the first lookup)
        assert registry.lookup_backend("torch2x") is t2c.backend
    finally:
        registry._discover_entrypoint_backends.cache_clear()
