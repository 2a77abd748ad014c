"""The Open Inference Protocol v2 (KServe / Triton REST), unchanged so existing clients work: server and model
metadata, liveness and readiness, and ``infer`` on model-ready tensors as the bundle's schema names them."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelcycle import __version__
from modelcycle.errors import NotFoundError
from modelcycle.serve.app import ServerState, answer, error_body, serving_state
from modelcycle.serve.batcher import Tensors
from modelcycle.serve.decode import v2_datatype, v2_tensors
from modelcycle.serve.versions import LoadedVersion, ServedModel

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "modelcycle", "version": __version__, "extensions": []}


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", response_model=None)
def ready(request: Request) -> dict[str, Any] | JSONResponse:
    state = serving_state(request)
    if state.ready:
        return {"ready": True}
    return error_body(state.load_error or "loading models", 503)


def _version(served: ServedModel, version: str | None) -> LoadedVersion:
    if version is None:
        return served.primary
    if not version.isdigit():
        raise NotFoundError(f"model '{served.name}' has no version '{version}'")
    return served.route(int(version))


def _metadata(served: ServedModel, loaded: LoadedVersion) -> dict[str, Any]:
    manifest = loaded.bundle.manifest
    runtime = "torch" if loaded.variant == "base" else loaded.bundle.variant(loaded.variant).manifest.runtime
    return {
        "name": served.name,
        "versions": [str(item.version) for item in served.versions()],
        "platform": f"modelcycle_{runtime}",
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
    return _metadata(served, served.primary)


@router.get("/models/{name}/versions/{version}")
def version_metadata(name: str, version: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return _metadata(served, _version(served, version))


@router.get("/models/{name}/ready")
def model_ready(name: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return {"name": name, "ready": True, "version": str(served.primary.version)}


@router.get("/models/{name}/versions/{version}/ready")
def version_ready(name: str, version: str, request: Request) -> dict[str, Any]:
    served = serving_state(request).model(name)
    return {"name": name, "ready": True, "version": str(_version(served, version).version)}


async def _infer(state: ServerState, name: str, body: InferRequest, version: str | None) -> JSONResponse:
    served = state.model(name)
    pinned = _version(served, version) if version is not None else None
    tensors = [item.model_dump() for item in body.inputs]

    def encode(loaded: LoadedVersion) -> Tensors:
        schema = loaded.bundle.manifest.inputs
        return v2_tensors(tensors, schema, max_rows=state.settings.max_rows_per_request)

    loaded, outputs = await answer(state, served, encode, "v2", version=pinned.version if pinned else None)
    spec = loaded.bundle.manifest.outputs.tensors[0]
    payload = {
        "model_name": name,
        "model_version": str(loaded.version),
        "id": body.id or uuid.uuid4().hex,
        "outputs": [
            {
                "name": spec.name,
                "shape": list(outputs.shape),
                "datatype": "FP32",
                "data": np.asarray(outputs, dtype=np.float32).ravel().tolist(),
            }
        ],
    }
    return JSONResponse(payload, headers={"X-Model-Version": str(loaded.version)})


@router.post("/models/{name}/infer")
async def infer(name: str, body: InferRequest, request: Request) -> JSONResponse:
    return await _infer(serving_state(request), name, body, None)


@router.post("/models/{name}/versions/{version}/infer")
async def infer_version(name: str, version: str, body: InferRequest, request: Request) -> JSONResponse:
    return await _infer(serving_state(request), name, body, version)
