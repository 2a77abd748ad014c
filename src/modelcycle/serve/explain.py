"""Explanations over HTTP: ``POST /v1/models/{name}:explain`` (instances, as ``:predict`` takes them) and
``POST /v2/models/{name}/explain`` (tensors, as ``/infer`` takes them; ``parameters.method`` and
``parameters.target`` choose what is explained). They run on the base weights in a thread, at most
``max_concurrent_explanations`` at a time; beyond that a 503 with Retry-After, so explanations, which cost
tens to thousands of forward passes, never queue in front of predictions."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from modelcycle.errors import OverloadedError, RequestError
from modelcycle.explain import Explanation, explain, explain_tensors
from modelcycle.serve.decode import json_body, v2_tensors
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.state import ServerState, serving_state

router = APIRouter(tags=["explanations"], route_class=ProtocolRoute)


class ExplainRequest(BaseModel):
    instances: list[Any] = Field(min_length=1)
    method: str = "ig"
    target: str | None = None


@router.post("/v1/models/{name}:explain")
async def explain_instances(name: str, body: ExplainRequest, request: Request) -> dict[str, Any]:
    state = serving_state(request)
    loaded = state.model(name).gateway.primary
    rows = len(body.instances)
    if rows > state.settings.max_rows_per_request:
        raise RequestError(f"instances: at most {state.settings.max_rows_per_request} per request")

    def work() -> list[Explanation]:
        with loaded.analysis_lock:
            return explain(loaded.torch_predictor, body.instances, method=body.method, target=body.target)

    explanations = await _limited(state, work)
    return {
        "model": name,
        "model_version": str(loaded.version),
        "explanations": [item.to_json() for item in explanations],
    }


@router.post("/v2/models/{name}/explain")
async def explain_v2(name: str, request: Request) -> dict[str, Any]:
    state = serving_state(request)
    loaded = state.model(name).gateway.primary
    body = json_body(await request.body())
    if not isinstance(body, dict):
        raise RequestError("body: a JSON object with inputs is required")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("parameters: an object is required")
    schema = loaded.bundle.manifest.inputs
    tensors = v2_tensors(body.get("inputs"), schema, max_rows=state.settings.max_rows_per_request)
    method, target = str(parameters.get("method", "ig")), parameters.get("target")
    chosen = None if target is None else str(target)

    def work() -> list[Explanation]:
        with loaded.analysis_lock:
            return explain_tensors(loaded.torch_predictor, tensors, method=method, target=chosen)

    explanations = await _limited(state, work)
    return {
        "model_name": name,
        "model_version": str(loaded.version),
        "explanations": [item.to_json() for item in explanations],
    }


async def _limited(state: ServerState, work: Any) -> Any:
    if state.explaining is None:
        state.explaining = asyncio.Semaphore(state.settings.max_concurrent_explanations)
    if state.explaining.locked():
        raise OverloadedError(f"explanations: {state.settings.max_concurrent_explanations} already running")
    async with state.explaining:
        return await asyncio.get_running_loop().run_in_executor(None, work)
