"""The registered input kinds (tabular, image, text, corpus): importing this package registers them all."""

from modelcycle.config import PreprocessConfig
from modelcycle.data.kinds import corpus, image, tabular, text
from modelcycle.data.kinds.base import INPUT_KINDS, InputKind, Tensors, input_kind
from modelcycle.data.preprocess import Preprocessor


def make_preprocessor(kind: str, config: PreprocessConfig) -> Preprocessor:
    """An unfitted preprocessor for a kind of data, configured from the ``data.preprocess`` section."""
    return input_kind(kind).preprocessor(config)


__all__ = [
    "INPUT_KINDS",
    "InputKind",
    "Tensors",
    "corpus",
    "image",
    "input_kind",
    "make_preprocessor",
    "tabular",
    "text",
]
