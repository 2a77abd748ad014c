"""Importing a pretrained LLM (SmolLM2-135M-Instruct, shipped as GGUF) as a bundle, generating from it,
and fine-tuning it with LoRA through the ordinary pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from modelcycle.config import load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from tests.conftest import EXAMPLES


@pytest.mark.slow
@pytest.mark.integration
def test_import_smollm2_and_generate(registry: Registry, cli) -> None:
    imported = json.loads(cli("import", "builtin:smollm2", "--name", "smollm2", "--json").stdout)
    assert (imported["ref"], imported["task"]) == ("smollm2@1", "language_modeling")
    bundle = registry.open("smollm2")
    assert bundle.manifest.architecture.params["network_config"]["model_type"] == "llama"
    assert "tokenizer/tokenizer.json" in bundle.manifest.files
    weights = bundle.state_dict()
    assert sum(t.numel() for name, t in weights.items() if name != "network.lm_head.weight") == 134_515_008
    assert weights["network.lm_head.weight"] is weights["network.model.embed_tokens.weight"], (
        "tied, stored once"
    )
    answer = json.loads(
        cli(
            "generate",
            "smollm2",
            "--prompt",
            "The capital of France is",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "--json",
        ).stdout
    )
    assert "Paris" in answer["text"]
    assert answer["usage"]["completion_tokens"] == 6


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_lora_example_fine_tunes_and_merges(registry: Registry) -> None:
    result = train(load_config(EXAMPLES / "smollm2-lora.yaml", ["data.max_rows=120"]), registry)
    bundle = registry.open(result.ref)
    assert bundle.manifest.architecture.params["merged_lora"]["r"] == 8
    assert not any("lora" in key for key in bundle.state_dict())
    assert result.metrics["valid"]["perplexity"] < 1000
    assert torch.isfinite(torch.tensor(result.metrics["test"]["loss"]))


def test_an_encoder_cannot_be_imported_without_a_head(cli) -> None:
    result = cli("import", "builtin:minilm", "--name", "minilm")
    assert result.exit_code == 2
    assert "encoder without a task head" in result.stderr
