"""Global importance: how much the model's own metric drops when one feature's values are shuffled
(permutation importance, scikit-learn's implementation, with repeats for a mean and a spread). It needs
labelled rows and named features, so it is defined for tabular models."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.data import Dataset
from modelcycle.data.kinds import input_kind
from modelcycle.errors import ConfigError, DataError
from modelcycle.predictor import Predictor
from modelcycle.tasks import lower_is_better


@dataclass(frozen=True)
class FeatureImportance:
    feature: str
    mean: float  # drop of the metric when the feature is shuffled (larger: more important)
    std: float


@dataclass(frozen=True)
class Importance:
    ref: str
    metric: str
    baseline: float  # the metric on the unshuffled rows
    repeats: int
    rows: int
    features: list[FeatureImportance]  # most important first

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def permutation_importance(
    predictor: Predictor, dataset: Dataset, *, repeats: int = 5, seed: int = 0, max_rows: int = 2000
) -> Importance:
    """Permutation importance of every feature of ``dataset`` on the task's primary metric."""
    from sklearn.inspection import permutation_importance as sklearn_importance

    bundle = predictor.bundle
    if input_kind(bundle.manifest.inputs.kind).attribution_form != "features":
        raise ConfigError(
            f"{bundle.ref} takes {bundle.manifest.inputs.kind}; permutation importance needs named features",
            hint="explain single inputs instead",
        )
    if dataset.target is None or len(dataset) == 0:
        raise DataError(f"{dataset.source}: global importance needs labelled rows (the target column)")
    if len(dataset) > max_rows:
        dataset = dataset.take(np.random.default_rng(seed).choice(len(dataset), size=max_rows, replace=False))
    metric = predictor.task.primary_metric
    sign = -1.0 if lower_is_better(metric) else 1.0

    label = str(dataset.target)

    def score(_: object, frame: pd.DataFrame, target: pd.Series) -> float:
        rows = frame.assign(**{label: target.to_numpy()})
        return sign * predictor.measure(replace(dataset, frame=rows))[metric]

    frame = dataset.frame[dataset.features].reset_index(drop=True)
    target = dataset.frame[dataset.target].reset_index(drop=True)
    result = sklearn_importance(
        _Trained(predictor), frame, target, scoring=score, n_repeats=repeats, random_state=seed
    )
    features = [
        FeatureImportance(name, float(mean), float(std))
        for name, mean, std in zip(
            dataset.features, result.importances_mean, result.importances_std, strict=True
        )
    ]
    features.sort(key=lambda item: -item.mean)
    return Importance(bundle.ref, metric, sign * score(None, frame, target), repeats, len(dataset), features)


class _Trained:
    """scikit-learn checks for an estimator with ``fit``; the bundle's model is trained already."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def fit(self, *_: object) -> _Trained:
        return self
