"""Classification: cross-entropy (optionally class-weighted) over logits; metrics from scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm

from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@TASKS.register("classification")
class Classification:
    name = "classification"
    primary_metric = "accuracy"

    def __init__(self, class_weights: list[float] | None = None) -> None:
        self.class_weights = class_weights

    def output_dim(self, num_classes: int) -> int:
        return num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.class_weights is not None:
            weight = torch.tensor(self.class_weights, dtype=outputs.dtype, device=outputs.device)
        return torch.nn.functional.cross_entropy(outputs, targets, weight=weight)

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        """Accuracy, macro F1 and log-loss of logits ``outputs`` (N, K) against class indices ``targets``."""
        probabilities = softmax(outputs.astype(np.float64))
        predictions = probabilities.argmax(axis=1)
        labels = np.arange(outputs.shape[1])
        return {
            "accuracy": float(skm.accuracy_score(targets, predictions)),
            "f1_macro": float(
                skm.f1_score(targets, predictions, average="macro", labels=labels, zero_division=0)
            ),
            "log_loss": float(skm.log_loss(targets, probabilities, labels=labels)),
        }

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        # accuracy moves in steps of 1/rows, so many epochs tie; the better-calibrated one wins the tie
        return (metrics["accuracy"], -metrics["log_loss"])

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, num_classes])]
