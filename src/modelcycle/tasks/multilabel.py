"""Multi-label classification: any number of labels per row (Hugging Face's
``problem_type="multi_label_classification"``). One logit per label, binary cross-entropy with logits; a
label is predicted when its sigmoid probability reaches ``THRESHOLD``; metrics from scikit-learn.

The target is one column naming each row's labels: text separated by ``|`` (``"action|comedy"``, a CSV
cell), or a list (a JSONL or Parquet cell, ``["action", "comedy"]``); an empty list is a row without labels.
The label set is every label the column names, in text order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from sklearn import metrics as skm

from modelcycle.errors import DataError, ModelcycleError, RequestError
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
from modelcycle.tasks.values import label_text

SEPARATOR = "|"
THRESHOLD = 0.5  # a label is predicted from probability 0.5 on (logit 0), the usual multi-label rule
AVERAGES = ("micro", "macro", "weighted", "samples")


def labels_of(cell: object) -> list[str]:
    """The labels one target cell names: a list's items, or ``|``-separated text; sorted, each once."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        items = [label_text(item) for item in cell]
    elif isinstance(cell, str):
        items = cell.split(SEPARATOR)
    else:
        items = [label_text(cell)]
    return sorted({item.strip() for item in items if item.strip()})


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Each logit's probability, float64 (scipy's expit: no overflow warning for large negative logits)."""
    result: np.ndarray = expit(logits.astype(np.float64))
    return result


@TASKS.register("multi_label_classification")
class MultiLabelClassification(WholeOutputs, TaskDefaults):
    name = "multi_label_classification"
    primary_metric = "f1_micro"
    live_metrics: tuple[str, ...] = (
        "f1_micro",
        "f1_macro",
        "precision_micro",
        "recall_micro",
        "hamming_loss",
        "subset_accuracy",
    )

    def __init__(self, class_weights: list[float] | None = None) -> None:
        del class_weights  # class weights are for one class per row; labels here are independent

    # -- data
    def prepare_target(self, column: pd.Series, name: str, origin: str) -> pd.Series:
        """Each cell as its labels' canonical text (sorted, ``|``-separated)."""
        return column.map(lambda cell: SEPARATOR.join(labels_of(cell)))

    def label_occurrences(self, column: pd.Series) -> pd.Series:
        return column.map(labels_of).explode().dropna().reset_index(drop=True)

    def check_target(self, column: pd.Series, name: str, source: str) -> None:
        if self.label_occurrences(column).empty:
            raise DataError(
                f"{source}: target '{name}' names no label in any row",
                hint=f"give each row's labels separated by '{SEPARATOR}', or a list per row (JSONL)",
            )

    def fit_target(self, column: pd.Series | None, label_names: list[str] | None) -> TargetCoding:
        return TargetCoding(classes=list(label_names or []))

    def encode_target(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        """A 0/1 row per row (N, labels), float32 as the loss takes it."""
        return self.metric_targets(column, coding, source).astype(np.float32)

    def metric_targets(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        """A 0/1 row per row (N, labels), int64; a label training never saw is an error naming it."""
        return _indicators([labels_of(cell) for cell in column], coding.classes, source, DataError)

    def decode_outputs(self, outputs: np.ndarray, coding: TargetCoding) -> np.ndarray:
        return outputs

    # -- model
    def output_dim(self, num_classes: int) -> int:
        return num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        """``targets`` (N, L) 0/1, ``outputs`` logits (N, L): see ``scores``."""
        return scores(targets, sigmoid(outputs))

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (metrics["f1_micro"], -metrics["hamming_loss"], -metrics["log_loss"])

    def example_target(self) -> pd.Series:
        # every label at least twice alone and together, and a row without labels
        return pd.Series(["action|comedy", "drama", "", "comedy", "action|drama|comedy", "drama"] * 2)

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, num_classes])]

    def agreement(self, expected: np.ndarray, got: np.ndarray) -> float:
        """The share of rows whose predicted label sets are equal."""
        return float(np.mean(((expected >= 0) == (got >= 0)).all(axis=-1)))

    # -- serving and monitoring
    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return sigmoid(outputs)

    def answer(self, outputs: np.ndarray, coding: TargetCoding) -> list[dict[str, Any]]:
        """The predicted labels and every label's probability, per row."""
        names = output_names(coding, outputs)
        return [
            {
                "labels": _chosen(row, names),
                "probabilities": dict(zip(names, map(float, row), strict=True)),
            }
            for row in sigmoid(outputs)
        ]

    def stored(self, outputs: np.ndarray, coding: TargetCoding) -> list[StoredPrediction]:
        """The label set's text, the highest label probability and every label's probability."""
        names = output_names(coding, outputs)
        probabilities = sigmoid(outputs)
        shares = np.round(probabilities, 6).tolist()
        return [
            (SEPARATOR.join(_chosen(row, names)), float(row.max(initial=0.0)), share)
            for row, share in zip(probabilities, shares, strict=True)
        ]

    def predicted_labels(self, outputs: np.ndarray, coding: TargetCoding) -> list[str]:
        return [label for row in sigmoid(outputs) for label in _chosen(row, coding.classes)]

    def explained_prediction(self, outputs: np.ndarray, coding: TargetCoding) -> str:
        return SEPARATOR.join(_chosen(sigmoid(outputs), coding.classes))

    def feedback_label(self, label: object, classes: list[str], ref: str) -> str | None:
        """A list of labels (or ``|``-separated text) as canonical text; a label ``ref`` does not know is an
        error naming it."""
        if label is None:
            return None
        if not isinstance(label, (str, list)):
            raise RequestError(f"label: {ref} takes a list of labels, not {label!r}")
        labels = labels_of(label)
        _indicators([labels], classes, f"label: {ref}", RequestError)
        return SEPARATOR.join(labels)

    def feedback_targets(self, labels: Sequence[object]) -> np.ndarray:
        return np.asarray(labels, dtype=object)

    def live_quality(self, rows: Sequence[LabelledRow], classes: list[str]) -> dict[str, float]:
        """Metrics of the rows whose feedback names known labels and whose probabilities were stored."""
        known = set(classes)
        scored = [
            (labels_of(label), shares)
            for label, _, _, shares in rows
            if label is not None and shares and set(labels_of(label)) <= known
        ]
        if not scored:
            return {}
        targets = _indicators([labels for labels, _ in scored], classes, "feedback", RequestError)
        return scores(targets, np.array([shares for _, shares in scored], dtype=np.float64))


def scores(targets: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Subset accuracy; Hamming loss; precision, recall and F1 (micro, macro, weighted, per-sample); label
    ranking average precision; log-loss (mean binary cross-entropy); and per label, keyed by the label's
    position in the label set (``f1/0``: the bundle's ``outputs.labels`` name it), F1, precision, recall
    and ROC-AUC (where the label is both present and absent). ``targets`` (N, L) 0/1, ``probabilities``
    (N, L) in [0, 1]."""
    predictions = (probabilities >= THRESHOLD).astype(np.int64)
    values = {
        "subset_accuracy": float(skm.accuracy_score(targets, predictions)),
        "hamming_loss": float(skm.hamming_loss(targets, predictions)),
    }
    for average in AVERAGES:
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            targets, predictions, average=average, zero_division=0
        )
        values.update(
            {
                f"precision_{average}": float(precision),
                f"recall_{average}": float(recall),
                f"f1_{average}": float(f1),
            }
        )
    values["label_ranking_average_precision"] = float(
        skm.label_ranking_average_precision_score(targets, probabilities)
    )
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    values["log_loss"] = float(-np.mean(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        targets, predictions, average=None, zero_division=0
    )
    for index in range(targets.shape[1]):
        values.update(
            {
                f"f1/{index}": float(f1[index]),
                f"precision/{index}": float(precision[index]),
                f"recall/{index}": float(recall[index]),
            }
        )
        if 0 < targets[:, index].sum() < len(targets):
            values[f"roc_auc/{index}"] = float(skm.roc_auc_score(targets[:, index], probabilities[:, index]))
    return values


def _indicators(
    rows: list[list[str]], classes: list[str], where: str, error: type[ModelcycleError]
) -> np.ndarray:
    """A 0/1 matrix (rows, classes) of each row's labels; an unknown label raises ``error`` naming it."""
    index = {label: position for position, label in enumerate(classes)}
    unknown = sorted({label for labels in rows for label in labels if label not in index})
    if unknown:
        raise error(
            f"{where}: labels {unknown[:5]} were not seen in training",
            hint=f"labels: {', '.join(classes[:20])}",
        )
    matrix = np.zeros((len(rows), len(classes)), dtype=np.int64)
    for row, labels in enumerate(rows):
        matrix[row, [index[label] for label in labels]] = 1
    return matrix


def _chosen(probabilities: np.ndarray, names: list[str]) -> list[str]:
    return [name for name, probability in zip(names, probabilities, strict=True) if probability >= THRESHOLD]
