"""Tasks by name: each module registers itself with ``TASKS`` on import."""

from modelcycle.tasks import classification, embedding, language_modeling, multilabel, regression
from modelcycle.tasks.base import TASKS, TargetCoding, Task
from modelcycle.tasks.direction import lower_is_better

__all__ = [
    "TASKS",
    "TargetCoding",
    "Task",
    "classification",
    "embedding",
    "language_modeling",
    "lower_is_better",
    "multilabel",
    "regression",
]
