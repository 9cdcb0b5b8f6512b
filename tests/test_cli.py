"""The torch2x command, run as users run it: in a subprocess, on CPU."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import torch2x
from torch2x.cli import main

MODEL_FILE = textwrap.dedent('''
    import torch.nn as nn

    def small():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def raises():
        class M(nn.Module):
            def forward(self, x):
                assert x.shape[-1] == 224, "Wrong image width"
                return x
        return M()

    def broken_factory():
        raise RuntimeError("factory broke")

    def not_a_module():
        return 3

    def unsupported():
        class M(nn.Module):
            def forward(self, x):
                import torch
                return torch.special.bessel_j0(x)
        return M()
''')


def run(*args: str, cwd=None):
    return subprocess.run([sys.executable, "-m", "torch2x", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODEL_FILE)
    return str(path)


def test_convert_writes_state_dict_and_plan(tmp_path, model_file):
    out, plan = tmp_path / "small.pth", tmp_path / "small.plan"
    result = run("convert", f"{model_file}:small", "--shape", "1,3,16,16", "-o", str(out), "--plan", str(plan))
    assert result.returncode == 0, result.stderr
    assert "no unsupported calls" in result.stdout
    error = float(result.stdout.split("relative error ")[1].split()[0])
    assert error <= 1e-4
    restored = torch2x.TRTModule()
    restored.load_state_dict(torch.load(out, weights_only=True))
    assert restored.meta["input_shapes"] == [[1, 3, 16, 16]]
    assert plan.read_bytes() == restored.engine_bytes
    assert json.loads((tmp_path / "small.plan.json").read_text())["output_shapes"] == [[1, 2]]
    assert "Traceback" not in result.stderr


def test_report_json_and_exit_code(model_file):
    ok = run("report", f"{model_file}:small", "--shape", "1,3,16,16", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    bad = run("report", f"{model_file}:unsupported", "--shape", "2,3", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["unsupported"][0]["op"] == "torch.special.bessel_j0"


def test_check_prints_table_and_passes(model_file):
    result = run("check", f"{model_file}:small", "--shape", "1,3,16,16")
    assert result.returncode == 0, result.stderr
    assert "check: ok" in result.stdout and "output output_0" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["convert", "nosuchsource:resnet18", "-o", "x.pth"], "no file 'nosuchsource'"),
    (["convert", "torchvision:not_a_model", "-o", "x.pth"], "torchvision has no model 'not_a_model'"),
    (["report", "{file}:missing_factory"], "has no callable 'missing_factory'"),
    (["report", "{file}:small", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["report", "{file}:small", "--shape", "1,3,16"], "the model failed on the given inputs"),
    (["report", "{file}:small", "--shape", "a,b"], "--shape takes comma-separated integers"),
    (["report", "{file}:small", "--shape=-1,3,16,16"], "--shape takes positive sizes"),
    (["check", "{file}:raises", "--shape", "1,3,16,16"], "the model failed on the given inputs"),
    (["report", "{file}:raises", "--shape", "1,3,16,16"], "AssertionError: Wrong image width"),
    (["convert", "{file}:raises", "--shape", "1,3,16,16", "-o", "x.pth"], "the model failed on the given inputs"),
    (["report", "{file}:broken_factory"], "failed: RuntimeError: factory broke"),
    (["report", "{file}:not_a_module"], "returned a int, not a torch.nn.Module"),
    (["convert", "{file}:small", "--shape", "1,3,16,16", "-o", "missing_dir/x.pth"], "does not exist"),
    (["convert", "{file}:small", "--shape", "1,3,16,16", "-o", "x.pth", "--plan", "missing_dir/x.plan"],
     "--plan 'missing_dir/x.plan': directory"),
    (["convert", "{file}:small", "--shape", "1,3,16,16", "-o", "."], "is a directory"),
    (["report", "{file}:small", "--shape", "1,3,16,16", "--dynamic", "7:1:2:3"], "--dynamic: input 'input_0'"),
    (["report", "{file}:small", "--shape", "1,3,16,16", "--dynamic", "foo.0:1:2:3"], "--dynamic: dynamic_shapes"),
    (["report", "{file}:small", "--shape", "1,3,16,16", "--dynamic", "0:1:2"], "--dynamic takes"),
    (["report", "{file}:small", "--fp16", "--bf16"], "choose one of --fp16 and --bf16"),
    (["report", "{file}:small", "--int8", "--calib", "missing_dir"], "is not a directory"),
    (["report", "{file}:small", "--int8", "--calib-cache", "missing.json"], "does not exist"),
    (["report", "{file}:small", "--int8", "--calib", "calib", "--calib-cache", "missing_dir/c.json"], "does not exist"),
    (["report", "{file}:small", "--int8", "--calib", "calib", "--shape", "1,3,16,16"], "--calib: cannot load"),
    (["report", "{file}:small", "--calib", "calib"], "are for --int8"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, model_file, args, message, monkeypatch, capsys):
    # in-process (main() is what the console script calls): a subprocess per case would cost seconds each
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "bad.pt").write_text("not a tensor")
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    assert main([a.format(file=model_file) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torch2x: error: ") and message in lines[0], lines
    assert set(tmp_path.iterdir()) == before  # no output file left behind


def test_the_issues_two_paths_are_one_line_and_exit_2(tmp_path):
    # as a new user meets them: vit_b_16 raises on a 200x200 image; a missing output directory is
    # refused before resnet18 is even built
    result = run("check", "torchvision:vit_b_16", "--shape", "1,3,200,200", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("torch2x: error: the model failed on the given inputs")
    result = run("convert", "torchvision:resnet18", "-o", "missing_dir/x.pth", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing_dir" in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_without_gpu_says_so(model_file):
    result = run("bench", f"{model_file}:small", "--shape", "1,3,16,16")
    assert result.returncode == 0 and "no CUDA device" in result.stdout


def test_convert_int8_with_calibration_dir_writes_the_cache(tmp_path, model_file):
    calib = tmp_path / "calib"
    calib.mkdir()
    torch.manual_seed(0)
    for i in range(4):
        torch.save(torch.randn(1, 3, 16, 16), calib / f"batch{i}.pt")
    cache, out = tmp_path / "scales.json", tmp_path / "small_int8.pth"
    result = run("convert", f"{model_file}:small", "--shape", "1,3,16,16", "--int8", "--calib", str(calib),
                 "--calib-cache", str(cache), "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    error = float(result.stdout.split("relative error ")[1].split()[0])
    assert error <= 0.05  # int8 activations and weights on a 2-layer net
    assert json.loads(cache.read_text())["tensors"]  # scales keyed by layer name
    assert torch.load(out, weights_only=True)["precision"].startswith("int8")


HYBRID_FILE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            return self.b(torch.fft.rfft(self.a(x), dim=-1).abs()[..., :8])

    def spectral():
        return Spectral()
''')


def test_convert_with_fallback_saves_a_hybrid_module(tmp_path):
    path = tmp_path / "hybrid.py"
    path.write_text(HYBRID_FILE)
    out = tmp_path / "h.pth"
    result = run("convert", f"{path}:spectral", "--shape", "1,3,16,16", "--fallback", "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "hybrid execution: 2 TensorRT engine(s), 2 call(s) in PyTorch" in result.stdout
    assert "pytorch: torch.fft.rfft at <root>" in result.stdout
    error = float(result.stdout.split("interpreter vs PyTorch, output_0: relative error ")[1].split()[0])
    assert error <= 1e-4
    restored = torch2x.HybridModule()
    restored.load_state_dict(torch.load(out, weights_only=True))
    assert len(restored.engines) == 2
    refused = run("convert", f"{path}:spectral", "--shape", "1,3,16,16", "-o", str(tmp_path / "x.pth"), "--quiet")
    assert refused.returncode == 1 and "--fallback runs them in PyTorch" in refused.stderr


def test_report_and_check_show_the_segments(tmp_path):
    path = tmp_path / "hybrid.py"
    path.write_text(HYBRID_FILE)
    report = run("report", f"{path}:spectral", "--shape", "1,3,16,16",
                 "--torch-executed-op", "torch.nn.functional.conv2d", "--json")
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["segments"]
    assert [r["op"] for r in rows if r["kind"] == "pytorch"] == ["torch.nn.functional.conv2d", "torch.fft.rfft",
                                                                 "torch.Tensor.abs", "torch.nn.functional.conv2d"]
    check = run("check", f"{path}:spectral", "--shape", "1,3,16,16", "--fallback")
    assert check.returncode == 0, check.stderr
    assert "check: ok" in check.stdout and "engine 1:" in check.stdout
