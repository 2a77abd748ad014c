"""Tasks by name: each module registers itself with ``TASKS`` on import."""

from modelcycle.tasks import classification, embedding, language_modeling, regression
from modelcycle.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task", "classification", "embedding", "language_modeling", "regression"]
