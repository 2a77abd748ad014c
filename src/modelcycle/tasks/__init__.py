"""Tasks by name: each module registers itself with ``TASKS`` on import."""

from modelcycle.tasks import classification, regression
from modelcycle.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task", "classification", "regression"]
