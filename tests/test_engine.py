"""The optimized engine (torch2x.inspect), build options and the engine cache, on the real TensorRT-RTX builder."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision

import torch2x
from torch2x import engine_cache, flavour
from torch2x.build_options import BuildOptionError, BuildOptions
from torch2x.flavour import trt
from torch2x.inspect import GPUS, parse_build_log, parse_layer_record
from torch2x.trt_logging import LOGGER

rtx_only = pytest.mark.skipif(not flavour.IS_RTX, reason="the build log holds the engine graph on TensorRT-RTX")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


def _block():
    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():  # non-trivial statistics, so the folded batch norm changes the weights
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model


@rtx_only
def test_conv_bn_relu_is_one_kernel_naming_all_three():
    info = torch2x.inspect(_block(), [torch.randn(1, 3, 32, 32)], gpu="L4")
    rows = [k for k in info.kernels if "conv" in k.module_paths]
    assert len(rows) == 1, [k.module_paths for k in info.kernels]
    assert rows[0].module_paths[:3] == ["conv", "bn", "act"]
    assert rows[0].kind == "correlation"
    out = rows[0].outputs[0]
    assert out.shape == [1, 16, 32, 32] and out.dtype == "Float"
    assert out.bytes >= 16 * 32 * 32 * 4  # a padded vectorized format counts in full
    assert rows[0].flops == 2 * 16 * 32 * 32 * 3 * 3 * 3
    # totals are the sums of the rows, by kind and for the engine
    total = info.totals()
    assert total["kernels"] == len(info.kernels)
    assert total["bytes_read"] == sum(k.bytes_read for k in info.kernels)
    assert total["bytes_written"] == sum(k.bytes_written for k in info.kernels)
    assert total["time_us_estimate"] == pytest.approx(sum(k.time_us for k in info.kernels))
    by_kind = info.by_kind()
    assert sum(t["kernels"] for t in by_kind.values()) == total["kernels"]
    assert sum(t["bytes"] for t in by_kind.values()) == total["bytes"]
    # the estimate is at least one launch per kernel and the memory time on the named GPU
    gpu = GPUS["L4"]
    assert total["time_us_estimate"] >= total["kernels"] * gpu.launch_us + total["bytes"] / (gpu.bandwidth_gbs * 1e3)
    data = json.loads(info.to_json())
    assert data["total"] == json.loads(json.dumps(total)) and len(data["kernels"]) == total["kernels"]
    assert "roofline estimate" in str(info) and "not a measurement" in data["time_is_estimate"]


@rtx_only
def test_parser_on_a_real_build_log():
    """The records of resnet18's real VERBOSE log: every kernel parsed, none lost, signal/wait skipped."""
    torch.manual_seed(0)
    net = torch2x.build_network(torchvision.models.resnet18().eval(), [torch.randn(1, 3, 64, 64)])
    config = net.builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    with LOGGER.capture() as lines:
        assert net.builder.build_serialized_network(net.network, config) is not None
    text = "\n".join(lines)
    raw = [line for line in text.splitlines() if line.startswith("Name: ") and ", LayerType: " in line]
    records = parse_build_log(lines)
    assert len(records) == len([r for r in raw if "LayerType: signal" not in r and "LayerType: wait" not in r])
    assert all(r["outputs"] and all(t.shape for t in r["outputs"]) for r in records)
    convs = [r for r in records if r["kind"] == "correlation"]
    assert len(convs) >= 20 and all(len(r["constants"]) >= 1 for r in convs)  # its 20 convolutions at least
    first = convs[0]
    assert first["inputs"][0].shape == [1, 3, 64, 64] and first["outputs"][0].shape == [1, 64, 32, 32]
    assert first["outputs"][0].format.startswith("(NHWC)") and first["outputs"][0].strides == [65536, 1, 2048, 64]


def test_record_parser_keeps_brackets_and_separators():
    line = ("Name: n1, LayerType: gemm, Inputs: [ { Name: (Unnamed Layer* 0) [Shuffle]_output, Dimensions: [2,3], "
            "Format/Datatype: Row major linear FP16 format }], Outputs: [ { Name: y, Dimensions: [2,5], "
            "Format/Datatype: Half }], TacticName: t, StreamId: 1, "
            "Metadata: [ONNX Layer: /a/MatMul]\x1f[ONNX Layer: /b/Add]")
    r = parse_layer_record(line)
    assert r["inputs"][0].name == "(Unnamed Layer* 0) [Shuffle]_output" and r["inputs"][0].bytes == 12
    assert r["stream"] == 1 and r["metadata"] == ["[ONNX Layer: /a/MatMul]", "[ONNX Layer: /b/Add]"]


def test_unknown_gpu_is_refused_by_name():
    with pytest.raises(ValueError, match="no built-in GPU 'GTX 280'"):
        torch2x.inspect(_block(), [torch.randn(1, 3, 8, 8)], gpu="GTX 280")


# --- build options ---------------------------------------------------------------------------------
def test_build_options_reach_the_builder_config():
    net = torch2x.build_network(_block(), [torch.randn(1, 3, 8, 8)])
    from torch2x.network import engine_config

    options = BuildOptions(optimization_level=4, max_aux_streams=0, weight_streaming=True,
                           builder_options={"TF32": False, "avg_timing_iterations": 2})
    config = engine_config(net.builder, net.network, None, None, options)
    assert config.builder_optimization_level == 4 and config.max_aux_streams == 0
    assert config.get_flag(trt.BuilderFlag.WEIGHT_STREAMING) and not config.get_flag(trt.BuilderFlag.TF32)
    assert config.avg_timing_iterations == 2
    assert net.build_engine(options=options)  # and TensorRT builds with them
    if flavour.IS_RTX:
        config = engine_config(net.builder, net.network, None, None, BuildOptions(compute_capabilities=["8.9", "12.0"]))
        assert [config.get_compute_capability(i) for i in range(config.num_compute_capabilities)] == [
            trt.ComputeCapability.SM89, trt.ComputeCapability.SM120]


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(16, 64, 3, padding=1), nn.Conv2d(16, 64, 5, padding=2), nn.Conv2d(16, 64, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x)], 1)


@rtx_only
def test_max_aux_streams_shows_in_the_engine_graph():
    """Three independent convolutions run on auxiliary streams by default; max_aux_streams=0 keeps one stream."""
    torch.manual_seed(0)
    net = torch2x.build_network(Branches().eval(), [torch.randn(1, 16, 56, 56)])
    default, single = net.inspect(), net.inspect(options={"max_aux_streams": 0})
    assert len({k.stream for k in default.kernels}) > 1
    assert {k.stream for k in single.kernels} == {0}
    assert single.totals()["kernels"] == default.totals()["kernels"]  # signal/wait entries are not kernels
    assert sorted(p for k in single.kernels if k.kind == "correlation" for p in k.module_paths) == ["a", "b", "c"]


@pytest.mark.parametrize("options, message", [
    ({"builder_options": {"NOT_A_FLAG": True}}, "'NOT_A_FLAG', which is neither an IBuilderConfig attribute"),
    ({"builder_options": {"num_optimization_profiles": 2}}, "IBuilderConfig.num_optimization_profiles is read-only"),
    ({"optimization_level": 9}, "optimization_level must be 0-5"),
    ({"frobnicate": 1}, "unknown build option(s) frobnicate"),
])
def test_bad_build_options_are_refused_by_name(options, message):
    with pytest.raises(BuildOptionError) as info:
        torch2x.build_network(_block(), [torch.randn(1, 3, 8, 8)], build_options=options).build_engine()
    assert message in str(info.value)


@rtx_only
@pytest.mark.parametrize("option", ["timing_cache", "hardware_compatibility", "version_compatible"])
def test_options_tensorrt_rtx_lacks_are_refused_before_tracing(option):
    value = {"timing_cache": "cache.bin", "hardware_compatibility": "ampere_plus", "version_compatible": True}[option]
    with pytest.raises(BuildOptionError, match=f"build option {option}=.* is not available on tensorrt_rtx"):
        torch2x.torch2x(_block(), [torch.randn(1, 3, 8, 8)], **{option: value})


@rtx_only
def test_strip_weights_on_a_cpu_says_it_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("on a GPU the stripped plan builds")
    with pytest.raises(torch2x.EngineBuildError, match="only with a CUDA device"):
        torch2x.torch2x(_block(), [torch.randn(1, 3, 8, 8)], strip_weights=True)


def test_refit_weights_are_the_folded_ones_and_refit_needs_a_gpu():
    from torch2x.refit import network_weights

    model, x = _block(), torch.randn(1, 3, 8, 8)
    weights = network_weights(torch2x.build_network(model, [x]).network)
    kernel = weights[("conv/conv2d", trt.WeightsRole.KERNEL)].reshape(16, 3, 3, 3)
    scale = (model.bn.weight / torch.sqrt(model.bn.running_var + model.bn.eps)).detach()
    torch.testing.assert_close(torch.from_numpy(kernel), model.conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
    if not torch.cuda.is_available():
        with pytest.raises(torch2x.TRTModuleError, match="refit needs the deserialized engine, hence a GPU"):
            torch2x.torch2x(model, [x]).refit(model)


# --- engine cache ----------------------------------------------------------------------------------
def test_engine_cache_hits_misses_and_rebuilds(tmp_path, caplog):
    model, x = _block(), torch.randn(1, 3, 16, 16)
    first = torch2x.torch2x(model, [x], engine_cache=str(tmp_path))
    assert "built and stored" in first.report.engine_cache
    (entry,) = tmp_path.glob("*.torch2x-engine")
    second = torch2x.torch2x(model, [x], engine_cache=str(tmp_path))
    assert "from the cache" in second.report.engine_cache and "from the cache" in str(second.report)
    assert second.engine_bytes == first.engine_bytes and second.meta == first.meta
    assert second.report.converted_calls == first.report.converted_calls
    # changed weights, inputs or options: a new entry
    bias = model.head.bias.detach().clone()
    with torch.no_grad():
        model.head.bias.add_(1)
    assert "built" in torch2x.torch2x(model, [x], engine_cache=str(tmp_path)).report.engine_cache
    assert "built" in torch2x.torch2x(model, [torch.randn(1, 3, 24, 24)],
                                      engine_cache=str(tmp_path)).report.engine_cache
    assert "built" in torch2x.torch2x(model, [x], engine_cache=str(tmp_path), max_aux_streams=0).report.engine_cache
    assert "built" in torch2x.torch2x(model, [x], engine_cache=str(tmp_path), fp16=True).report.engine_cache
    assert len(list(tmp_path.glob("*.torch2x-engine"))) == 5
    # a truncated entry is detected and rebuilt, never loaded
    with torch.no_grad():
        model.head.bias.copy_(bias)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="torch2x.engine_cache"):
        rebuilt = torch2x.torch2x(model, [x], engine_cache=str(tmp_path))
    assert "built" in rebuilt.report.engine_cache and "rebuilding" in caplog.text
    assert rebuilt.engine_bytes == first.engine_bytes
    assert "from the cache" in torch2x.torch2x(model, [x], engine_cache=str(tmp_path)).report.engine_cache


def test_engine_cache_refuses_foreign_and_altered_entries(tmp_path, monkeypatch):
    model, x = _block(), torch.randn(1, 3, 16, 16)
    monkeypatch.setenv(engine_cache.ENV, str(tmp_path))  # the environment variable alone turns the cache on
    built = torch2x.torch2x(model, [x])
    (path,) = tmp_path.glob("*.torch2x-engine")
    key = path.name.split(".")[0]
    header, engine = engine_cache.read_entry(str(path))
    for change in ({"flavour": "tensorrt" if flavour.IS_RTX else "tensorrt_rtx"}, {"version": "0.0"}, {"key": "0" * 64},
                   {"format": 0}):
        engine_cache.write_entry(str(path), {**header, **change}, engine)
        assert engine_cache.load(str(tmp_path), key) is None, change
    engine_cache.write_entry(str(path), header, engine[:-1] + bytes([engine[-1] ^ 1]))  # one bit flipped
    assert engine_cache.load(str(tmp_path), key) is None
    path.write_bytes(b"not an entry")
    assert engine_cache.load(str(tmp_path), key) is None
    engine_cache.write_entry(str(path), header, engine)
    loaded = engine_cache.load(str(tmp_path), key)
    assert loaded.engine_bytes == built.engine_bytes and loaded.meta == built.meta


def test_engine_cache_checks_every_piece_of_a_large_engine(tmp_path, monkeypatch):
    """Engines are checksummed and weights hashed per piece (16 MB; 1 KB here so a small engine has many):
    a byte changed in any piece, or a piece missing, is found; a changed weight in a later piece misses."""
    monkeypatch.setattr(engine_cache, "_CHUNK", 1024)
    model, x = _block(), torch.randn(1, 3, 16, 16)
    built = torch2x.torch2x(model, [x], engine_cache=str(tmp_path))
    (path,) = tmp_path.glob("*.torch2x-engine")
    key = path.name.split(".")[0]
    header, engine = engine_cache.read_entry(str(path))
    assert len(header["engine_crc32"]) == -(-len(engine) // 1024) > 2
    assert engine_cache.load(str(tmp_path), key).engine_bytes == built.engine_bytes
    middle = len(engine) // 2
    engine_cache.write_entry(str(path), header, engine[:middle] + bytes([engine[middle] ^ 0x10]) + engine[middle + 1:])
    assert engine_cache.load(str(tmp_path), key) is None
    engine_cache.write_entry(str(path), {**header, "engine_size": len(engine) - 1024}, engine[:-1024])
    assert engine_cache.load(str(tmp_path), key) is None  # a whole piece missing, the size edited to match
    big = nn.Linear(64, 64)  # 16 KB of weights: 16 pieces
    before = engine_cache.conversion_key(big, [torch.randn(1, 64)], {})
    with torch.no_grad():
        big.weight[-1, -1] += 1
    assert engine_cache.conversion_key(big, [torch.randn(1, 64)], {}) != before


def test_engine_cache_key_sees_the_model_code(tmp_path, monkeypatch):
    """Two module classes with equal weights and repr but different forward code: different keys."""
    source = ("import torch.nn as nn\nclass M(nn.Linear):\n    def forward(self, x):\n"
              "        return super().forward(x){}\n")
    keys = []
    for i, tail in enumerate(["", " * 2"]):
        path = tmp_path / f"torch2x_cache_model{i}.py"
        path.write_text(source.format(tail))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, path.stem, module)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        model = module.M(4, 2)
        keys.append(engine_cache.conversion_key(model, [torch.randn(1, 4)], {}))
    assert keys[0] != keys[1]


def test_engine_cache_key_sees_generated_code():
    """fx graphs (as torch.compile hands them) have no source file: their code is part of the key."""
    graphs = [torch.fx.symbolic_trace(f) for f in (lambda x: torch.relu(x) + 1, lambda x: torch.sigmoid(x) + 1)]
    keys = {engine_cache.conversion_key(g, [torch.randn(2, 3)], {}) for g in graphs}
    assert len(keys) == 2


def test_engine_cache_through_torch_compile_keeps_graphs_apart(tmp_path):
    """Two Dynamo graphs with the same inputs and no weights get two entries, not one engine for both."""
    if torch.cuda.is_available():
        pytest.skip("the engines would run here; this counts entries made before the CPU refuses to run them")
    for fn in (lambda x: torch.relu(x) + 1, lambda x: torch.sigmoid(x) + 1):
        torch._dynamo.reset()
        with pytest.raises(torch2x.TRTModuleError):  # built ahead of time and stored; running needs a GPU
            torch.compile(fn, backend="torch2x", options={"engine_cache": str(tmp_path)})(torch.randn(2, 3))
    torch._dynamo.reset()
    assert len(list(tmp_path.glob("*.torch2x-engine"))) == 2


# --- the command -----------------------------------------------------------------------------------
MODEL_FILE = ("import torch.nn as nn\n\ndef block():\n"
              "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())\n")


def _run(*args: str, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "torch2x", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


@rtx_only
def test_cli_inspect_json_and_engine_cache(tmp_path, capsys):
    (tmp_path / "m.py").write_text(MODEL_FILE)
    model = f"{tmp_path / 'm.py'}:block"
    result = _run("inspect", model, "--shape", "1,3,16,16", "--json", "--gpu", "rtx5090")  # as users run it
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["gpu"]["name"] == "RTX 5090" and data["total"]["kernels"] == len(data["kernels"])
    assert any(k["module_paths"][:3] == ["0", "1", "2"] for k in data["kernels"])
    from torch2x import cli  # the rest in this process: same code path, without another torch import

    assert cli.main(["inspect", model, "--shape", "1,3,16,16", "--builder-option", "NOPE=1"]) == 2
    assert "'NOPE'" in capsys.readouterr().err
    cache = tmp_path / "cache"
    args = ["convert", model, "--shape", "1,3,16,16", "-o", str(tmp_path / "m.pth"), "--engine-cache", str(cache),
            "--quiet"]
    assert cli.main(args) == 0 and "stored in the engine cache" in capsys.readouterr().out
    assert cli.main(args) == 0 and "from the engine cache" in capsys.readouterr().out
    restored = torch2x.TRTModule()
    restored.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True))
    assert restored.meta["input_shapes"] == [[1, 3, 16, 16]]
