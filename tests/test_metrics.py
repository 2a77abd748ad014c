"""Task metrics against scikit-learn computed independently on the same arrays (to 1e-6), and the
calibration error against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelcycle.tasks.calibration import expected_calibration_error
from modelcycle.tasks.classification import Classification, softmax
from modelcycle.tasks.regression import Regression


@pytest.mark.parametrize("classes", [2, 4])
def test_classification_metrics_equal_scikit_learn(classes: int) -> None:
    rng = np.random.default_rng(classes)
    targets = rng.integers(0, classes, size=300)
    logits = rng.normal(size=(300, classes)) + np.eye(classes)[targets] * 1.5
    ours = Classification().metrics(targets, logits)
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=1)
    expected = {
        "accuracy": skm.accuracy_score(targets, predicted),
        "precision_macro": skm.precision_score(targets, predicted, average="macro"),
        "recall_macro": skm.recall_score(targets, predicted, average="macro"),
        "f1_macro": skm.f1_score(targets, predicted, average="macro"),
        "precision_weighted": skm.precision_score(targets, predicted, average="weighted"),
        "recall_weighted": skm.recall_score(targets, predicted, average="weighted"),
        "f1_weighted": skm.f1_score(targets, predicted, average="weighted"),
        "roc_auc": (
            skm.roc_auc_score(targets, probabilities[:, 1])
            if classes == 2
            else skm.roc_auc_score(targets, probabilities, multi_class="ovr")
        ),
        "log_loss": skm.log_loss(targets, probabilities),
    }
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    matrix = Classification().confusion_matrix(targets, logits)
    assert matrix == skm.confusion_matrix(targets, predicted).tolist()


def test_roc_auc_is_left_out_when_a_class_is_absent() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 1.0, 0.0]])
    values = Classification().metrics(np.array([0, 1, 0]), logits)
    assert "roc_auc" not in values
    assert values["accuracy"] == 1.0


def test_expected_calibration_error_by_hand() -> None:
    # two bins used (of 2): confidences 0.3, 0.4 (bin 1, one right) and 0.9, 0.8 (bin 2, both right)
    probabilities = np.array([[0.3, 0.7], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    targets = np.array([1, 1, 0, 1])
    # top-label confidences: 0.7, 0.6, 0.9, 0.8 → all in (0.5, 1]; accuracy 3/4, mean confidence 0.75
    assert expected_calibration_error(probabilities, targets, bins=2) == pytest.approx(abs(0.75 - 0.75))
    # with 10 bins: (0.5,0.6]: conf .6 wrong → .6; (0.6,0.7]: .7 right → .3; (0.8,0.9]: .9 right → .1;
    # (0.7,0.8]: .8 right → .2; each bin holds 1/4 of the rows
    assert expected_calibration_error(probabilities, targets, bins=10) == pytest.approx(
        (0.6 + 0.3 + 0.1 + 0.2) / 4
    )


def test_regression_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    targets = rng.normal(50, 10, size=200)
    outputs = (targets + rng.normal(0, 3, size=200))[:, None]
    ours = Regression().metrics(targets, outputs)
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(targets, outputs[:, 0]), abs=1e-6)
    assert ours["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(targets, outputs[:, 0])), abs=1e-6)
    assert ours["r2"] == pytest.approx(skm.r2_score(targets, outputs[:, 0]), abs=1e-6)
