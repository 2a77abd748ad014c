"""Class-imbalance remedies, computed on the training split only: balanced class weights for the loss
(scikit-learn's n_samples / (n_classes · count)), or seeded random oversampling of minority classes."""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """One weight per class index; classes absent from ``labels`` get weight 1."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    full = np.ones(num_classes)
    full[present] = weights
    return full.tolist()


def oversample(indices: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """``indices`` plus random repeats of minority-class rows until every class matches the largest."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    extra = [
        rng.choice(indices[labels == label], size=counts.max() - count, replace=True)
        for label, count in zip(classes, counts, strict=True)
    ]
    return np.sort(np.concatenate([indices, *extra]))
