"""Which epoch is best and when to stop: by the early-stopping metric when one is configured, otherwise by
the task's own ranking of validation metrics (or the training loss when there is no validation split)."""

from __future__ import annotations

from modelcycle.config import EarlyStoppingConfig
from modelcycle.errors import ConfigError
from modelcycle.tasks import Task, lower_is_better

VALID_PREFIX = "valid_"


class Selection:
    def __init__(self, task: Task, early_stopping: EarlyStoppingConfig | None) -> None:
        self.task = task
        self.early_stopping = early_stopping
        if early_stopping is not None:
            minimise = early_stopping.mode == "min" or (
                early_stopping.mode == "auto" and lower_is_better(early_stopping.metric)
            )
            self.sign = -1.0 if minimise else 1.0

    def key(self, record: dict[str, float]) -> tuple[float, ...]:
        """Larger is better."""
        if self.early_stopping is not None:
            metric = self.early_stopping.metric
            if metric not in record:
                raise ConfigError(
                    f"train.early_stopping.metric: '{metric}' is not measured",
                    hint=f"measured: {', '.join(sorted(record))}",
                )
            return (self.sign * record[metric],)
        valid = {k.removeprefix(VALID_PREFIX): v for k, v in record.items() if k.startswith(VALID_PREFIX)}
        return self.task.selection_key(valid) if valid else (-record["train_loss"],)

    def improved_enough(self, key: tuple[float, ...], best: list[float]) -> bool:
        """An improvement that resets the early-stopping patience (by at least ``min_delta``)."""
        delta = self.early_stopping.min_delta if self.early_stopping is not None else 0.0
        return key[0] > best[0] + delta

    @property
    def patience(self) -> int | None:
        return self.early_stopping.patience if self.early_stopping is not None else None
