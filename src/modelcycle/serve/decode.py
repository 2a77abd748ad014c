"""Turning request bodies into model-ready tensors, checked against the bundle's schema so that a bad request
is a 400 naming the field — never a 500 from deep inside the network."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.data import Dataset
from modelcycle.data.text import TextEncoder
from modelcycle.errors import ModelcycleError, RequestError
from modelcycle.predictor import Predictor
from modelcycle.schema import InputSchema, TensorSpec

Tensors = dict[str, np.ndarray]
# Open Inference Protocol datatypes by numpy dtype name.
V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
NUMPY_DTYPES = {value: key for key, value in V2_DATATYPES.items()}


def v2_datatype(dtype: str) -> str:
    return V2_DATATYPES.get(dtype, dtype.upper())


def v2_tensors(inputs: Any, schema: InputSchema, *, max_rows: int) -> Tensors:
    """``inputs`` of an Open Inference Protocol request as arrays in the model's argument order."""
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: a non-empty list of tensors is required")
    given: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(f"inputs[{position}]: a tensor needs a name, shape, datatype and data")
        given[item["name"]] = item
    expected = {spec.name: spec for spec in schema.tensors}
    extra = sorted(set(given) - set(expected))
    if extra:
        raise RequestError(f"inputs: unknown tensor '{extra[0]}' (the model takes {', '.join(expected)})")
    missing = [name for name in expected if name not in given]
    if missing:
        raise RequestError(f"inputs: tensor '{missing[0]}' is missing")
    arrays = {name: _v2_array(given[name], spec) for name, spec in expected.items()}
    rows = {array.shape[0] for array in arrays.values()}
    if len(rows) != 1:
        raise RequestError(f"inputs: the tensors disagree on the batch size ({sorted(rows)})")
    if rows.pop() > max_rows:
        raise RequestError(f"inputs: at most {max_rows} rows per request")
    return arrays


def _v2_array(item: dict[str, Any], spec: TensorSpec) -> np.ndarray:
    field = f"inputs[{spec.name}]"
    shape, datatype = item.get("shape"), item.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise RequestError(f"{field}.shape: a list of non-negative integers is required")
    if datatype != v2_datatype(spec.dtype):
        raise RequestError(f"{field}.datatype: expected {v2_datatype(spec.dtype)}, got {datatype!r}")
    if len(shape) != len(spec.shape) or any(
        want != -1 and want != got for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise RequestError(f"{field}.shape: {shape} does not fit the model's {spec.shape} (-1: any size)")
    if shape[0] == 0:
        raise RequestError(f"{field}.shape: the batch is empty")
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    binary = item.get("binary")
    if isinstance(binary, bytes):
        if len(binary) % dtype.itemsize:
            raise RequestError(f"{field}: {len(binary)} bytes of binary data are not whole {datatype} values")
        array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"))
    else:
        if item.get("data") is None:
            raise RequestError(f"{field}.data: missing (and no binary data)")
        try:
            array = np.asarray(item.get("data"), dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise RequestError(f"{field}.data: values are not all {datatype}") from None
    if array.size != math.prod(shape):
        raise RequestError(f"{field}.data: {array.size} values for shape {shape} ({math.prod(shape)} needed)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"{field}.data: NaN or Inf is not a valid input")
    return np.ascontiguousarray(array.reshape(shape), dtype=dtype)


def instance_tensors(instances: Any, predictor: Predictor, *, max_rows: int, max_text_chars: int) -> Tensors:
    """``instances`` of a simple JSON request — named features (tabular), strings (text) or nested lists
    (images) — through the bundle's own preprocessing."""
    if not isinstance(instances, list) or not instances:
        raise RequestError("instances: a non-empty list is required")
    if len(instances) > max_rows:
        raise RequestError(f"instances: at most {max_rows} per request")
    schema = predictor.bundle.manifest.inputs
    if schema.kind == "tabular":
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
    try:
        return predictor.preprocessor.transform(dataset)
    except RequestError:
        raise
    except ModelcycleError as error:
        raise RequestError(f"instances: {error.message}") from None


def _tabular(instances: list[Any], schema: InputSchema) -> Dataset:
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
                if not math.isfinite(value):
                    raise RequestError(f"instances[{index}].{name}: NaN or Inf is not a valid value")
            elif types[name] == "categorical" and value is not None and not isinstance(value, (str, int)):
                raise RequestError(f"instances[{index}].{name}: a category (string or integer) is required")
    frame = pd.DataFrame([{name: instance[name] for name in names} for instance in instances], columns=names)
    for name in names:
        if types[name] == "numeric":
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
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
