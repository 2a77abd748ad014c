"""Column typing for tables: numeric, categorical or free text, inferred or declared, with clear errors for
values that do not fit (e.g. text in a numeric column)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from modelcycle.errors import DataError
from modelcycle.schema import FeatureType
from modelcycle.tasks.values import to_numeric

# An object column whose values average this many words and are mostly distinct is free text, not a category.
_TEXT_MIN_MEAN_WORDS = 4.0
_TEXT_MIN_DISTINCT_RATIO = 0.5


def infer_feature_types(
    frame: pd.DataFrame, features: list[str], declared: Mapping[str, FeatureType], origin: str
) -> dict[str, FeatureType]:
    """The type of each feature; declared types win, and numeric ones are checked value by value."""
    types: dict[str, FeatureType] = {}
    for name in features:
        column = frame[name]
        kind = declared.get(name) or _infer(column, name, origin)
        if kind == "numeric":
            frame[name] = to_numeric(column, name, origin)
        types[name] = kind
    return types


def _infer(column: pd.Series, name: str, origin: str) -> FeatureType:
    if pd.api.types.is_bool_dtype(column):
        return "categorical"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    present = column.dropna()
    if present.empty:
        raise DataError(f"{origin}: column '{name}' has no values", hint="drop it with data.features")
    as_numbers = pd.to_numeric(present, errors="coerce")
    if as_numbers.notna().mean() >= 0.5:
        return "numeric"  # mostly numbers: to_numeric names the first value that is not one
    text = present.astype(str)
    mean_words = text.map(lambda value: len(value.split())).mean()
    if mean_words >= _TEXT_MIN_MEAN_WORDS and text.nunique() / len(text) >= _TEXT_MIN_DISTINCT_RATIO:
        return "text"
    return "categorical"
