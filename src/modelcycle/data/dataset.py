"""The in-memory dataset every source produces and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from modelcycle.config import TaskName
from modelcycle.schema import DataKind, FeatureType
from modelcycle.tasks import TASKS, Task


@dataclass(frozen=True)
class Dataset:
    """Rows of one data source.

    ``frame`` holds the feature columns (tabular and text data) and the target column; for image data the
    pixels live in ``images`` with shape (rows, channels, height, width), float32 raw intensities. A corpus
    (language modelling) is one ``text`` column whose rows are consecutive lines of one document.
    """

    source: str
    kind: DataKind
    task: TaskName | None
    frame: pd.DataFrame
    target: str | None
    feature_types: dict[str, FeatureType]
    images: np.ndarray | None = None
    label_names: list[str] | None = field(default=None)
    dropped_rows: int = 0  # rows left out at load time because their target was missing

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def features(self) -> list[str]:
        return list(self.feature_types)

    @property
    def y(self) -> np.ndarray:
        if self.target is None:
            raise ValueError(f"{self.source}: this dataset has no target column")
        return self.frame[self.target].to_numpy()

    def take(self, indices: np.ndarray) -> Dataset:
        """The rows at ``indices`` (in that order), as a new dataset."""
        images = self.images[indices] if self.images is not None else None
        return replace(self, frame=self.frame.iloc[indices].reset_index(drop=True), images=images)


def task_of(dataset: Dataset) -> Task | None:
    """The task a dataset is for, asked about its target (None for a table without one)."""
    return None if dataset.task is None else TASKS.get(dataset.task, field="data.task")()
