"""``POST /v1/feedback``: the true label (classification) or value (regression) of an earlier prediction,
named by the request id its answer carried; it may arrive any time while the prediction is retained."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from modelcycle.errors import NotFoundError, OverloadedError
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.state import ServerState, serving_state

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=ProtocolRoute)


class Feedback(BaseModel):
    request_id: str = Field(min_length=1, max_length=200)
    row: int = Field(0, ge=0, lt=2**31)  # which row of a multi-row request
    label: str | int | None = None
    value: float | None = Field(None, allow_inf_nan=False)


@router.post("/feedback")
async def feedback(body: Feedback, request: Request) -> dict[str, Any]:
    state = serving_state(request)
    if state.monitor is None:
        raise OverloadedError("feedback: monitoring is off on this server (monitor.enabled: false)")
    label = None if body.label is None else str(body.label)
    loop = asyncio.get_running_loop()
    model = await loop.run_in_executor(
        None,
        state.monitor.feedback,
        body.request_id,
        body.row,
        label,
        body.value,
        lambda *key: _labels(state, *key),
    )
    return {"request_id": body.request_id, "row": body.row, "model": model, "accepted": True}


def _labels(state: ServerState, model: str, version: int) -> list[str] | None:
    """The class names of ``model@version`` (None for regression), from the server or else the registry."""
    served = state.models.get(model)
    for loaded in served.gateway.versions() if served is not None else []:
        if loaded.version == version:
            return loaded.predictor.encoder.classes_ or None
    try:
        manifest = state.registry.open(f"{model}@{version}").manifest
    except NotFoundError:
        return None
    return manifest.outputs.labels if manifest.task == "classification" else None
