"""What a task is: everything a stage asks of it. How its target reads, is checked, split, profiled and
encoded (data); the output head, loss, metrics and which metric decides "better" (training); how outputs
become an answer, a stored prediction and live quality from feedback (serving and monitoring).

Stages hold a ``Task`` and never a task's name, so adding a task is one module and one ``@TASKS.register``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from modelcycle.errors import RequestError
from modelcycle.inference import predict
from modelcycle.plugins import PluginRegistry
from modelcycle.schema import TensorSpec

Decoder = Callable[[np.ndarray], np.ndarray]
# A prediction as the store keeps it: (label text, score, per-class probabilities); a regression's score is
# the predicted value, and it has no label or probabilities.
StoredPrediction = tuple[str | None, float, list[float] | None]
# A labelled prediction as live quality reads it: (feedback label text, feedback value, stored score,
# stored probabilities).
LabelledRow = tuple[str | None, float | None, float | None, list[float] | None]


@dataclass(frozen=True)
class TargetCoding:
    """What a task learned of the training split's target: the class names in output order, or the mean and
    standard deviation that standardise a numeric target (preprocess.json's ``target`` part)."""

    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0


class Task(Protocol):
    name: str
    primary_metric: str
    # Each row is one class of several: class weights and oversampling apply, a confusion matrix and ROC
    # curves describe the model, and a teacher's softened class distribution can distil it.
    single_label: bool
    # The rows are one running text (a corpus): splits and samples keep them in order, and no row-level
    # report (held-out examples, importance) applies.
    ordered_rows: bool
    # The model gives one output vector per row (False: one per position of a sequence, or nothing is
    # trained); architectures that do not list their tasks do every task with row outputs.
    row_outputs: bool
    # The metrics live quality reports from feedback (a subset of ``metrics``' keys).
    live_metrics: tuple[str, ...]

    # -- data: the target column as loaded, checked, split and profiled
    def prepare_target(self, column: pd.Series, name: str, origin: str) -> pd.Series:
        """The target column in the form every later step reads (e.g. numbers for a regression)."""
        ...

    def label_occurrences(self, column: pd.Series) -> pd.Series | None:
        """Every label each row carries, one entry per label (None: the target is a number, not labels)."""
        ...

    def check_target(self, column: pd.Series, name: str, source: str) -> None:
        """Refuse a target no model can learn from (e.g. a single class)."""
        ...

    def strata(self, column: pd.Series) -> np.ndarray | None:
        """Per-row strata for a stratified split, or None where the target has none."""
        ...

    # -- encoding: target ↔ tensors, learned on the training split
    def fit_target(self, column: pd.Series | None, label_names: list[str] | None) -> TargetCoding: ...

    def encode_target(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        """The targets training fits (class ids, a standardised value, a 0/1 row per label)."""
        ...

    def metric_targets(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        """The targets metrics compare outputs with, in the target's own units."""
        ...

    def decode_outputs(self, outputs: np.ndarray, coding: TargetCoding) -> np.ndarray:
        """Network outputs in the target's own units (a regression's value); logits stay logits."""
        ...

    def num_outputs(self, coding: TargetCoding, vocabulary: int | None) -> int:
        """What the output head is sized by: classes, labels or the vocabulary (see ``output_dim``)."""
        ...

    # -- model: head, loss, metrics, selection
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

    def agreement(self, expected: np.ndarray, got: np.ndarray) -> float | None:
        """The share of rows two runtimes predict alike (same class or label set); None for values."""
        ...

    # -- serving and monitoring: outputs → answers, stored predictions, live quality
    def probabilities(self, outputs: np.ndarray) -> np.ndarray | None:
        """Per-class probabilities of logits (N, K), or None for a task without classes."""
        ...

    def answer(self, outputs: np.ndarray, coding: TargetCoding) -> list[dict[str, Any]]:
        """The simple JSON API's prediction per row."""
        ...

    def stored(self, outputs: np.ndarray, coding: TargetCoding) -> list[StoredPrediction]: ...

    def predicted_labels(self, outputs: np.ndarray, coding: TargetCoding) -> list[str] | None:
        """Every label predicted over the rows (compared with the training labels' priors for drift)."""
        ...

    def explained_prediction(self, outputs: np.ndarray, coding: TargetCoding) -> str | float:
        """One row's prediction as an explanation names it: a label (set) or a value."""
        ...

    def feedback_label(self, label: object, classes: list[str], ref: str) -> str | None:
        """The text a feedback label is stored as (None when none was sent); a label that is not one of
        ``classes`` of the model ``ref`` (or any label, for a task of values) is a RequestError."""
        ...

    def feedback_targets(self, labels: Sequence[object]) -> np.ndarray:
        """Stored feedback (label texts or values) as a target column."""
        ...

    def live_quality(self, rows: Sequence[LabelledRow], classes: list[str]) -> dict[str, float]:
        """The task's metrics of labelled stored predictions (before filtering to ``live_metrics``)."""
        ...

    # -- testing
    def example_target(self) -> pd.Series | None:
        """A small target column as loaded (at least two rows of each label), on which the contract checks
        of ``modelcycle.testing`` train and answer; None for a task without row outputs to check."""
        ...


class WholeOutputs:
    """``measure`` for tasks whose metrics need every row's outputs at once (classification, regression)."""

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def measure(
        self, model: nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, decode: Decoder
    ) -> dict[str, float]:
        return self.metrics(targets, decode(predict(model, inputs)))


class TaskDefaults:
    """What a task does unless it says otherwise: the answers of a task without classes (regression, and the
    tasks without a target column): the target is a value, standardised for training, outputs are values,
    feedback is a value, nothing is a label, nothing is reported live."""

    single_label = False
    ordered_rows = False
    row_outputs = True
    live_metrics: tuple[str, ...] = ()

    def prepare_target(self, column: pd.Series, name: str, origin: str) -> pd.Series:
        return column

    def label_occurrences(self, column: pd.Series) -> pd.Series | None:
        return None

    def check_target(self, column: pd.Series, name: str, source: str) -> None:
        return None

    def strata(self, column: pd.Series) -> np.ndarray | None:
        return None

    def fit_target(self, column: pd.Series | None, label_names: list[str] | None) -> TargetCoding:
        return TargetCoding()

    def encode_target(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        return ((column.to_numpy(dtype=np.float64) - coding.mean) / coding.std).astype(np.float32)

    def metric_targets(self, column: pd.Series, coding: TargetCoding, source: str) -> np.ndarray:
        return column.to_numpy(dtype=np.float64)

    def decode_outputs(self, outputs: np.ndarray, coding: TargetCoding) -> np.ndarray:
        return outputs * coding.std + coding.mean

    def num_outputs(self, coding: TargetCoding, vocabulary: int | None) -> int:
        return len(coding.classes)

    def confusion_matrix(self, targets: np.ndarray, outputs: np.ndarray) -> list[list[int]] | None:
        return None

    def agreement(self, expected: np.ndarray, got: np.ndarray) -> float | None:
        return None

    def probabilities(self, outputs: np.ndarray) -> np.ndarray | None:
        return None

    def answer(self, outputs: np.ndarray, coding: TargetCoding) -> list[dict[str, Any]]:
        values = self.decode_outputs(np.asarray(outputs), coding)
        return [{"value": row.tolist() if row.size > 1 else float(row[0])} for row in values]

    def stored(self, outputs: np.ndarray, coding: TargetCoding) -> list[StoredPrediction]:
        values = self.decode_outputs(outputs, coding).reshape(len(outputs), -1)[:, 0].tolist()
        return [(None, value, None) for value in values]

    def predicted_labels(self, outputs: np.ndarray, coding: TargetCoding) -> list[str] | None:
        return None

    def explained_prediction(self, outputs: np.ndarray, coding: TargetCoding) -> str | float:
        return float(self.decode_outputs(outputs[None], coding)[0, 0])

    def feedback_label(self, label: object, classes: list[str], ref: str) -> str | None:
        if label is not None:
            raise RequestError(f"label: {ref} predicts values; send 'value'")
        return None

    def feedback_targets(self, labels: Sequence[object]) -> np.ndarray:
        return np.asarray(labels, dtype=np.float64)

    def live_quality(self, rows: Sequence[LabelledRow], classes: list[str]) -> dict[str, float]:
        return {}

    def example_target(self) -> pd.Series | None:
        return None


def output_names(coding: TargetCoding, outputs: np.ndarray) -> list[str]:
    """The class names, or the output positions as text for a bundle without names."""
    return coding.classes or [str(index) for index in range(outputs.shape[-1])]


class TaskFactory(Protocol):
    primary_metric: str

    def __call__(self, class_weights: list[float] | None = None) -> Task: ...


TASKS: PluginRegistry[TaskFactory] = PluginRegistry("task")
