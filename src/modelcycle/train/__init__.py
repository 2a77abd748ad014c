"""Training: the loop, optimizers and schedules by name, checkpoints for exact resume, data parallelism."""

from modelcycle.inference import predict
from modelcycle.train.loop import FitResult, Hooks, TensorSet, Trainer
from modelcycle.train.optimizers import OPTIMIZERS

__all__ = ["OPTIMIZERS", "FitResult", "Hooks", "TensorSet", "Trainer", "predict"]
