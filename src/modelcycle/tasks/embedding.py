"""Embedding: a pretrained encoder's sentence vectors, imported rather than trained (no labels, no loss)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modelcycle.errors import TrainingError
from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS, Decoder, TaskDefaults


@TASKS.register("embedding")
class Embedding(TaskDefaults):
    name = "embedding"
    primary_metric = "none"
    row_outputs = False

    def __init__(self, class_weights: list[float] | None = None) -> None:
        del class_weights

    def output_dim(self, num_classes: int) -> int:
        return num_classes  # the embedding width

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise TrainingError(
            "an embedding model is imported, not trained",
            hint="fine-tune the encoder for a task with model.arch: hf",
        )

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        return {}  # nothing to compare an embedding with

    def measure(
        self, model: nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, decode: Decoder
    ) -> dict[str, float]:
        return {}

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (0.0,)

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="embedding", dtype="float32", shape=[-1, num_classes])]
