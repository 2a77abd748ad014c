"""Instances in the caller's own terms — named features (tabular), strings (text), nested lists of pixels
(images) — checked against the bundle's schema and turned into a dataset and model-ready tensors through the
bundle's own preprocessing, as the bundle's input kind decodes them. Serving and explaining take the same
payloads, so both use this."""

from __future__ import annotations

from typing import Any

from modelcycle.data import Dataset
from modelcycle.data.kinds import Tensors, input_kind
from modelcycle.errors import ModelcycleError, RequestError
from modelcycle.predictor import Predictor

UNLIMITED = 10**9


def instance_tensors(
    instances: Any, predictor: Predictor, *, max_rows: int = UNLIMITED, max_text_chars: int = UNLIMITED
) -> Tensors:
    """``instances`` of a simple JSON request — named features (tabular), strings (text) or nested lists
    (images) — through the bundle's own preprocessing."""
    _check_count(instances, max_rows)
    schema = predictor.bundle.manifest.inputs
    try:
        return input_kind(schema.kind).encode(
            instances, schema, predictor.preprocessor, max_text_chars=max_text_chars
        )
    except RequestError:
        raise
    except ModelcycleError as error:
        raise RequestError(f"instances: {error.message}") from None


def instances_dataset(
    instances: Any, predictor: Predictor, *, max_rows: int = UNLIMITED, max_text_chars: int = UNLIMITED
) -> Dataset:
    """The instances as a dataset of the bundle's features (each checked: RequestError names the field)."""
    _check_count(instances, max_rows)
    schema = predictor.bundle.manifest.inputs
    return input_kind(schema.kind).decode(
        instances, schema, predictor.preprocessor, max_text_chars=max_text_chars
    )


def _check_count(instances: Any, max_rows: int) -> None:
    if not isinstance(instances, list) or not instances:
        raise RequestError("instances: a non-empty list is required")
    if len(instances) > max_rows:
        raise RequestError(f"instances: at most {max_rows} per request")
