"""A small convolutional network for images: conv → batch-norm → ReLU → 2×2 max-pool blocks, then a linear
head over the flattened feature map."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from modelcycle.models.base import ArchitectureEntry, Params, register_architecture
from modelcycle.schema import InputSchema


class CNNParams(Params):
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: PositiveInt = 3
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class CNN(nn.Module):
    def __init__(self, image_shape: list[int], output_dim: int, params: CNNParams) -> None:
        super().__init__()
        channels, height, width = image_shape
        blocks: list[nn.Module] = []
        for size in params.channels:
            blocks += [
                nn.Conv2d(channels, size, params.kernel_size, padding=params.kernel_size // 2),
                nn.BatchNorm2d(size),
                nn.ReLU(),
            ]
            if min(height, width) >= 2:  # pool while the map is large enough, so tiny images still work
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = size
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(params.dropout), nn.Linear(channels * height * width, output_dim)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def build(inputs: InputSchema, output_dim: int, params: CNNParams) -> nn.Module:
    return CNN(inputs.tensors[0].shape[1:], output_dim, params)


ENTRY = register_architecture(ArchitectureEntry("cnn", ("image",), CNNParams, build))
