"""The language-modelling path: corpus blocks, the gpt architecture, its key / value cache, sampling, the
perplexity metric, and `modelcycle generate`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from modelcycle.config import DataConfig, PreprocessConfig, TextConfig, load_config
from modelcycle.data import load_dataset, make_preprocessor
from modelcycle.errors import ConfigError
from modelcycle.models.gpt import GPT, GPTParams
from modelcycle.models.sampling import filter_logits, sample_next
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.tasks.language_modeling import LanguageModeling
from tests.conftest import EXAMPLES

SMALL = [
    "data.max_rows=1200",
    "data.preprocess.text.max_length=64",
    "model.params.embed_dim=32",
    "model.params.num_layers=1",
    "model.params.num_heads=2",
    "model.params.context_length=64",
    "train.epochs=3",
    "train.schedule.warmup_steps=0",
    "train.optimizer.lr=0.01",
]


def test_corpus_blocks_are_shifted_by_one() -> None:
    hamlet = load_dataset(DataConfig(source="builtin:hamlet", max_rows=100))
    config = PreprocessConfig(text=TextConfig(tokenizer="char", max_length=16, lowercase=False))
    corpus = make_preprocessor("corpus", config)
    corpus.fit(hamlet)
    inputs, targets = corpus.blocks(hamlet)
    stream = corpus.stream("\n".join(hamlet.frame["text"]))
    assert inputs["input_ids"].shape == targets.shape == ((len(stream) - 1) // 16, 16)
    assert np.array_equal(inputs["input_ids"].ravel(), stream[: targets.size])
    assert np.array_equal(targets.ravel(), stream[1 : targets.size + 1])
    assert corpus.decode(stream[:30]) == "\n".join(hamlet.frame["text"])[:30]


def test_top_k_and_top_p_filtering() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.0)).tolist() == [[True, False, False, False]]
    assert sample_next(logits, temperature=0).item() == 0
    generator = torch.Generator().manual_seed(0)
    draws = [sample_next(logits, top_k=1, generator=generator).item() for _ in range(20)]
    assert set(draws) == {0}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_recomputing_the_prefix(temperature: float) -> None:
    torch.manual_seed(0)
    model = GPT(30, GPTParams(embed_dim=32, num_layers=2, num_heads=4, context_length=16, dropout=0.0))
    prompt = torch.randint(0, 30, (1, 5))
    runs = [
        torch.cat(
            [
                prompt,
                *model.tokens(
                    prompt,
                    20,
                    temperature=temperature,
                    generator=torch.Generator().manual_seed(3),
                    use_cache=use_cache,
                ),
            ],
            dim=1,
        )
        for use_cache in (True, False)
    ]
    assert runs[0].shape == (1, 25)  # slides past the 16-token context
    assert torch.equal(runs[0], runs[1])


def test_gpt_refuses_sequences_longer_than_its_context() -> None:
    model = GPT(10, GPTParams(embed_dim=8, num_layers=1, num_heads=2, context_length=4))
    with pytest.raises(ConfigError, match=r"exceeds model\.params\.context_length 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_language_model_metrics() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7))
    targets = rng.integers(0, 7, size=(3, 5))
    values = LanguageModeling().metrics(targets, logits)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probabilities, targets[..., None], -1).mean()
    assert values["loss"] == pytest.approx(nll)
    assert values["perplexity"] == pytest.approx(math.exp(nll))
    assert values["accuracy"] == pytest.approx((logits.argmax(-1) == targets).mean())


@pytest.mark.slow
def test_tiny_gpt_trains_evaluates_and_generates(registry: Registry, cli) -> None:
    result = train(load_config(EXAMPLES / "tiny-gpt.yaml", SMALL), registry)
    vocabulary = registry.open(result.ref).manifest.inputs.vocab_size
    assert result.metrics["valid"]["perplexity"] < vocabulary / 2, "better than guessing among the characters"
    evaluated = json.loads(cli("evaluate", result.ref, "--json").stdout)
    assert evaluated["metrics"]["perplexity"] == pytest.approx(result.metrics["test"]["perplexity"])
    command = [
        "generate",
        result.ref,
        "--prompt",
        "HAMLET",
        "--max-tokens",
        "40",
        "--seed",
        "7",
        "--top-k",
        "10",
    ]
    first, again = (json.loads(cli(*command, "--json").stdout) for _ in range(2))
    assert first == again
    assert first["usage"] == {"prompt_tokens": 6, "completion_tokens": 40}
    assert len(first["text"]) == 40


def test_generate_refuses_a_classifier(registry: Registry, cli) -> None:
    ref = train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=1"]), registry).ref
    result = cli("generate", ref, "--prompt", "x")
    assert result.exit_code == 2
    assert "does not generate text" in result.stderr


def test_a_prompt_without_known_tokens_is_a_clear_error(registry: Registry, cli) -> None:
    overrides = [
        *SMALL,
        "train.epochs=1",
        "data.max_rows=300",
        "data.preprocess.text.tokenizer=word",
        "data.preprocess.text.max_length=16",
        "model.params.context_length=16",
    ]
    ref = train(load_config(EXAMPLES / "tiny-gpt.yaml", overrides), registry).ref
    result = cli("generate", ref)
    assert result.exit_code == 2
    assert "holds no token" in result.stderr
