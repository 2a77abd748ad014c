"""Learning-rate schedules stepped once per optimizer step: constant, step, cosine or one-cycle, with an
optional linear warm-up in front (of all but one-cycle, which has its own)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from modelcycle.config import ScheduleConfig
from modelcycle.errors import ConfigError


def build_scheduler(
    optimizer: Optimizer, config: ScheduleConfig, *, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    total = max(1, steps_per_epoch * epochs)
    if config.name == "one_cycle":
        if config.warmup_steps:
            raise ConfigError("train.schedule.warmup_steps: one_cycle has its own warm-up; leave it at 0")
        first = optimizer.param_groups[0]
        # cycling momentum means something only for an optimizer that has it (SGD with momentum, Adam's beta1)
        cycles_momentum = "betas" in first or first.get("momentum", 0.0) > 0
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            cycle_momentum=cycles_momentum,
        )
    base_lr = optimizer.param_groups[0]["lr"]
    floor = config.min_lr / base_lr
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        """Multiplier of the base learning rate after ``step`` optimizer steps."""
        if step < warmup:
            return (step + 1) / warmup
        if config.name == "step":
            return float(config.gamma ** (step // (config.step_epochs * steps_per_epoch)))
        if config.name == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    # A closure is not saved in the scheduler's state_dict (only last_epoch is): resume rebuilds it from the
    # config, which the checkpoint's config hash guarantees is the same.
    return LambdaLR(optimizer, factor)
