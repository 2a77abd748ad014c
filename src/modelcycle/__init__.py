"""modelcycle: one toolkit for a neural model's whole life.

The stage verbs are imported lazily, so ``import modelcycle`` (and a CLI command that only reads the registry)
does not pay for torch until a verb is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PipelineConfig": "modelcycle.config",
    "load_config": "modelcycle.config",
    "Bundle": "modelcycle.bundle",
    "Registry": "modelcycle.registry",
    "load_dataset": "modelcycle.data",
    "train": "modelcycle.pipeline",
    "validate": "modelcycle.pipeline",
    "TrainResult": "modelcycle.pipeline",
    "ModelcycleError": "modelcycle.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelcycle' has no attribute '{name}'")
