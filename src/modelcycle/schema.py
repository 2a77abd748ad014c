"""Input and output schemas of a model, stored in its bundle: what a caller sends (raw features) and what
the network sees (tensors), with -1 for variable dimensions. Serving validates requests against these.

Shared by the data layer (which produces them), the models (which read them) and the bundle (which stores
them), so it lives on the lowest floor."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The name of a registered input kind (tabular, image, text, corpus, or a plugin's): the registry
# ``modelcycle.data.kinds.INPUT_KINDS``, floors up, is the one list; a lookup there names the known kinds.
DataKind = str
FeatureType = Literal["numeric", "categorical", "text", "image"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(Strict):
    """One tensor: ``shape`` uses -1 for a variable dimension (always the batch, sometimes the sequence)."""

    name: str
    dtype: str
    shape: list[int]


class FeatureSpec(Strict):
    """One raw input feature as a caller names it; ``categories`` lists the training vocabulary."""

    name: str
    type: FeatureType
    categories: list[str] | None = None


class InputSchema(Strict):
    """``vocab_size`` is set for token inputs: the size of the embedding a text model needs."""

    kind: DataKind
    features: list[FeatureSpec] = Field(default_factory=list)
    tensors: list[TensorSpec]
    vocab_size: int | None = None


class OutputSchema(Strict):
    """What the network returns; ``target`` names the column it predicts and ``labels`` its classes."""

    tensors: list[TensorSpec]
    target: str | None = None
    labels: list[str] | None = None
