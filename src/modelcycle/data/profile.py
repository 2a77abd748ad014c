"""The reference profile of the training split, saved as ``reference.json`` for drift detection.

Kilobytes, not a copy of the data: per numeric feature its percentiles (the natural bins for PSI and an
approximate CDF for KS / Wasserstein) and a histogram; per categorical feature its value frequencies;
for text, length percentiles and frequent tokens; for images, per-channel statistics; for the target, class
priors or percentiles.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.data.dataset import Dataset, task_of
from modelcycle.data.preprocess import MISSING_CATEGORY
from modelcycle.tasks.values import label_text

PROFILE_VERSION = 1
PERCENTILES = np.linspace(0, 100, 101)
HISTOGRAM_BINS = 20
TOP_VALUES = 50


def profile_dataset(dataset: Dataset) -> dict[str, Any]:
    """A JSON-ready profile: ``{"rows", "kind", "features": {name: {...}}, "target": {...}}``."""
    features: dict[str, Any] = {}
    for name, kind in dataset.feature_types.items():
        if kind == "image":
            features[name] = _image_profile(dataset.images)
        elif kind == "numeric":
            features[name] = numeric_profile(dataset.frame[name].to_numpy(dtype=np.float64))
        elif kind == "text":
            features[name] = _text_profile(dataset.frame[name].fillna("").astype(str))
        else:
            features[name] = categorical_profile(dataset.frame[name])
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": len(dataset),
        "kind": dataset.kind,
        "features": features,
    }
    task = task_of(dataset)
    if dataset.target is not None and task is not None:
        target = dataset.frame[dataset.target]
        labels = task.label_occurrences(target)  # None: the target is a number
        profile["target"] = (
            numeric_profile(target.to_numpy(dtype=np.float64))
            if labels is None
            else categorical_profile(labels, top=len(dataset.label_names or []) or TOP_VALUES)
        )
    return profile


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{value:.6g}") for value in values]


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    summary: dict[str, Any] = {
        "type": "numeric",
        "count": int(values.size),
        "missing_rate": float(1 - present.size / max(values.size, 1)),
    }
    if present.size == 0:
        return summary
    counts, edges = np.histogram(present, bins=HISTOGRAM_BINS)
    summary.update(
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        percentiles=_rounded(np.percentile(present, PERCENTILES)),
        histogram={"edges": _rounded(edges), "counts": counts.tolist()},
    )
    return summary


def categorical_profile(column: pd.Series, top: int = TOP_VALUES) -> dict[str, Any]:
    labels = column.map(lambda value: MISSING_CATEGORY if pd.isna(value) else label_text(value))
    counts = labels.value_counts()
    frequencies = {str(value): int(count) for value, count in counts.iloc[:top].items()}
    other = int(counts.iloc[top:].sum())
    return {
        "type": "categorical",
        "count": len(labels),
        "distinct": int(counts.size),
        "frequencies": frequencies,
        "other_count": other,
        "missing_rate": float((labels == MISSING_CATEGORY).mean()),
    }


def _text_profile(texts: pd.Series) -> dict[str, Any]:
    words = texts.map(str.split)
    tokens = Counter(token.lower() for row in words for token in row)
    return {
        "type": "text",
        "count": len(texts),
        "characters": numeric_profile(texts.str.len().to_numpy(dtype=np.float64)),
        "words": numeric_profile(words.map(len).to_numpy(dtype=np.float64)),
        "top_tokens": dict(tokens.most_common(TOP_VALUES)),
    }


def _image_profile(images: np.ndarray | None) -> dict[str, Any]:
    if images is None:
        return {"type": "image", "count": 0}
    per_channel = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    return {
        "type": "image",
        "count": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "channel_mean": _rounded(per_channel.mean(axis=1)),
        "channel_std": _rounded(per_channel.std(axis=1)),
        "intensity": numeric_profile(images.mean(axis=(1, 2, 3), dtype=np.float64)),
    }
