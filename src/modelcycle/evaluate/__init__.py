"""Evaluation: a registered bundle's metrics on any data, or on the test split it was trained with."""

from modelcycle.evaluate.report import EvaluationReport, evaluate

__all__ = ["EvaluationReport", "evaluate"]
