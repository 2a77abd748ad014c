"""``drift(reference, current)``: a sample's drift against a bundle's reference profile, per feature.

Numeric and categorical features are compared directly. Text is compared through its length in characters
and in words, images through their mean intensity (the profile keeps those, not the data), and both through
the model's embeddings of the rows (MMD against embedded training rows). The model's
predicted classes are compared with the training split's class priors, which catches a shift the features
miss when the shift is in what the model sees, not in any single column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.bundle import Bundle
from modelcycle.data import Dataset
from modelcycle.monitor.drift import (
    ALPHA,
    DriftReport,
    FeatureDrift,
    categorical_drift,
    corrected,
    embedding_drift,
    numeric_drift,
)
from modelcycle.monitor.embeddings import embed, project
from modelcycle.predictor import Predictor

DRIFT_SHARE = 0.5  # the dataset counts as drifted when half its features do (Evidently's default)
PREDICTION = "prediction"
EMBEDDING = "embedding"


def feature_columns(dataset: Dataset) -> dict[str, Sequence[Any]]:
    """A dataset's features as the columns ``drift`` takes: floats, strings, texts or one array per image."""
    columns: dict[str, Sequence[Any]] = {}
    for name, kind in dataset.feature_types.items():
        if kind == "image":
            columns[name] = list(dataset.images) if dataset.images is not None else []
        elif kind == "numeric":
            columns[name] = dataset.frame[name].to_numpy(dtype=np.float64).tolist()
        else:
            columns[name] = dataset.frame[name].fillna("").astype(str).tolist()
    return columns


def drift(
    reference: Mapping[str, Any],
    columns: Mapping[str, Sequence[Any]],
    *,
    predictions: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    alpha: float = ALPHA,
    share: float = DRIFT_SHARE,
) -> DriftReport:
    """Drift of ``columns`` (feature name → values, as ``feature_columns`` gives), of the predicted labels
    and of the model's ``embeddings`` of the same rows against ``reference`` (a ``reference.json``); what the
    profile does not know is skipped."""
    results: list[FeatureDrift] = []
    rows = 0
    for name, values in columns.items():
        profile = reference.get("features", {}).get(name)
        if profile is None or len(values) == 0:
            continue
        rows = max(rows, len(values))
        results += _feature_drift(name, profile, values, alpha)
    target = reference.get("target")
    if predictions is not None and len(predictions) and target and target.get("type") == "categorical":
        rows = max(rows, len(predictions))
        results.append(
            categorical_drift(PREDICTION, target, [str(label) for label in predictions], alpha=alpha)
        )
    profile = reference.get("embedding")
    if (
        embeddings is not None
        and len(embeddings) > 1
        and profile is not None
        and embeddings.shape[1] == profile["dim"]
    ):
        rows = max(rows, len(embeddings))
        sample = np.asarray(profile["sample"], dtype=np.float64)
        results.append(embedding_drift(EMBEDDING, sample, project(profile, embeddings), alpha=alpha))
    return DriftReport(corrected(results, alpha=alpha), share, rows)


def dataset_drift(
    bundle: Bundle, dataset: Dataset, *, alpha: float = ALPHA, share: float = DRIFT_SHARE
) -> DriftReport:
    """The drift of a whole data source against the bundle's reference, its predicted classes included
    (the model runs on the rows; no labels are needed)."""
    predictions, embeddings = None, None
    if bundle.manifest.task in ("classification", "regression") and len(dataset):
        predictor = Predictor.load(bundle)
        if bundle.manifest.task == "classification":
            labels = predictor.encoder.classes_
            predictions = [labels[index] for index in predictor.outputs(dataset).argmax(axis=1)]
        inputs = predictor.preprocessor.transform(dataset)
        embeddings = embed(predictor.model, inputs, output_width(bundle))
    reference = bundle.read_json("reference.json")
    columns = feature_columns(dataset)
    return drift(reference, columns, predictions=predictions, embeddings=embeddings, alpha=alpha, share=share)


def output_width(bundle: Bundle) -> int:
    """How many numbers the model gives per row (classes, or 1 for regression)."""
    return int(bundle.manifest.outputs.tensors[0].shape[-1])


def _feature_drift(
    name: str, profile: Mapping[str, Any], values: Sequence[Any], alpha: float
) -> list[FeatureDrift]:
    kind = profile.get("type")
    if kind == "numeric" and "histogram" in profile:
        return [numeric_drift(name, profile, np.asarray(values, dtype=np.float64), alpha=alpha)]
    if kind == "categorical":
        labels = ["" if value is None else str(value) for value in values]
        return [categorical_drift(name, profile, labels, alpha=alpha)]
    if kind == "text":
        texts = pd.Series([str(value) for value in values])
        return [
            numeric_drift(
                f"{name}.characters", profile["characters"], texts.str.len().to_numpy(np.float64), alpha=alpha
            ),
            numeric_drift(
                f"{name}.words",
                profile["words"],
                texts.map(lambda text: len(text.split())).to_numpy(np.float64),
                alpha=alpha,
            ),
        ]
    if kind == "image" and "intensity" in profile:
        intensity = np.asarray([np.asarray(image, dtype=np.float64).mean() for image in values])
        return [numeric_drift(f"{name}.intensity", profile["intensity"], intensity, alpha=alpha)]
    return []
