"""Evaluation: a registered bundle's metrics on any data, or on the test split it was trained with."""

from modelcycle.evaluate.report import EvaluationReport, evaluate, training_test_split

__all__ = ["EvaluationReport", "evaluate", "training_test_split"]
