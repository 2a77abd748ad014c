"""The data layer: sources, typing, splits, preprocessing, imbalance, fingerprint and reference profile."""

from modelcycle.data.dataset import Dataset
from modelcycle.data.fingerprint import fingerprint
from modelcycle.data.inspect import DataSummary, summarize
from modelcycle.data.preprocess import (
    Preprocessor,
    TargetEncoder,
    make_preprocessor,
    preprocessor_from_state,
    target_encoder_from_state,
)
from modelcycle.data.profile import profile_dataset
from modelcycle.data.sources import load_dataset
from modelcycle.data.splits import Split, split_dataset

__all__ = [
    "DataSummary",
    "Dataset",
    "Preprocessor",
    "Split",
    "TargetEncoder",
    "fingerprint",
    "load_dataset",
    "make_preprocessor",
    "preprocessor_from_state",
    "profile_dataset",
    "split_dataset",
    "summarize",
    "target_encoder_from_state",
]
