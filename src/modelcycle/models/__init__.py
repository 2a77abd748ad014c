"""Architectures by name: each module registers itself with ``ARCHITECTURES`` on import."""

from modelcycle.models import causal_lm, cnn, gpt, hf, mlp, rnn, transformer
from modelcycle.models.base import ARCHITECTURES, ArchitectureEntry, Params

__all__ = [
    "ARCHITECTURES",
    "ArchitectureEntry",
    "Params",
    "causal_lm",
    "cnn",
    "gpt",
    "hf",
    "mlp",
    "rnn",
    "transformer",
]
