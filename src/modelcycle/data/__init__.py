"""The data layer: sources, typing, splits, preprocessing, imbalance, fingerprint and reference profile."""

from modelcycle.data.dataset import Dataset
from modelcycle.data.fingerprint import fingerprint
from modelcycle.data.inspect import DataSummary, summarize
from modelcycle.data.kinds import make_preprocessor
from modelcycle.data.preprocess import Preprocessor, TargetEncoder, target_encoder_from_state
from modelcycle.data.profile import profile_dataset
from modelcycle.data.sources import load_dataset
from modelcycle.data.splits import Split, split_dataset
from modelcycle.data.state import preprocessor_from_state

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
