"""Optimizers by name, built from the ``train.optimizer`` section."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from modelcycle.config import OptimizerConfig
from modelcycle.plugins import PluginRegistry

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], OptimizerConfig], torch.optim.Optimizer]
OPTIMIZERS: PluginRegistry[OptimizerFactory] = PluginRegistry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameters,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


@OPTIMIZERS.register("adam")
def adam(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
