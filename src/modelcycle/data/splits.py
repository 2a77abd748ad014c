"""Deterministic train / valid / test splits: stratified by the strata the task gives (the class, for
classification), contiguous (no shuffling, so no leakage between neighbouring lines) for a corpus."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from modelcycle.config import SplitConfig
from modelcycle.data.dataset import Dataset, task_of
from modelcycle.errors import DataError


@dataclass(frozen=True)
class Split:
    """Row indices of each part, disjoint and together covering every row."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def split_dataset(dataset: Dataset, config: SplitConfig, seed: int) -> Split:
    rows = np.arange(len(dataset))
    task = task_of(dataset)
    if task is not None and task.ordered_rows:
        valid_start = round(len(rows) * (1 - config.valid - config.test))
        test_start = round(len(rows) * (1 - config.test))
        return Split(rows[:valid_start], rows[valid_start:test_start], rows[test_start:])
    labels = None
    if task is not None and dataset.target is not None and config.stratify:
        labels = task.strata(dataset.frame[dataset.target])
    held_out = config.valid + config.test
    if held_out == 0:
        return Split(rows, rows[:0], rows[:0])
    try:
        train, rest = train_test_split(rows, test_size=held_out, random_state=seed, stratify=labels)
        if config.test == 0 or config.valid == 0:
            empty = rest[:0]
            return Split(
                np.sort(train), *((np.sort(rest), empty) if config.test == 0 else (empty, np.sort(rest)))
            )
        rest_labels = labels[rest] if labels is not None else None
        valid, test = train_test_split(
            rest, test_size=config.test / held_out, random_state=seed, stratify=rest_labels
        )
    except ValueError as error:
        raise DataError(
            f"{dataset.source}: cannot split {len(rows)} rows into train / valid / test ({error})",
            hint="use more rows, smaller data.split fractions, or data.split.stratify: false",
        ) from None
    return Split(np.sort(train), np.sort(valid), np.sort(test))
