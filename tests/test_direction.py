"""One rule for which way a metric improves, shared by the optimization and canary gates, checkpoint
selection, tuning and permutation importance."""

from __future__ import annotations

import pytest

from modelcycle.optimize.gate import Gate
from modelcycle.tasks import lower_is_better


@pytest.mark.parametrize(
    "metric",
    ["loss", "valid_log_loss", "hamming_loss", "rmse", "mae", "mse", "ece", "perplexity", "valid_error"],
)
def test_smaller_is_better_for_losses_and_errors(metric: str) -> None:
    assert lower_is_better(metric)


@pytest.mark.parametrize(
    "metric",
    [
        "accuracy",
        "f1_micro",
        "f1_macro",
        "subset_accuracy",
        "roc_auc",
        "r2",
        "precision_micro",
        "recall_macro",
    ],
)
def test_larger_is_better_for_scores(metric: str) -> None:
    assert not lower_is_better(metric)


def test_the_gate_reads_a_rising_hamming_loss_as_worse() -> None:
    worse = Gate(max_drop=0.01).judge("hamming_loss", 0.10, 0.20)
    assert worse.drop == pytest.approx(0.10)
    assert not worse.passed
    better = Gate(max_drop=0.01).judge("hamming_loss", 0.20, 0.10)
    assert better.passed
