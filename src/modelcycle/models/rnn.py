"""A recurrent classifier (LSTM or GRU, optionally bidirectional): over token ids for text, or over an
image's rows as a sequence of feature vectors."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modelcycle.models.base import ArchitectureEntry, Params, register_architecture
from modelcycle.models.sequence import lengths_of, masked_mean
from modelcycle.schema import InputSchema


class RNNParams(Params):
    cell: Literal["lstm", "gru"] = "lstm"
    embed_dim: PositiveInt = 128
    hidden_size: PositiveInt = 128
    num_layers: PositiveInt = 1
    bidirectional: bool = True
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class RNN(nn.Module):
    def __init__(self, inputs: InputSchema, output_dim: int, params: RNNParams) -> None:
        super().__init__()
        self.text = inputs.tensors[0].dtype == "int64"  # token ids: read through an embedding
        if self.text:
            self.embedding = nn.Embedding(inputs.vocab_size or 2, params.embed_dim, padding_idx=0)
            features = params.embed_dim
        else:  # an image (C, H, W) read as H steps of C·W features
            channels, _, width = inputs.tensors[0].shape[1:]
            features = channels * width
        recurrent = nn.LSTM if params.cell == "lstm" else nn.GRU
        self.recurrent = recurrent(
            features,
            params.hidden_size,
            num_layers=params.num_layers,
            batch_first=True,
            bidirectional=params.bidirectional,
            dropout=params.dropout if params.num_layers > 1 else 0.0,
        )
        directions = 2 if params.bidirectional else 1
        self.head = nn.Sequential(
            nn.Dropout(params.dropout), nn.Linear(directions * params.hidden_size, output_dim)
        )

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if not self.text:
            image = tensors[0]
            states, _ = self.recurrent(image.permute(0, 2, 1, 3).flatten(2))
            return self.head(states.mean(dim=1))
        input_ids, mask = tensors
        # packed, so that padding never reaches the backward direction's state
        packed = pack_padded_sequence(
            self.embedding(input_ids), lengths_of(mask), batch_first=True, enforce_sorted=False
        )
        states, _ = pad_packed_sequence(
            self.recurrent(packed)[0], batch_first=True, total_length=input_ids.shape[1]
        )
        return self.head(masked_mean(states, mask))


def build(inputs: InputSchema, output_dim: int, params: RNNParams) -> nn.Module:
    return RNN(inputs, output_dim, params)


# Over tokens the exporter cannot trace the packed sequences (torch 2.13: "zeros(): argument 'size' ... got
# FakeTensor"); over image rows it exports.
ENTRY = register_architecture(
    ArchitectureEntry("rnn", ("text", "image"), RNNParams, build, onnx_unsupported=("text",))
)
