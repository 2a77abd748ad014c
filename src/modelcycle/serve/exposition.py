"""``GET /metrics``: the server's metrics in Prometheus' text format, brought up to date at each scrape."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.state import serving_state

router = APIRouter(route_class=ProtocolRoute)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    state = serving_state(request)
    state.refresh_metrics()
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
