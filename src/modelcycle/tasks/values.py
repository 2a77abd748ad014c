"""How a table cell reads as a task's target: as a number (a regression target, a numeric feature) or as a
label's text (a class, one of several labels), with the row named when a value does not fit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modelcycle.errors import DataError


def to_numeric(column: pd.Series, name: str, origin: str) -> pd.Series:
    """The column as float64; the first value that is not a number is named with its row."""
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() & column.notna()
    if bad.any():
        position = int(bad.to_numpy().nonzero()[0][0])
        row = column.index[position]  # the row's position in the file, kept by the loaders
        row_number = row + 1 if isinstance(row, (int, np.integer)) else position + 1
        raise DataError(
            f"{origin}: column '{name}' is numeric but row {row_number} holds {column.iloc[position]!r}",
            hint=f"fix the value, or declare data.column_types.{name}=categorical",
        )
    return converted.astype("float64")


def class_names(values: pd.Series) -> list[str]:
    """The distinct labels as strings, in numeric order for numeric labels and text order otherwise."""
    unique = pd.unique(values.dropna())
    ordered = sorted(unique) if pd.api.types.is_numeric_dtype(values) else sorted(unique, key=str)
    # 1 and "1" in one column are one label: labels are compared by their text everywhere
    return list(dict.fromkeys(label_text(value) for value in ordered))


def label_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
