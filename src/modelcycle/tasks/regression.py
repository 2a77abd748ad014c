"""Regression: mean squared error on a single output, trained on the target standardised with the training
split's mean and std; MAE, RMSE and R² from scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS, LabelledRow, TargetCoding, TaskDefaults, WholeOutputs
from modelcycle.tasks.values import to_numeric


@TASKS.register("regression")
class Regression(WholeOutputs, TaskDefaults):
    name = "regression"
    primary_metric = "rmse"
    live_metrics: tuple[str, ...] = ("mae", "rmse")

    def __init__(self, class_weights: list[float] | None = None) -> None:
        del class_weights  # regression has no classes to weight

    def prepare_target(self, column: pd.Series, name: str, origin: str) -> pd.Series:
        return to_numeric(column, name, origin)

    def fit_target(self, column: pd.Series | None, label_names: list[str] | None) -> TargetCoding:
        values = np.asarray([] if column is None else column, dtype=np.float64)
        return TargetCoding(mean=float(values.mean()), std=float(values.std()) or 1.0)

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

    def example_target(self) -> pd.Series:
        return pd.Series(np.linspace(-2.0, 5.0, 12))

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="prediction", dtype="float32", shape=[-1, 1])]

    def live_quality(self, rows: Sequence[LabelledRow], classes: list[str]) -> dict[str, float]:
        """Metrics of the rows whose feedback gave a value and whose prediction was stored."""
        pairs = [(value, score) for _, value, score, _ in rows if value is not None and score is not None]
        if not pairs:
            return {}
        targets, predictions = (np.array(column, dtype=np.float64) for column in zip(*pairs, strict=True))
        return self.metrics(targets, predictions)
