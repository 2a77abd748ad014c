"""The training loop: seeded shuffling, mini-batches, validation each epoch, and the best epoch's weights
kept (by the task's primary metric)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from modelcycle.config import TrainConfig
from modelcycle.errors import TrainingError
from modelcycle.models.inference import to_tensors
from modelcycle.tasks import Task
from modelcycle.train.optimizers import OPTIMIZERS

logger = logging.getLogger(__name__)
EpochCallback = Callable[[int, dict[str, float]], None]
Validation = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TensorSet:
    """Model inputs by tensor name (in the model's argument order) and the encoded targets, row-aligned."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_second: float = 0.0


def fit(
    model: nn.Module,
    task: Task,
    train: TensorSet,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    validate: Validation | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` in place; afterwards it holds the weights of the best epoch by ``validate``'s metrics
    (in the task's own units, e.g. a regression target's), or by training loss when there is none."""
    model.to(device)
    optimizer = OPTIMIZERS.get(config.optimizer.name, field="train.optimizer.name")(
        model.parameters(), config.optimizer
    )
    targets = torch.from_numpy(train.targets)
    best_key: tuple[float, ...] = (-math.inf,)
    best_epoch, best_state = 0, None
    history, seen, busy_seconds = [], 0, 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        started, total_loss = time.perf_counter(), 0.0
        order = torch.randperm(len(train), generator=generator).numpy()
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            outputs = model(*to_tensors(train.inputs, rows, device))
            loss = task.loss(outputs, targets[rows].to(device))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"epoch {epoch}: the loss became {loss.item()}",
                    hint="lower train.optimizer.lr or check the data for extreme values",
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(rows)
        busy_seconds += time.perf_counter() - started
        seen += len(order)
        record = {"epoch": float(epoch), "train_loss": total_loss / len(order)}
        if validate is not None:
            scores = validate(model)
            record.update({f"valid_{key}": value for key, value in scores.items()})
            key = task.selection_key(scores)
        else:
            key = (-record["train_loss"],)
        if key > best_key:
            best_key, best_epoch, best_state = key, epoch, copy.deepcopy(model.state_dict())
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, history, seen / busy_seconds if busy_seconds else 0.0)
