"""Regression guard: the engines TensorRT-RTX builds for a few small models must not get more kernels, or move
more bytes, than they did when this test was written (2026-12-01, tensorrt_rtx 1.7.1, batch 1, 64x64 images;
two-layer BERT and GPT-2 of width 64 on 32 tokens).

Lower the numbers when a change makes the engines leaner; never raise them to make a change pass.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

import torch2x
from harness import LastHiddenState
from torch2x import flavour

# model -> (kernels, bytes moved) measured with torch2x.inspect
TODAY = {"resnet18": (25, 48_958_760), "mobilenet_v3_small": (75, 11_580_828)}


@pytest.mark.skipif(not flavour.IS_RTX, reason="counts measured on TensorRT-RTX's ahead-of-time build")
@pytest.mark.parametrize("name", sorted(TODAY))
def test_engine_does_not_grow(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    total = torch2x.inspect(model, [torch.randn(1, 3, 64, 64)]).totals()
    kernels, nbytes = TODAY[name]
    assert total["kernels"] <= kernels, f"{name}: {total['kernels']} kernels, {kernels} before"
    assert total["bytes"] <= nbytes * 1.01, f"{name}: {total['bytes']} bytes moved, about {nbytes} before"


# two-layer text models -> (kernels, bytes moved); in channel layout (layout.may_enter always True) they take 32
# and 30 kernels
TEXT_TODAY = {"bert": (27, 1_302_864), "gpt2": (27, 1_494_352)}


@pytest.mark.skipif(not flavour.IS_RTX, reason="counts measured on TensorRT-RTX's ahead-of-time build")
@pytest.mark.parametrize("name", sorted(TEXT_TODAY))
def test_text_model_engine_does_not_grow(name):
    hf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "bert":
        model = hf.BertModel(hf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=128, vocab_size=1000))
    else:
        model = hf.GPT2Model(hf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000))
    total = torch2x.inspect(LastHiddenState(model.eval()).eval(), [torch.randint(0, 1000, (1, 32))]).totals()
    kernels, nbytes = TEXT_TODAY[name]
    assert total["kernels"] <= kernels, f"{name}: {total['kernels']} kernels, {kernels} before"
    assert total["bytes"] <= nbytes * 1.01, f"{name}: {total['bytes']} bytes moved, about {nbytes} before"
