"""A simple JSON API: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` in the caller's own
terms (named features, raw text, nested lists of pixels), answered as the model's task says: a label and
every class's probability, the labels above the threshold and each label's probability, or values."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelcycle.instances import instance_tensors
from modelcycle.serve.batcher import Tensors
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.request_path import answer, new_request_id, time_left
from modelcycle.serve.state import serving_state
from modelcycle.serve.versions import LoadedVersion

router = APIRouter(prefix="/v1", tags=["simple JSON"], route_class=ProtocolRoute)  # errors: {"error": "..."}


class PredictRequest(BaseModel):
    instances: list[Any] = Field(min_length=1)


@router.post("/models/{name}:predict")
async def predict(name: str, body: PredictRequest, request: Request) -> JSONResponse:
    state = serving_state(request)
    served = state.model(name)

    def encode(loaded: LoadedVersion) -> Tensors:
        settings = state.settings
        return instance_tensors(
            body.instances,
            loaded.predictor,
            max_rows=settings.max_rows_per_request,
            max_text_chars=settings.max_text_chars,
        )

    request_id = new_request_id()  # the server's own: the caller's X-Request-Id only correlates
    loaded, outputs = await answer(
        state,
        served,
        encode,
        "v1",
        request_id=request_id,
        timeout=time_left(request.scope, state.settings.request_timeout_s),
        instances=body.instances,
    )
    predictor = loaded.predictor
    predictions = predictor.task.answer(np.asarray(outputs), predictor.encoder.coding)
    payload = {
        "predictions": predictions,
        "model": name,
        "model_version": str(loaded.version),
        "request_id": request_id,
    }
    headers = {"X-Model-Version": str(loaded.version), "X-Request-Id": request_id}
    correlation = request.headers.get("x-request-id")
    if correlation is not None:
        payload["correlation_id"] = headers["X-Correlation-Id"] = correlation
    return JSONResponse(payload, headers=headers)
