"""A quick look at a data source: rows, columns with types and missing counts, target balance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelcycle.data.dataset import Dataset, task_of
from modelcycle.tasks.values import label_text

# Largest / smallest class count at or under which the classes are called balanced.
BALANCED_RATIO = 1.5


@dataclass(frozen=True)
class ColumnSummary:
    name: str
    type: str
    dtype: str
    missing: int
    distinct: int


@dataclass(frozen=True)
class DataSummary:
    source: str
    kind: str
    task: str | None
    rows: int
    columns: list[ColumnSummary]
    target: str | None
    dropped_rows: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    imbalance_ratio: float | None = None
    balanced: bool | None = None
    target_stats: dict[str, float] = field(default_factory=dict)


def summarize(dataset: Dataset) -> DataSummary:
    columns = []
    for name, kind in dataset.feature_types.items():
        if kind == "image" and dataset.images is not None:
            shape = "×".join(str(size) for size in dataset.images.shape[1:])
            columns.append(ColumnSummary(name, "image", f"float32[{shape}]", 0, 0))
            continue
        column = dataset.frame[name]
        columns.append(
            ColumnSummary(name, kind, str(column.dtype), int(column.isna().sum()), int(column.nunique()))
        )
    extra: dict[str, Any] = {}
    task = task_of(dataset)
    if dataset.target is not None and task is not None:
        target = dataset.frame[dataset.target]
        columns.append(
            ColumnSummary(
                dataset.target, "target", str(target.dtype), int(target.isna().sum()), int(target.nunique())
            )
        )
        labels = task.label_occurrences(target)  # None: the target is a number
        if labels is not None:
            counts = labels.map(label_text).value_counts()
            order = dataset.label_names or sorted(counts.index)
            class_counts = {label: int(counts.get(label, 0)) for label in order}
            ratio = max(class_counts.values()) / max(min(class_counts.values()), 1)
            extra = {
                "class_counts": class_counts,
                "imbalance_ratio": round(ratio, 4),
                "balanced": ratio <= BALANCED_RATIO,
            }
        else:
            values = target.to_numpy(dtype=np.float64)
            extra = {
                "target_stats": {
                    "mean": float(values.mean()),
                    "std": float(values.std()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                }
            }
    return DataSummary(
        dataset.source,
        dataset.kind,
        dataset.task,
        len(dataset),
        columns,
        dataset.target,
        dataset.dropped_rows,
        **extra,
    )
