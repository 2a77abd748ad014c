"""Expected calibration error (Guo et al., 2017, "On Calibration of Modern Neural Networks", eq. 3):
the gap between confidence and accuracy, averaged over equal-width confidence bins weighted by their size."""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15  # the paper's choice


def expected_calibration_error(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """ECE of the top-label confidence. ``probabilities`` (N, K) rows sum to 1; ``targets`` (N,) class ids.
    Bins are (lower, upper], the first one also holding confidence 0."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)
