"""The sequence classifiers trained from scratch: rnn (LSTM / GRU) over tokens or image rows, and the
transformer encoder; padding must not change a prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modelcycle.config import load_config
from modelcycle.errors import ConfigError
from modelcycle.models.rnn import RNN, RNNParams
from modelcycle.models.transformer import TransformerClassifier, TransformerParams
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.schema import InputSchema, TensorSpec
from tests.conftest import EXAMPLES

FILLER = ["the", "a", "movie", "plot", "actor", "scene", "story", "was", "it", "and", "of", "film"]


def keyword_reviews(path: Path, rows: int = 600, seed: int = 0) -> Path:
    """Reviews whose label is carried by one word ("great" / "awful") hidden among filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(rows):
        label = rng.integers(2)
        words = list(rng.choice(FILLER, size=rng.integers(4, 14)))
        words.insert(rng.integers(len(words) + 1), "great" if label else "awful")
        texts.append(" ".join(words))
        labels.append("positive" if label else "negative")
    pd.DataFrame({"review": texts, "label": labels}).to_csv(path, index=False)
    return path


TEXT_MODELS = [
    ["model.arch=rnn", "model.params={cell: lstm, embed_dim: 32, hidden_size: 32}"],
    ["model.arch=rnn", "model.params={cell: gru, embed_dim: 32, hidden_size: 32, bidirectional: false}"],
    [
        "model.arch=transformer",
        "model.params={embed_dim: 32, num_heads: 2, num_layers: 1, feedforward_dim: 64}",
    ],
]


@pytest.mark.slow  # measured: 16-23 CPU-s on its own (training inside the test)
@pytest.mark.parametrize("model", TEXT_MODELS, ids=["lstm", "gru", "transformer"])
def test_text_classifiers_learn_a_keyword(registry: Registry, tmp_path: Path, model: list[str]) -> None:
    csv = keyword_reviews(tmp_path / "reviews.csv")
    overrides = [
        f"name=kw-{model[0][11:]}",
        f"data.source=csv:{csv}",
        "data.target=label",
        *model,
        "train.epochs=6",
        "train.optimizer.lr=0.005",
    ]
    result = train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", overrides), registry)
    assert result.metrics["test"]["accuracy"] >= 0.9
    manifest = registry.open(result.ref).manifest
    assert [tensor.name for tensor in manifest.inputs.tensors] == ["input_ids", "attention_mask"]
    assert manifest.inputs.vocab_size == len(FILLER) + 4  # + [PAD], [UNK], great, awful


@pytest.mark.slow  # measured: 26 CPU-s on its own (training inside the test)
def test_rnn_reads_image_rows(registry: Registry) -> None:
    overrides = ["name=digits-rnn", "model.arch=rnn", "model.params={hidden_size: 64}", "train.epochs=8"]
    result = train(load_config(EXAMPLES / "digits-cnn.yaml", overrides), registry)
    assert result.metrics["test"]["accuracy"] >= 0.9


TEXT_INPUTS = InputSchema(
    kind="text",
    tensors=[
        TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1]),
        TensorSpec(name="attention_mask", dtype="int64", shape=[-1, -1]),
    ],
    vocab_size=20,
)


@pytest.mark.parametrize(
    "model",
    [
        lambda: RNN(TEXT_INPUTS, 3, RNNParams(embed_dim=8, hidden_size=8)),
        lambda: TransformerClassifier(20, 3, TransformerParams(embed_dim=8, num_heads=2, feedforward_dim=16)),
    ],
    ids=["rnn", "transformer"],
)
def test_padding_does_not_change_the_prediction(model) -> None:
    torch.manual_seed(0)
    network = model().eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    with torch.no_grad():
        plain = network(ids, torch.ones_like(ids))
        with_padding = network(padded, (padded != 0).long())
    torch.testing.assert_close(plain, with_padding, atol=1e-5, rtol=1e-5)


def test_transformer_refuses_texts_longer_than_its_positions() -> None:
    network = TransformerClassifier(20, 2, TransformerParams(embed_dim=8, num_heads=2, max_length=4))
    ids = torch.ones(1, 5, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"exceeds model\.params\.max_length 4"):
        network(ids, ids)
