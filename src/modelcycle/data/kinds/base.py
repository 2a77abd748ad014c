"""The input-kind extension point: everything a stage asks of a kind of input (tables, images, texts, corpora)
— its preprocessing, how a caller's instances decode, its reference profile and drift columns, and the shape
its attributions take — so no stage decides by the kind's name. A new kind is one module with a class that
fits ``InputKind`` and an ``INPUT_KINDS.register`` of one instance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from modelcycle.config import PreprocessConfig
from modelcycle.data.dataset import Dataset
from modelcycle.data.preprocess import Preprocessor
from modelcycle.data.reference import FeatureProfile
from modelcycle.plugins import PluginRegistry
from modelcycle.schema import InputSchema

Tensors = dict[str, np.ndarray]
# What attribution methods differentiate: the float input tensor itself, the token embeddings (ids cannot be
# interpolated), or a language model's prompt (explained token by token for the next token).
AttributedThrough = Literal["inputs", "embedding", "prompt"]
# How one row's attributions read: {feature: value}, rows × columns of pixels, or [[token, value], …].
AttributionForm = Literal["features", "pixels", "tokens"]


class InputKind(Protocol):
    """One kind of input. ``embedded``: drift is also measured on the model's embeddings of the rows (the
    reference keeps embedded training rows). ``state_kinds``: the ``kind`` names of preprocess.json this kind
    restores, each with its class."""

    name: str
    embedded: bool
    attributed_through: AttributedThrough
    attribution_form: AttributionForm
    state_kinds: Mapping[str, type[Preprocessor]]

    def preprocessor(self, config: PreprocessConfig) -> Preprocessor:
        """An unfitted preprocessor configured from the ``data.preprocess`` section."""
        ...

    def decode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Dataset:
        """A request's instances (a non-empty list) as a dataset of the model's features; RequestError names
        the instance and field that does not fit."""
        ...

    def encode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Tensors:
        """The instances as model-ready tensors: ``decode`` then the preprocessing, or a faster equal path."""
        ...

    def accepts(self, instance: Any, schema: InputSchema) -> bool:
        """Whether a stored request row is an instance in the caller's terms (not model-ready tensors)."""
        ...

    def instances(self, dataset: Dataset) -> list[Any]:
        """Rows of a dataset as a caller sends them (``decode``'s inverse), JSON-ready."""
        ...

    def profile(self, dataset: Dataset) -> dict[str, FeatureProfile]:
        """Each feature's reference profile (what ``reference.json`` keeps of the training split)."""
        ...

    def drift_columns(self, dataset: Dataset) -> dict[str, Sequence[Any]]:
        """Each feature's values as drift compares them with its profile (floats, strings, texts, images)."""
        ...

    def attribution_shape(
        self, preprocessor: Preprocessor, inputs: Tensors, row: int, values: np.ndarray
    ) -> Any:
        """One row's attributions (``values``, shaped as the row's first input) in the caller's terms."""
        ...

    def feature_groups(self, preprocessor: Preprocessor, shape: tuple[int, ...]) -> np.ndarray:
        """Which input positions occlusion, KernelSHAP and LIME switch together: int64 ids, ``shape`` without
        the batch (the ``attributed_through`` tensor's)."""
        ...


INPUT_KINDS: PluginRegistry[InputKind] = PluginRegistry("input kind")


def input_kind(name: str) -> InputKind:
    """The registered kind called ``name`` (ConfigError with the known kinds otherwise)."""
    return INPUT_KINDS.get(name, field="inputs.kind")


class Decoded:
    """``encode`` for kinds without a faster path: the decoded dataset through the preprocessing."""

    def decode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Dataset:
        raise NotImplementedError

    def encode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Tensors:
        dataset = self.decode(instances, schema, preprocessor, max_text_chars=max_text_chars)
        return preprocessor.transform(dataset)
