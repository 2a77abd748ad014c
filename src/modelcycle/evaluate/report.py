"""``evaluate(bundle, dataset)``: the task's metrics (checked against scikit-learn) and, for classification,
the confusion matrix, computed with the bundle's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcycle.bundle import Bundle
from modelcycle.data import Dataset
from modelcycle.errors import DataError
from modelcycle.predictor import Predictor


@dataclass(frozen=True)
class EvaluationReport:
    ref: str
    data: str
    rows: int
    task: str
    metrics: dict[str, float]
    labels: list[str] | None = None
    confusion_matrix: list[list[int]] | None = field(default=None)


def evaluate(bundle: Bundle, dataset: Dataset, *, data_name: str | None = None) -> EvaluationReport:
    if len(dataset) == 0:
        raise DataError(f"{dataset.source}: nothing to evaluate (no rows)")
    predictor = Predictor.load(bundle)
    metrics = predictor.measure(dataset)
    confusion = None
    if predictor.task.single_label:  # a confusion matrix needs one class per row
        outputs = predictor.outputs(dataset)
        confusion = predictor.task.confusion_matrix(predictor.encoder.transform(dataset), outputs)
    return EvaluationReport(
        ref=bundle.ref,
        data=data_name or dataset.source,
        rows=len(dataset),
        task=bundle.manifest.task,
        metrics=metrics,
        labels=bundle.manifest.outputs.labels,
        confusion_matrix=confusion,
    )
