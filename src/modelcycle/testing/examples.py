"""Example inputs for the contract checks: a tiny input schema per kind of data (the tensors the data layer
produces for it), a seeded batch for any schema, and small hyper-parameters for the built-in architectures,
so every check builds a network in milliseconds and never reads a pretrained checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelcycle.schema import DataKind, InputSchema, TensorSpec

VOCABULARY = 30  # token ids of the text and corpus examples
SEQUENCE = 6  # tokens per example row
CLASSES = 3  # outputs of a classification head in the examples
MASK = "attention_mask"  # a token mask: 1 for a real token, 0 for padding


@dataclass(frozen=True)
class ExampleInput:
    """A kind of data as a network sees it: its input schema, and how many outputs a head over it has
    (classes, or the vocabulary for next-token prediction)."""

    schema: InputSchema
    num_outputs: int


_TOKENS = TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])
EXAMPLE_INPUTS: dict[DataKind, ExampleInput] = {
    "tabular": ExampleInput(
        InputSchema(kind="tabular", tensors=[TensorSpec(name="features", dtype="float32", shape=[-1, 5])]),
        CLASSES,
    ),
    "image": ExampleInput(
        InputSchema(kind="image", tensors=[TensorSpec(name="image", dtype="float32", shape=[-1, 1, 8, 8])]),
        CLASSES,
    ),
    "text": ExampleInput(
        InputSchema(
            kind="text",
            tensors=[_TOKENS, TensorSpec(name=MASK, dtype="int64", shape=[-1, -1])],
            vocab_size=VOCABULARY,
        ),
        CLASSES,
    ),
    "corpus": ExampleInput(InputSchema(kind="corpus", tensors=[_TOKENS], vocab_size=VOCABULARY), VOCABULARY),
}

_BERT = {
    "model_type": "bert",
    "vocab_size": VOCABULARY,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}
_LLAMA = {
    "model_type": "llama",
    "vocab_size": VOCABULARY,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}
# Built-in architectures whose defaults are large or read a pretrained checkpoint: the pretrained ones get a
# tiny random config of the same model class (as a registered bundle rebuilds them), never a download. An
# architecture missing here is checked with its default parameters.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [8]},
    "cnn": {"channels": [4]},
    "rnn": {"embed_dim": 8, "hidden_size": 8},
    "transformer": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "feedforward_dim": 32},
    "gpt": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "context_length": 16},
    "hf": {"encoder_config": _BERT},
    "hf_causal_lm": {"network_config": _LLAMA},
}


def example_batch(
    schema: InputSchema, rows: int = 4, *, sequence: int = SEQUENCE, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded arrays for every tensor of ``schema`` (variable dimensions: ``rows`` for the batch,
    ``sequence`` for the others). Token ids lie in [1, vocab_size); with an ``attention_mask`` every row
    after the first is cut short by one more token and padded with id 0, so batches hold padding."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for tensor in schema.tensors:
        shape = [rows] + [sequence if size == -1 else size for size in tensor.shape[1:]]
        if tensor.dtype.startswith("int"):
            arrays[tensor.name] = rng.integers(1, schema.vocab_size or 2, size=shape).astype(tensor.dtype)
        else:
            arrays[tensor.name] = rng.normal(size=shape).astype(tensor.dtype)
    if MASK in arrays:
        lengths = np.maximum(1, sequence - np.arange(rows))
        real = np.arange(sequence)[None, :] < lengths[:, None]
        arrays[MASK] = real.astype(arrays[MASK].dtype)
        for name, array in arrays.items():
            if name != MASK and array.shape[:2] == real.shape:
                array[~real] = 0
    return arrays
