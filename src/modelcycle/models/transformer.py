"""A transformer encoder classifier trained from scratch: token + learned position embeddings, pre-norm
encoder layers that ignore padding, masked mean pooling, a linear head."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from modelcycle.errors import ConfigError
from modelcycle.models.base import ArchitectureEntry, Params, register_architecture
from modelcycle.models.sequence import masked_mean
from modelcycle.schema import InputSchema


class TransformerParams(Params):
    embed_dim: PositiveInt = 128
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 4
    feedforward_dim: PositiveInt = 256
    max_length: PositiveInt = 512
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerParams:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        return self


class TransformerClassifier(nn.Module):
    def __init__(self, vocab_size: int, output_dim: int, params: TransformerParams) -> None:
        super().__init__()
        self.max_length = params.max_length
        self.token_embedding = nn.Embedding(vocab_size, params.embed_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(params.max_length, params.embed_dim)
        layer = nn.TransformerEncoderLayer(
            params.embed_dim,
            params.num_heads,
            params.feedforward_dim,
            params.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, params.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(params.embed_dim)
        self.head = nn.Sequential(nn.Dropout(params.dropout), nn.Linear(params.embed_dim, output_dim))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ConfigError(
                f"a text of {length} tokens exceeds model.params.max_length {self.max_length}",
                hint="raise max_length or lower data.preprocess.text.max_length",
            )
        positions = torch.arange(length, device=input_ids.device)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)
        states = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return self.head(masked_mean(self.norm(states), attention_mask))


def build(inputs: InputSchema, output_dim: int, params: TransformerParams) -> nn.Module:
    return TransformerClassifier(inputs.vocab_size or 2, output_dim, params)


ENTRY = register_architecture(ArchitectureEntry("transformer", ("text",), TransformerParams, build))
