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

from modelcycle.bundle import Bundle
from modelcycle.data import Dataset
from modelcycle.data.kinds import input_kind
from modelcycle.data.reference import (
    CategoricalProfile,
    FeatureProfile,
    ImageProfile,
    NumericProfile,
    Reference,
    TextProfile,
    text_lengths,
)
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
from modelcycle.tasks import TASKS

DRIFT_SHARE = 0.5  # the dataset counts as drifted when half its features do (Evidently's default)
PREDICTION = "prediction"
EMBEDDING = "embedding"


REFERENCE_FILE = "reference.json"


def read_reference(bundle: Bundle) -> Reference:
    """The bundle's ``reference.json``, checked (BundleError naming the field that does not fit)."""
    return Reference.read(bundle.read_json(REFERENCE_FILE), f"{bundle.path}/{REFERENCE_FILE}")


def feature_columns(dataset: Dataset) -> dict[str, Sequence[Any]]:
    """A dataset's features as the columns ``drift`` takes (floats, strings, texts or one array per image),
    as its input kind gives them."""
    return input_kind(dataset.kind).drift_columns(dataset)


def drift(
    reference: Reference,
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
        profile = reference.features.get(name)
        if profile is None or len(values) == 0:
            continue
        rows = max(rows, len(values))
        results += _feature_drift(name, profile, values, alpha)
    target = reference.target
    if predictions is not None and len(predictions) and isinstance(target, CategoricalProfile):
        rows = max(rows, len(predictions))
        results.append(
            categorical_drift(PREDICTION, target, [str(label) for label in predictions], alpha=alpha)
        )
    embedded = reference.embedding
    if (
        embeddings is not None
        and len(embeddings) > 1
        and embedded is not None
        and embeddings.shape[1] == embedded.dim
    ):
        rows = max(rows, len(embeddings))
        sample = np.asarray(embedded.sample, dtype=np.float64)
        results.append(embedding_drift(EMBEDDING, sample, project(embedded, embeddings), alpha=alpha))
    return DriftReport(corrected(results, alpha=alpha), share, rows)


def dataset_drift(
    bundle: Bundle, dataset: Dataset, *, alpha: float = ALPHA, share: float = DRIFT_SHARE
) -> DriftReport:
    """The drift of a whole data source against the bundle's reference, its predicted classes included
    (the model runs on the rows; no labels are needed)."""
    predictions, embeddings = None, None
    if TASKS.get(bundle.manifest.task)().row_outputs and len(dataset):
        predictor = Predictor.load(bundle)
        predictions = predictor.task.predicted_labels(predictor.outputs(dataset), predictor.encoder.coding)
        inputs = predictor.preprocessor.transform(dataset)
        embeddings = embed(predictor.model, inputs, output_width(bundle))
    reference = read_reference(bundle)
    columns = feature_columns(dataset)
    return drift(reference, columns, predictions=predictions, embeddings=embeddings, alpha=alpha, share=share)


def output_width(bundle: Bundle) -> int:
    """How many numbers the model gives per row (classes, or 1 for regression)."""
    return int(bundle.manifest.outputs.tensors[0].shape[-1])


def _feature_drift(
    name: str, profile: FeatureProfile, values: Sequence[Any], alpha: float
) -> list[FeatureDrift]:
    """Numeric and categorical features directly; texts by their lengths in characters and in words, images
    by their mean intensity (what their profiles keep)."""
    if isinstance(profile, NumericProfile):
        if profile.histogram is None:  # no value in the training split: nothing to compare with
            return []
        return [numeric_drift(name, profile, np.asarray(values, dtype=np.float64), alpha=alpha)]
    if isinstance(profile, CategoricalProfile):
        labels = ["" if value is None else str(value) for value in values]
        return [categorical_drift(name, profile, labels, alpha=alpha)]
    if isinstance(profile, TextProfile):
        characters, words = text_lengths(values)
        return [
            numeric_drift(f"{name}.characters", profile.characters, characters, alpha=alpha),
            numeric_drift(f"{name}.words", profile.words, words, alpha=alpha),
        ]
    if isinstance(profile, ImageProfile) and profile.intensity is not None:
        intensity = np.asarray([np.asarray(image, dtype=np.float64).mean() for image in values])
        return [numeric_drift(f"{name}.intensity", profile.intensity, intensity, alpha=alpha)]
    return []
