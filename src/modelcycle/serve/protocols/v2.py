"""The Open Inference Protocol v2 (KServe / Triton REST), unchanged so existing clients work: server and model
metadata, liveness and readiness, and ``infer`` on model-ready tensors as the bundle's schema names them."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelcycle import __version__
from modelcycle.errors import NotFoundError, RequestError
from modelcycle.serve.batcher import Tensors
from modelcycle.serve.decode import json_body, v2_datatype, v2_tensors
from modelcycle.serve.rendering import ProtocolRoute, error_response, rendered
from modelcycle.serve.request_path import answer, new_request_id, time_left
from modelcycle.serve.served import ServedModel
from modelcycle.serve.state import ServerState, serving_state
from modelcycle.serve.versions import LoadedVersion

# The protocol's errors are {"error": "..."} with the status (KServe's and Triton's shape): ProtocolRoute's.
router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], route_class=ProtocolRoute)


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None  # absent when the tensor travels as binary data
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


# The body is read by hand (JSON, or JSON + binary tensors); the schema is still published in OpenAPI.
# The infer routes come first: routes are matched in order, and inference is the hot path.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
    }
}


@router.post("/models/{name}/infer", openapi_extra=INFER_BODY)
async def infer(name: str, request: Request) -> JSONResponse:
    return await _infer(serving_state(request), name, request, None)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY)
async def infer_version(name: str, version: str, request: Request) -> JSONResponse:
    return await _infer(serving_state(request), name, request, version)


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "modelcycle", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", response_model=None)
def ready(request: Request) -> dict[str, Any] | JSONResponse:
    state = serving_state(request)
    if state.ready:
        return {"ready": True}
    return error_response(ProtocolRoute.error_body, state.load_error or "loading models", 503)


def _version(served: ServedModel, version: str | None) -> LoadedVersion:
    if version is None:
        return served.gateway.primary
    if not (version.isascii() and version.isdigit()):
        raise NotFoundError(f"model '{served.name}' has no version '{version}'")
    return served.gateway.route(int(version))


def _metadata(served: ServedModel, loaded: LoadedVersion) -> dict[str, Any]:
    manifest = loaded.bundle.manifest
    return {
        "name": served.name,
        "versions": [str(item.version) for item in served.gateway.versions()],
        "platform": f"modelcycle_{loaded.runtime}",
        "inputs": [
            {"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": spec.shape}
            for spec in manifest.inputs.tensors
        ],
        "outputs": [
            {"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": spec.shape}
            for spec in manifest.outputs.tensors
        ],
    }


@router.get("/models/{name}")
def model_metadata(name: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return _metadata(served, served.gateway.primary)


@router.get("/models/{name}/versions/{version}")
def version_metadata(name: str, version: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return _metadata(served, _version(served, version))


@router.get("/models/{name}/ready")
def model_ready(name: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return {"name": name, "ready": True, "version": str(served.gateway.primary.version)}


@router.get("/models/{name}/versions/{version}/ready")
def version_ready(name: str, version: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return {"name": name, "ready": True, "version": str(_version(served, version).version)}


async def _read(request: Request) -> tuple[str | None, list[dict[str, Any]]]:
    """The caller's id (a correlation id, echoed back, never a key) and its tensors, parsed without a
    validation model on the hot path (the tensors are checked against the bundle's schema right after). With
    the binary tensor data extension (what tritonclient sends by default) the body is a JSON header of
    ``Inference-Header-Content-Length`` bytes followed by the raw tensors, each
    ``parameters.binary_data_size`` long, in the order of the inputs."""
    raw = await request.body()
    declared = request.headers.get("inference-header-content-length", "")
    header_size = int(declared) if declared.isascii() and declared.isdigit() else len(raw)
    if header_size > len(raw):
        raise RequestError(
            f"Inference-Header-Content-Length: {header_size} exceeds the body's {len(raw)} bytes"
        )
    body = json_body(raw[:header_size])
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs or not all(isinstance(item, dict) for item in inputs):
        raise RequestError("inputs: a non-empty list of tensors is required")
    request_id = body.get("id")
    tensors, offset = [], header_size
    for position, item in enumerate(inputs):
        parameters = item.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        tensor = dict(item)
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(raw):
                raise RequestError(
                    f"inputs[{position}].parameters.binary_data_size: {size} does not fit the body"
                )
            tensor["binary"] = raw[offset : offset + size]
            offset += size
        tensors.append(tensor)
    return request_id if isinstance(request_id, str) else None, tensors


async def _infer(state: ServerState, name: str, request: Request, version: str | None) -> JSONResponse:
    served = state.model(name)
    pinned = _version(served, version) if version is not None else None
    correlation, tensors = await _read(request)

    def encode(loaded: LoadedVersion) -> Tensors:
        schema = loaded.bundle.manifest.inputs
        return v2_tensors(tensors, schema, max_rows=state.settings.max_rows_per_request)

    request_id = new_request_id()  # the server's own, which the store keys on; the caller's "id" correlates
    pinned_version = pinned.version if pinned else None
    timeout = time_left(request.scope, state.settings.request_timeout_s)
    loaded, outputs = await answer(
        state, served, encode, "v2", request_id=request_id, timeout=timeout, version=pinned_version
    )
    spec = loaded.bundle.manifest.outputs.tensors[0]
    payload = {
        "model_name": name,
        "model_version": str(loaded.version),
        "id": correlation or request_id,  # the protocol echoes the caller's id
        "parameters": {"request_id": request_id},  # what feedback names
        "outputs": [
            {
                "name": spec.name,
                "shape": list(outputs.shape),
                "datatype": "FP32",
                "data": np.asarray(outputs, dtype=np.float32).ravel().tolist(),
            }
        ],
    }
    return JSONResponse(payload, headers={"X-Model-Version": str(loaded.version), "X-Request-Id": request_id})


INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


def hot_path(request: Request) -> Awaitable[Response] | None:
    """The infer routes answered straight from the app's first layer (``serve.entry``; FastAPI's own routes
    above stay, for the OpenAPI document and as the fallback): FastAPI's routing, dependency solving and
    middleware cost more than a small model's whole inference here. Errors in the protocol's shape."""
    if request.scope["method"] != "POST":
        return None
    match = INFER_PATH.fullmatch(request.scope["path"])
    if match is None:
        return None
    answered = _infer(serving_state(request), match["name"], request, match["version"])
    return rendered(answered, ProtocolRoute.error_body)
