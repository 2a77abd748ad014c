"""The only place that knows the order of the stages: validate a config, then load → split → fit
preprocessing → train → evaluate → profile → bundle → register."""

from modelcycle.pipeline.prepare import PreparedData, Teacher, prepare_data
from modelcycle.pipeline.resolve import ResolvedPipeline, validate
from modelcycle.pipeline.training import TrainResult, fit_model, train

__all__ = [
    "PreparedData",
    "ResolvedPipeline",
    "Teacher",
    "TrainResult",
    "fit_model",
    "prepare_data",
    "train",
    "validate",
]
