"""Importing a pretrained LLM (SmolLM2-135M-Instruct, shipped as GGUF) as a bundle, generating from it,
and fine-tuning it with LoRA through the ordinary pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from modelcycle.config import load_config
from modelcycle.data.text import resolve_tokenizer_dir
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
    assert {"tokenizer/tokenizer.json", "tokenizer/chat_template.jinja"} <= set(bundle.manifest.files)
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


@pytest.mark.slow
def test_import_minilm_as_sentence_embeddings(registry: Registry, cli) -> None:
    import pandas as pd
    import transformers

    from modelcycle.data import Dataset
    from modelcycle.packages import model_directory
    from modelcycle.predictor import Predictor

    imported = json.loads(cli("import", "builtin:minilm", "--name", "minilm", "--json").stdout)
    assert imported["task"] == "embedding"
    predictor = Predictor.load(registry.open("minilm"))
    texts = [
        "A gripping, beautifully acted film.",
        "A moving and well acted movie.",
        "The invoice is overdue.",
    ]
    frame = pd.DataFrame({"text": texts})
    vectors = predictor.outputs(Dataset("texts", "text", None, frame, None, {"text": "text"}))
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    # the sentence-transformers recipe (mean pooling + L2 normalisation) computed directly
    folder = model_directory("builtin:minilm", "config.json", field="test")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_import_task_must_match_the_model(cli) -> None:
    result = cli("import", "builtin:minilm", "--name", "minilm", "--task", "language_modeling")
    assert result.exit_code == 2
    assert "imports for embedding, not language_modeling" in result.stderr


@pytest.mark.slow  # measured: 10 CPU-s (the tokenizer is read out of a 100 MB GGUF file)
def test_a_gguf_tokenizer_is_written_out_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = resolve_tokenizer_dir("builtin:smollm2")
    assert first.parent == tmp_path / "modelcycle" / "tokenizers"
    assert Tokenizer.from_file(str(first / "tokenizer.json")).get_vocab_size() == 49152
    written = (first / "tokenizer.json").stat().st_mtime_ns
    assert resolve_tokenizer_dir("builtin:smollm2") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == written  # found, not written again
    assert [path.name for path in first.parent.iterdir()] == [first.name]  # no folder per run, no leftovers
    (first / "tokenizer.json").unlink()  # a folder left incomplete is written again
    assert resolve_tokenizer_dir("builtin:smollm2") == first
    assert Tokenizer.from_file(str(first / "tokenizer.json")).get_vocab_size() == 49152
