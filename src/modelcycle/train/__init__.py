"""Training: the loop and optimizers by name."""

from modelcycle.models.inference import predict
from modelcycle.train.loop import FitResult, TensorSet, fit
from modelcycle.train.optimizers import OPTIMIZERS

__all__ = ["OPTIMIZERS", "FitResult", "TensorSet", "fit", "predict"]
