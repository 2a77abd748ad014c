"""What a task is: the loss, the output head size, the metrics and which metric decides "better"."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from modelcycle.plugins import PluginRegistry
from modelcycle.schema import TensorSpec


class Task(Protocol):
    name: str
    primary_metric: str

    def output_dim(self, num_classes: int) -> int: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]: ...

    def confusion_matrix(self, targets: np.ndarray, outputs: np.ndarray) -> list[list[int]] | None: ...

    def output_tensors(self, num_classes: int) -> list[TensorSpec]: ...

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Larger is better: how checkpoints are ranked on validation metrics (with tie-breakers)."""
        ...


class TaskFactory(Protocol):
    def __call__(self, class_weights: list[float] | None = None) -> Task: ...


TASKS: PluginRegistry[TaskFactory] = PluginRegistry("task")
