"""Classification: cross-entropy (optionally class-weighted) over logits; metrics from scikit-learn, plus
expected calibration error."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm

from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS, WholeOutputs
from modelcycle.tasks.calibration import expected_calibration_error


def roc_auc(targets: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary ROC-AUC of the positive (second) class, or one-vs-rest macro ROC-AUC; None when a class is
    missing from ``targets``, where the curve is undefined."""
    classes = probabilities.shape[1]
    if len(np.unique(targets)) < classes:
        return None
    if classes == 2:
        return float(skm.roc_auc_score(targets, probabilities[:, 1]))
    return float(
        skm.roc_auc_score(
            targets, probabilities, multi_class="ovr", average="macro", labels=np.arange(classes)
        )
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@TASKS.register("classification")
class Classification(WholeOutputs):
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
        """Accuracy; precision, recall and F1 (macro and weighted); ROC-AUC (binary, or one-vs-rest macro when
        every class occurs in ``targets``); log-loss; expected calibration error. ``outputs`` are logits
        (N, K), ``targets`` class indices (N,)."""
        probabilities = softmax(outputs.astype(np.float64))
        predictions = probabilities.argmax(axis=1)
        labels = np.arange(outputs.shape[1])
        values = {"accuracy": float(skm.accuracy_score(targets, predictions))}
        for average in ("macro", "weighted"):
            precision, recall, f1, _ = skm.precision_recall_fscore_support(
                targets, predictions, labels=labels, average=average, zero_division=0
            )
            values.update(
                {
                    f"precision_{average}": float(precision),
                    f"recall_{average}": float(recall),
                    f"f1_{average}": float(f1),
                }
            )
        auc = roc_auc(targets, probabilities)
        if auc is not None:
            values["roc_auc"] = auc
        values["log_loss"] = float(skm.log_loss(targets, probabilities, labels=labels))
        values["ece"] = expected_calibration_error(probabilities, targets)
        return values

    def confusion_matrix(self, targets: np.ndarray, outputs: np.ndarray) -> list[list[int]]:
        """Counts[true][predicted] over every class index."""
        labels = np.arange(outputs.shape[1])
        return skm.confusion_matrix(targets, outputs.argmax(axis=1), labels=labels).tolist()

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        # accuracy moves in steps of 1/rows, so many epochs tie; the better-calibrated one wins the tie
        return (metrics["accuracy"], -metrics["log_loss"])

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, num_classes])]
