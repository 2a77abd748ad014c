"""What a task is: the loss, the output head size, the metrics and which metric decides "better"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn

from modelcycle.inference import predict
from modelcycle.plugins import PluginRegistry
from modelcycle.schema import TensorSpec


class Task(Protocol):
    name: str
    primary_metric: str

    def output_dim(self, num_classes: int) -> int: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]: ...

    def measure(
        self, model: nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, decode: Decoder
    ) -> dict[str, float]:
        """The metrics of ``model`` on ``inputs``; ``decode`` maps raw outputs to the targets' units."""
        ...

    def confusion_matrix(self, targets: np.ndarray, outputs: np.ndarray) -> list[list[int]] | None: ...

    def output_tensors(self, num_classes: int) -> list[TensorSpec]: ...

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Larger is better: how checkpoints are ranked on validation metrics (with tie-breakers)."""
        ...


class WholeOutputs:
    """``measure`` for tasks whose metrics need every row's outputs at once (classification, regression)."""

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def measure(
        self, model: nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, decode: Decoder
    ) -> dict[str, float]:
        return self.metrics(targets, decode(predict(model, inputs)))


class TaskFactory(Protocol):
    primary_metric: str

    def __call__(self, class_weights: list[float] | None = None) -> Task: ...


Decoder = Callable[[np.ndarray], np.ndarray]
TASKS: PluginRegistry[TaskFactory] = PluginRegistry("task")
