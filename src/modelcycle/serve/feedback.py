"""``POST /v1/feedback``: the true label (classification), labels (multi-label) or value (regression) of an
earlier prediction, named by the request id its answer carried; it may arrive any time while the prediction
is retained. The task of the version that made the prediction checks it."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from modelcycle.errors import OverloadedError, RequestError
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.state import ServerState, serving_state
from modelcycle.tasks import TASKS, Task

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=ProtocolRoute)


class Feedback(BaseModel):
    request_id: str = Field(min_length=1, max_length=200)
    row: int = Field(0, ge=0, lt=2**31)  # which row of a multi-row request
    label: str | int | list[str] | None = None  # a list: the labels of a multi-label prediction
    value: float | None = Field(None, allow_inf_nan=False)


@router.post("/feedback")
async def feedback(body: Feedback, request: Request) -> dict[str, Any]:
    state = serving_state(request)
    if state.monitor is None:
        raise OverloadedError("feedback: monitoring is off on this server (monitor.enabled: false)")
    loop = asyncio.get_running_loop()
    model = await loop.run_in_executor(
        None,
        state.monitor.feedback,
        body.request_id,
        body.row,
        body.label,
        body.value,
        lambda *key: _stored_label(state, *key),
    )
    return {"request_id": body.request_id, "row": body.row, "model": model, "accepted": True}


def _stored_label(
    state: ServerState, model: str, version: int, label: object, value: float | None
) -> str | None:
    """The label's text as stored, checked by the task of ``model@version`` against its classes."""
    task, classes = _task(state, model, version)
    if classes and value is not None:
        raise RequestError(f"value: {model} is a classifier; send 'label'")
    return task.feedback_label(label, classes, f"{model}@{version}")


def _task(state: ServerState, model: str, version: int) -> tuple[Task, list[str]]:
    """The task and class names of ``model@version``, from the server or else the registry."""
    served = state.models.get(model)
    for loaded in served.gateway.versions() if served is not None else []:
        if loaded.version == version:
            return loaded.predictor.task, loaded.predictor.encoder.classes_
    manifest = state.registry.open(f"{model}@{version}").manifest
    return TASKS.get(manifest.task)(), manifest.outputs.labels or []
