"""Turning request bodies into model-ready tensors, checked against the bundle's schema so that a bad request
is a 400 naming the field — never a 500 from deep inside the network."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from modelcycle.errors import RequestError
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


def json_body(raw: bytes) -> Any:
    """A body parsed as JSON, or a ``RequestError`` that says why not (not UTF-8, not JSON, or nested deeper
    than the parser's recursion allows: a 6 KB body of brackets is enough)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise RequestError("body: JSON nested too deeply") from None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError among them
        raise RequestError(f"body: not JSON ({error})") from None


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
        if item["name"] in given:  # which one would count is anybody's guess: refused
            raise RequestError(f"inputs[{position}]: tensor '{item['name']}' is given twice")
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
