"""The reference profile of the training split (``reference.json``, see ``data.reference``): each feature
profiled as its input kind says, and the target's class priors or percentiles."""

from __future__ import annotations

import numpy as np

from modelcycle.data.dataset import Dataset, task_of
from modelcycle.data.kinds import input_kind
from modelcycle.data.reference import TOP_VALUES, Reference, categorical_profile, numeric_profile


def profile_dataset(dataset: Dataset) -> Reference:
    """The dataset's reference profile (without the model's embeddings, which the publisher adds)."""
    profile = Reference(
        rows=len(dataset), kind=dataset.kind, features=input_kind(dataset.kind).profile(dataset)
    )
    task = task_of(dataset)
    if dataset.target is not None and task is not None:
        target = dataset.frame[dataset.target]
        labels = task.label_occurrences(target)  # None: the target is a number
        profile.target = (
            numeric_profile(target.to_numpy(dtype=np.float64))
            if labels is None
            else categorical_profile(labels, top=len(dataset.label_names or []) or TOP_VALUES)
        )
    return profile
