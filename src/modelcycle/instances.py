"""Instances in the caller's own terms — named features (tabular), strings (text), nested lists of pixels
(images) — checked against the bundle's schema and turned into a dataset and model-ready tensors through the
bundle's own preprocessing. Serving and explaining take the same payloads, so both use this."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.data import Dataset
from modelcycle.data.preprocess import TabularPreprocessor
from modelcycle.data.text import TextEncoder
from modelcycle.errors import ModelcycleError, RequestError
from modelcycle.predictor import Predictor
from modelcycle.schema import InputSchema

Tensors = dict[str, np.ndarray]
UNLIMITED = 10**9
FLOAT_MAX = int(np.finfo(np.float64).max)


def instance_tensors(
    instances: Any, predictor: Predictor, *, max_rows: int = UNLIMITED, max_text_chars: int = UNLIMITED
) -> Tensors:
    """``instances`` of a simple JSON request — named features (tabular), strings (text) or nested lists
    (images) — through the bundle's own preprocessing."""
    preprocessor = predictor.preprocessor
    try:
        if isinstance(preprocessor, TabularPreprocessor):  # serving's hot path: checked rows, no DataFrame
            _check_count(instances, max_rows)
            _check_tabular(instances, predictor.bundle.manifest.inputs)
            return preprocessor.transform_rows(instances)
        dataset = instances_dataset(instances, predictor, max_rows=max_rows, max_text_chars=max_text_chars)
        return preprocessor.transform(dataset)
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
    if schema.kind == "tabular":
        _check_tabular(instances, schema)
        dataset = _tabular(instances, schema)
    elif schema.kind == "text":
        dataset = _text(instances, schema, max_text_chars)
        _check_length(dataset, predictor)
    elif schema.kind == "image":
        dataset = _images(instances, schema)
    else:
        raise RequestError(
            f"{predictor.bundle.ref}: a {schema.kind} model takes no instances",
            hint="use /v1/completions for a language model",
        )
    return dataset


def _check_count(instances: Any, max_rows: int) -> None:
    if not isinstance(instances, list) or not instances:
        raise RequestError("instances: a non-empty list is required")
    if len(instances) > max_rows:
        raise RequestError(f"instances: at most {max_rows} per request")


def _check_tabular(instances: list[Any], schema: InputSchema) -> None:
    """Every instance an object with each feature, a number (or null) for numeric features and a string or
    integer (or null) for categorical ones."""
    names = [feature.name for feature in schema.features]
    types = {feature.name: feature.type for feature in schema.features}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RequestError(f"instances[{index}]: an object of named features is required")
        missing = [name for name in names if name not in instance]
        if missing:
            raise RequestError(f"instances[{index}].{missing[0]}: missing feature")
        extra = sorted(set(instance) - set(names))
        if extra:
            raise RequestError(f"instances[{index}].{extra[0]}: unknown feature")
        for name in names:
            value = instance[name]
            if types[name] == "numeric" and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise RequestError(f"instances[{index}].{name}: a number (or null) is required")
                if isinstance(value, int) and abs(value) > FLOAT_MAX:  # JSON integers have no bound
                    raise RequestError(f"instances[{index}].{name}: the number is beyond float range")
                if not math.isfinite(value):
                    raise RequestError(f"instances[{index}].{name}: NaN or Inf is not a valid value")
            elif types[name] == "categorical" and value is not None and not isinstance(value, (str, int)):
                raise RequestError(f"instances[{index}].{name}: a category (string or integer) is required")


def _tabular(instances: list[Any], schema: InputSchema) -> Dataset:
    names = [feature.name for feature in schema.features]
    types = {feature.name: feature.type for feature in schema.features}
    # each column typed as it is built: converting 30 columns after the fact cost ~3 ms a request
    columns = {
        name: (
            np.array([np.nan if row[name] is None else row[name] for row in instances], dtype=np.float64)
            if types[name] == "numeric"
            else pd.Series([row[name] for row in instances], dtype=object)
        )
        for name in names
    }
    frame = pd.DataFrame(columns, columns=names)
    return Dataset("request", "tabular", None, frame, None, dict(types))


def _text(instances: list[Any], schema: InputSchema, max_chars: int) -> Dataset:
    (feature,) = [feature.name for feature in schema.features if feature.type == "text"] or ["text"]
    texts = []
    for index, instance in enumerate(instances):
        text = instance.get(feature) if isinstance(instance, dict) else instance
        if not isinstance(text, str):
            raise RequestError(f"instances[{index}]: a string (or {{'{feature}': string}}) is required")
        if len(text) > max_chars:
            raise RequestError(f"instances[{index}]: {len(text)} characters, over the limit of {max_chars}")
        texts.append(text)
    return Dataset("request", "text", None, pd.DataFrame({feature: texts}), None, {feature: "text"})


def _check_length(dataset: Dataset, predictor: Predictor) -> None:
    """A text longer than the model reads is refused, not silently cut."""
    preprocessor = predictor.preprocessor
    if not isinstance(preprocessor, TextEncoder):
        return
    limit = preprocessor.max_length
    for index, text in enumerate(dataset.frame[dataset.features[0]]):
        count = preprocessor.token_count(text)
        if count > limit:
            raise RequestError(f"instances[{index}]: {count} tokens, the model reads at most {limit}")


def _images(instances: list[Any], schema: InputSchema) -> Dataset:
    shape = schema.tensors[0].shape[1:]  # (channels, height, width)
    images = []
    for index, instance in enumerate(instances):
        try:
            pixels = np.asarray(instance, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError(f"instances[{index}]: nested lists of numbers are required") from None
        if pixels.ndim == 2 and shape[0] == 1:
            pixels = pixels[None]
        if list(pixels.shape) != shape:
            raise RequestError(f"instances[{index}]: shape {list(pixels.shape)}, the model takes {shape}")
        if not np.isfinite(pixels).all():
            raise RequestError(f"instances[{index}]: NaN or Inf is not a valid pixel")
        images.append(pixels)
    frame = pd.DataFrame({"image": [f"request[{index}]" for index in range(len(images))]})
    return Dataset("request", "image", None, frame, None, {"image": "image"}, images=np.stack(images))
