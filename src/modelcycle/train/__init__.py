"""Training: the loop and optimizers by name."""

from modelcycle.train.loop import FitResult, TensorSet, fit, predict
from modelcycle.train.optimizers import OPTIMIZERS

__all__ = ["OPTIMIZERS", "FitResult", "TensorSet", "fit", "predict"]
