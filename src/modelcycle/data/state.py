"""``preprocess.json``: the fitted preprocessing of the features and the target's encoding, as typed models,
and the preprocessor rebuilt from its saved state by the input kind that owns it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from modelcycle.contracts import Contract
from modelcycle.data.kinds import INPUT_KINDS, input_kind
from modelcycle.data.preprocess import Preprocessor
from modelcycle.data.text import TokenizerFiles
from modelcycle.errors import BundleError

PREPROCESS_FILE = "preprocess.json"


class PreprocessorState(Contract):
    """A fitted preprocessor: its class (``kind``), constructor arguments and learned attributes."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    learned: dict[str, Any] = Field(default_factory=dict)


class TargetState(Contract):
    """The target encoding: class names for classification, mean and std for regression. A task's encoder
    may save more learned fields of its own, which are kept as they are."""

    model_config = ConfigDict(extra="allow")

    task: str
    classes_: list[str] = Field(default_factory=list)
    mean_: float = 0.0
    std_: float = 1.0


class PreprocessFile(Contract):
    features: PreprocessorState
    target: TargetState


def preprocessor_class(state_kind: str) -> type[Preprocessor]:
    """The class a saved state names, from the input kind that registered it."""
    for name in INPUT_KINDS:
        classes = input_kind(name).state_kinds
        if state_kind in classes:
            return classes[state_kind]
    known = sorted(key for name in INPUT_KINDS for key in input_kind(name).state_kinds)
    raise BundleError(
        f"{PREPROCESS_FILE}: features.kind: unknown preprocessing '{state_kind}'",
        hint=f"known: {', '.join(known)}",
    )


def preprocessor_from_state(
    state: PreprocessorState | Mapping[str, Any], base_dir: Path | None = None
) -> Preprocessor:
    """Rebuild a fitted preprocessor from its ``state()`` (as read from a bundle's preprocess.json);
    ``base_dir`` is the bundle, against which files the state names (a tokenizer) are resolved."""
    if not isinstance(state, PreprocessorState):
        state = PreprocessorState.read(state, f"{PREPROCESS_FILE}: features")
    try:
        instance = preprocessor_class(state.kind)(**state.params)
    except TypeError as error:
        raise BundleError(f"{PREPROCESS_FILE}: unreadable preprocessing state ({error})") from None
    for key, value in state.learned.items():
        setattr(instance, key, value)
    if isinstance(instance, TokenizerFiles):
        instance.load_from(base_dir)
    return instance
