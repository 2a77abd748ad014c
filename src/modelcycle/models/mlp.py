"""A multi-layer perceptron for tabular features (images are flattened)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from modelcycle.models.base import ArchitectureEntry, Params, activation, register_architecture
from modelcycle.schema import InputSchema


class MLPParams(Params):
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"


class MLP(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, params: MLPParams) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for size in params.hidden:
            layers += [nn.Linear(width, size), activation(params.activation), nn.Dropout(params.dropout)]
            width = size
        layers.append(nn.Linear(width, output_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def build(inputs: InputSchema, output_dim: int, params: MLPParams) -> nn.Module:
    return MLP(math.prod(inputs.tensors[0].shape[1:]), output_dim, params)


ENTRY = register_architecture(ArchitectureEntry("mlp", ("tabular", "image"), MLPParams, build))
