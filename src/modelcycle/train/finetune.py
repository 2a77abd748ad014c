"""Fine-tuning a model that is already trained (pruned weights, the production version on new feedback): a few
more epochs with the bundle's own training settings, on the CPU or the configured device, then back on the
CPU. The model keeps its best epoch's weights when there is a validation function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from modelcycle.config import TrainConfig
from modelcycle.devices import pick_device
from modelcycle.seeding import seed_everything
from modelcycle.tasks import Task
from modelcycle.train.loop import FitResult, Hooks, TensorSet, Trainer


def finetune(
    model: nn.Module,
    task: Task,
    rows: TensorSet,
    settings: TrainConfig,
    *,
    epochs: int,
    seed: int,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``model`` in place for ``epochs`` more epochs on ``rows`` (no checkpoints: it is short)."""
    settings = settings.model_copy(update={"epochs": epochs, "checkpoint_every_steps": None})
    generator = seed_everything(seed)
    trainer = Trainer(
        model, task, settings, device=pick_device(settings.device), hooks=Hooks(validate=validate)
    )
    result = trainer.fit(rows, generator)
    model.to(torch.device("cpu"))
    return result
