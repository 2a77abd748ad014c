"""``reference.json``, the profile of the training split that drift is measured against, as typed models, and
the functions that profile one column of each type.

Kilobytes, not a copy of the data: per numeric feature its percentiles (the natural bins for PSI and an
approximate CDF for KS / Wasserstein) and a histogram; per categorical feature its value frequencies; for
text, length percentiles and frequent tokens; for images, per-channel statistics; for the target, class
priors or percentiles; for text and images, the model's embeddings of training rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from modelcycle.contracts import Contract
from modelcycle.data.preprocess import MISSING_CATEGORY
from modelcycle.schema import DataKind
from modelcycle.tasks.values import label_text

PROFILE_VERSION = 1
PERCENTILES = np.linspace(0, 100, 101)
HISTOGRAM_BINS = 20
TOP_VALUES = 50


class Histogram(Contract):
    edges: list[float]
    counts: list[int]


class NumericProfile(Contract):
    """Summary statistics, 101 percentiles and a histogram; only the counts when no value is present."""

    type: Literal["numeric"] = "numeric"
    count: int
    missing_rate: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    percentiles: list[float] | None = None
    histogram: Histogram | None = None


class CategoricalProfile(Contract):
    """The ``TOP_VALUES`` most frequent values' counts; the rest together in ``other_count``."""

    type: Literal["categorical"] = "categorical"
    count: int
    distinct: int
    frequencies: dict[str, int]
    other_count: int
    missing_rate: float


class TextProfile(Contract):
    """Lengths in characters and in words, and the most frequent (lower-cased) tokens."""

    type: Literal["text"] = "text"
    count: int
    characters: NumericProfile
    words: NumericProfile
    top_tokens: dict[str, int]


class ImageProfile(Contract):
    """Per-channel mean and std, and the distribution of each image's mean intensity."""

    type: Literal["image"] = "image"
    count: int
    shape: list[int] | None = None
    channel_mean: list[float] | None = None
    channel_std: list[float] | None = None
    intensity: NumericProfile | None = None


class EmbeddingProfile(Contract):
    """PCA of the model's embeddings of training rows and a projected sample of them."""

    type: Literal["embedding"] = "embedding"
    count: int
    dim: int
    mean: list[float]
    components: list[list[float]]
    sample: list[list[float]]


FeatureProfile = Annotated[
    NumericProfile | CategoricalProfile | TextProfile | ImageProfile, Field(discriminator="type")
]
TargetProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="type")]


class Reference(Contract):
    """The whole file. ``kind`` is the input kind; an imported model's profile has no rows and no features."""

    profile_version: int = PROFILE_VERSION
    rows: int
    kind: DataKind | None = None
    features: dict[str, FeatureProfile] = Field(default_factory=dict)
    target: TargetProfile | None = None
    embedding: EmbeddingProfile | None = None


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{value:.6g}") for value in values]


def numeric_profile(values: np.ndarray) -> NumericProfile:
    """The profile of float64 values (NaN is missing)."""
    present = values[~np.isnan(values)]
    missing_rate = float(1 - present.size / max(values.size, 1))
    if present.size == 0:
        return NumericProfile(count=int(values.size), missing_rate=missing_rate)
    counts, edges = np.histogram(present, bins=HISTOGRAM_BINS)
    return NumericProfile(
        count=int(values.size),
        missing_rate=missing_rate,
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        percentiles=_rounded(np.percentile(present, PERCENTILES)),
        histogram=Histogram(edges=_rounded(edges), counts=counts.tolist()),
    )


def categorical_profile(column: pd.Series, top: int = TOP_VALUES) -> CategoricalProfile:
    """The profile of a column of labels (compared by their text; missing values are one category)."""
    labels = column.map(lambda value: MISSING_CATEGORY if pd.isna(value) else label_text(value))
    counts = labels.value_counts()
    return CategoricalProfile(
        count=len(labels),
        distinct=int(counts.size),
        frequencies={str(value): int(count) for value, count in counts.iloc[:top].items()},
        other_count=int(counts.iloc[top:].sum()),
        missing_rate=float((labels == MISSING_CATEGORY).mean()),
    )


def text_profile(texts: pd.Series) -> TextProfile:
    """The profile of a column of strings."""
    words = texts.map(str.split)
    tokens = Counter(token.lower() for row in words for token in row)
    return TextProfile(
        count=len(texts),
        characters=numeric_profile(texts.str.len().to_numpy(dtype=np.float64)),
        words=numeric_profile(words.map(len).to_numpy(dtype=np.float64)),
        top_tokens=dict(tokens.most_common(TOP_VALUES)),
    )


def image_profile(images: np.ndarray | None) -> ImageProfile:
    """The profile of images (rows, channels, height, width)."""
    if images is None:
        return ImageProfile(count=0)
    per_channel = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    return ImageProfile(
        count=int(images.shape[0]),
        shape=list(images.shape[1:]),
        channel_mean=_rounded(per_channel.mean(axis=1)),
        channel_std=_rounded(per_channel.std(axis=1)),
        intensity=numeric_profile(images.mean(axis=(1, 2, 3), dtype=np.float64)),
    )


def text_lengths(texts: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's length in characters and in words (float64), what a text profile compares."""
    series = pd.Series([str(text) for text in texts], dtype=object)
    return (
        series.str.len().to_numpy(np.float64),
        series.map(lambda text: len(text.split())).to_numpy(np.float64),
    )
