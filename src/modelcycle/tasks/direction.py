"""Which way a metric improves, for every stage that compares two figures of one metric: the optimization
gate, the canary's rollback gate, checkpoint selection and early stopping, tuning's direction and permutation
importance. One rule, so a metric cannot read as better in one stage and worse in another."""

from __future__ import annotations

# A metric whose name holds one of these parts is better smaller (valid_log_loss, hamming_loss, rmse, ece,
# perplexity, …); every other metric (accuracy, F1, ROC-AUC, R², …) is better larger.
LOWER_IS_BETTER_PARTS = ("loss", "mse", "mae", "ece", "error", "perplexity")


def lower_is_better(metric: str) -> bool:
    """True when a smaller value of ``metric`` is better."""
    return any(part in metric for part in LOWER_IS_BETTER_PARTS)
