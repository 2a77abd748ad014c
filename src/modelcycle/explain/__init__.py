"""Explanations: per-input attributions for every kind of model (Captum), global permutation importance,
and pictures of both."""

from modelcycle.explain.attribution import METHODS, Explanation, explain, explain_tensors
from modelcycle.explain.importance import Importance, permutation_importance

__all__ = ["METHODS", "Explanation", "Importance", "explain", "explain_tensors", "permutation_importance"]
