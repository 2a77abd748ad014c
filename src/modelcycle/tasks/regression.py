"""Regression: mean squared error on a single output; MAE, RMSE and R² from scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm

from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS, WholeOutputs


@TASKS.register("regression")
class Regression(WholeOutputs):
    name = "regression"
    primary_metric = "rmse"

    def __init__(self, class_weights: list[float] | None = None) -> None:
        del class_weights  # regression has no classes to weight

    def output_dim(self, num_classes: int) -> int:
        return 1

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs.squeeze(-1), targets)

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        predictions = outputs.reshape(-1).astype(np.float64)
        return {
            "mae": float(skm.mean_absolute_error(targets, predictions)),
            "rmse": float(np.sqrt(skm.mean_squared_error(targets, predictions))),
            "r2": float(skm.r2_score(targets, predictions)),
        }

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (-metrics["rmse"],)

    def confusion_matrix(self, targets: np.ndarray, outputs: np.ndarray) -> None:
        return None  # a regression has no classes

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="prediction", dtype="float32", shape=[-1, 1])]
