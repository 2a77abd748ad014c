"""Live quality: the stored predictions that feedback has labelled since a time, scored with the task's own
metrics (accuracy, precision / recall / F1, ROC-AUC for classification; MAE, RMSE for regression; F1,
Hamming loss, subset accuracy for multi-label), so live figures and the bundle's test figures mean the same
thing. The task scores the rows and says which of its metrics are reported live."""

from __future__ import annotations

from dataclasses import dataclass

from modelcycle.config import duration_seconds
from modelcycle.monitor.predictions import PredictionDatabase
from modelcycle.predictor import finite
from modelcycle.tasks import TASKS


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
    scorer = TASKS.get(task)()
    metrics = scorer.live_quality(rows, labels or [])
    kept = {name: value for name, value in finite(metrics).items() if name in scorer.live_metrics}
    return LiveQuality(model, version, window, len(rows), kept)
