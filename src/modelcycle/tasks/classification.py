"""Classification: one class per row. Cross-entropy (optionally class-weighted) over logits; metrics from
scikit-learn, plus expected calibration error; answers, stored predictions and live quality by class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from modelcycle.errors import DataError, RequestError
from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import (
    TASKS,
    LabelledRow,
    StoredPrediction,
    TargetCoding,
    TaskDefaults,
    WholeOutputs,
    output_names,
)
from modelcycle.tasks.calibration import expected_calibration_error
from modelcycle.tasks.values import label_text


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
class Classification(WholeOutputs, TaskDefaults):
    name = "classification"
    primary_metric = "accuracy"
    single_label = True
    live_metrics: tuple[str, ...] = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")

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

    def example_target(self) -> pd.Series:
        return pd.Series(["cat", "dog", "bird"] * 4)  # every class four times: every ROC curve exists

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, num_classes])]

    def label_occurrences(self, column: pd.Series) -> pd.Series:
        return column

    def check_target(self, column: pd.Series, name: str, source: str) -> None:
        classes = pd.unique(column.astype(str))
        if len(classes) < 2:
            raise DataError(
                f"{source}: target '{name}' has a single class ({classes[0]!r}); "
                "classification needs at least two",
            )

    def strata(self, column: pd.Series) -> np.ndarray:
        return column.to_numpy().astype(str)

    def fit_target(self, column: pd.Series | None, label_names: list[str] | None) -> TargetCoding:
        return TargetCoding(classes=list(label_names or []))

    def encode_target(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        """Class ids by the label's text; a label training never saw is an error naming it."""
        index = {label: position for position, label in enumerate(coding.classes)}
        labels = [label_text(value) for value in column]
        unknown = sorted({label for label in labels if label not in index})
        if unknown:
            raise DataError(
                f"{source}: labels {unknown[:5]} were not seen in training",
                hint=f"known labels: {', '.join(coding.classes[:20])}",
            )
        return np.asarray([index[label] for label in labels], dtype=np.int64)

    def metric_targets(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        return self.encode_target(column, coding, source)

    def decode_outputs(self, outputs: np.ndarray, coding: TargetCoding) -> np.ndarray:
        return outputs

    def agreement(self, expected: np.ndarray, got: np.ndarray) -> float:
        return float(np.mean(expected.argmax(axis=-1) == got.argmax(axis=-1)))

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return softmax(outputs.astype(np.float64))

    def answer(self, outputs: np.ndarray, coding: TargetCoding) -> list[dict[str, Any]]:
        """The most probable class and every class's probability, per row."""
        labels = output_names(coding, outputs)
        return [
            {
                "label": labels[int(row.argmax())],
                "probabilities": dict(zip(labels, map(float, row), strict=True)),
            }
            for row in softmax(outputs)
        ]

    def stored(self, outputs: np.ndarray, coding: TargetCoding) -> list[StoredPrediction]:
        labels = output_names(coding, outputs)
        probabilities = softmax(outputs)
        best = probabilities.argmax(axis=1)
        scores = probabilities[np.arange(len(best)), best].tolist()
        shares = np.round(probabilities, 6).tolist()
        return [
            (labels[index], score, share)
            for index, score, share in zip(best.tolist(), scores, shares, strict=True)
        ]

    def predicted_labels(self, outputs: np.ndarray, coding: TargetCoding) -> list[str]:
        return [coding.classes[index] for index in outputs.argmax(axis=1)]

    def explained_prediction(self, outputs: np.ndarray, coding: TargetCoding) -> str:
        return coding.classes[int(outputs.argmax())]

    def feedback_label(self, label: object, classes: list[str], ref: str) -> str | None:
        if label is None:
            return None
        text = str(label) if isinstance(label, (str, int)) else None
        if text is None or text not in classes:
            raise RequestError(
                f"label: {label!r} is not a class of {ref}", hint=f"classes: {', '.join(classes[:20])}"
            )
        return text

    def feedback_targets(self, labels: Sequence[object]) -> np.ndarray:
        return np.asarray(labels, dtype=object)

    def live_quality(self, rows: Sequence[LabelledRow], classes: list[str]) -> dict[str, float]:
        """Metrics of the rows whose feedback names a known class and whose probabilities were stored."""
        index = {label: position for position, label in enumerate(classes)}
        scored = [
            (index[label], shares)
            for label, _, _, shares in rows
            if label is not None and label in index and shares
        ]
        if not scored:
            return {}
        targets = np.array([target for target, _ in scored])
        probabilities = np.clip(np.array([shares for _, shares in scored], dtype=np.float64), 1e-12, None)
        return self.metrics(targets, np.log(probabilities))
