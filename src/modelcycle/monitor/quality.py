"""Live quality: the stored predictions that feedback has labelled since a time, scored with the task's own
metrics (accuracy, precision / recall / F1, ROC-AUC, log-loss for classification; MAE, RMSE, R² for
regression), so live figures and the bundle's test figures mean the same thing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelcycle.config import duration_seconds
from modelcycle.monitor.predictions import PredictionDatabase
from modelcycle.predictor import finite
from modelcycle.tasks.classification import Classification
from modelcycle.tasks.regression import Regression

QUALITY_METRICS = {
    "classification": ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"),
    "regression": ("mae", "rmse"),
}


@dataclass(frozen=True)
class LiveQuality:
    model: str
    version: int | None  # None: every version together
    window: str
    samples: int
    metrics: dict[str, float]


def live_quality(
    database: PredictionDatabase,
    model: str,
    task: str,
    labels: list[str] | None,
    *,
    window: str,
    now: float,
    version: int | None = None,
) -> LiveQuality:
    """The quality of ``model``'s labelled predictions made in the last ``window`` (one version or all)."""
    rows = database.labelled(model, since=now - duration_seconds(window), version=version)
    metrics: dict[str, float] = {}
    if task == "classification" and labels:
        index = {label: position for position, label in enumerate(labels)}
        scored = [(index[label], shares) for label, _, _, shares in rows if label in index and shares]
        if scored:
            targets = np.array([target for target, _ in scored])
            probabilities = np.clip(np.array([shares for _, shares in scored], dtype=np.float64), 1e-12, None)
            metrics = Classification().metrics(targets, np.log(probabilities))
    elif task == "regression":
        pairs = [(value, score) for _, value, score, _ in rows if value is not None and score is not None]
        if pairs:
            targets, predictions = (np.array(column, dtype=np.float64) for column in zip(*pairs, strict=True))
            metrics = Regression().metrics(targets, predictions)
    kept = {name: value for name, value in finite(metrics).items() if name in QUALITY_METRICS.get(task, ())}
    return LiveQuality(model, version, window, len(rows), kept)
