"""``create_app``: one FastAPI application serving several models over the Open Inference Protocol v2
(``/v2``), a simple JSON API (``/v1/models/{name}:predict``) and an admin API (``/admin``), with one error
handler so every failure is a JSON body ``{"error": ...}`` with the right status."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcycle import __version__
from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.errors import ModelcycleError, NotFoundError, OverloadedError
from modelcycle.monitor.live import LiveMonitor, Watched
from modelcycle.monitor.metrics import ServerMetrics
from modelcycle.registry import Registry
from modelcycle.serve.batcher import BatchStats, Tensors
from modelcycle.serve.versions import LoadedVersion, ServedModel, load_version

logger = logging.getLogger(__name__)

SHARE_METRICS_EVERY_S = 1.0  # with --workers: how stale another worker's queue depth and counts may be


@dataclass
class ServerState:
    """Everything the routes share: the models by name, readiness, settings, metrics and the registry."""

    registry: Registry
    refs: list[str]
    settings: ServeConfig
    admin_token: str | None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    monitor: LiveMonitor | None = None
    explaining: asyncio.Semaphore | None = None  # made in the event loop on first use
    models: dict[str, ServedModel] = field(default_factory=dict)
    ready: bool = False
    load_error: str | None = None

    def model(self, name: str) -> ServedModel:
        if not self.ready:
            raise OverloadedError("the server is still loading its models")
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"model '{name}' is not served here", hint=f"served: {known}") from None

    async def load(self, ref: str, variant: str) -> LoadedVersion:
        """Load a version off the event loop (loading and warming take seconds for a large model)."""
        bundle = self.registry.open(ref)
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(
            None, lambda: load_version(bundle, self.settings, variant=variant, on_batch=self._batch)
        )
        loaded.batcher.start()
        return loaded

    def _batch(self, ref: str, classes: list[str], stats: BatchStats) -> None:
        """Batch metrics, and predictions by class counted once a batch (not once a request)."""
        model, _, version = ref.partition("@")
        self.metrics.batch(model, stats.rows, stats.queue_seconds)
        if classes and stats.outputs.ndim == 2 and stats.outputs.shape[1] == len(classes):
            counts = np.bincount(stats.outputs.argmax(axis=1), minlength=len(classes))
            for index in np.flatnonzero(counts).tolist():
                self.metrics.predicted(model, version, classes[index], int(counts[index]))

    def watched(self) -> list[Watched]:
        """The versions that answer requests (primary and canary), as monitoring sees them."""
        return [
            Watched(
                name,
                loaded.version,
                loaded.bundle.manifest.task,
                loaded.predictor.encoder.classes_ or None,
                loaded.reference,
                loaded.embed_stored,
            )
            for name, served in self.models.items()
            for loaded in (served.primary, served.canary)
            if loaded is not None
        ]

    def refresh_metrics(self) -> None:
        """Bring the values kept outside the metrics (queue depths, the store's counts) into them."""
        for name, served in self.models.items():
            self.metrics.queue_depth.labels(name).set(sum(v.batcher.depth for v in served.versions()))
        self.metrics.sync_counts()

    def describe(self) -> None:
        """Refresh the model-info gauge after any change of versions."""
        self.metrics.show_versions(
            [
                (name, str(loaded.version), role, loaded.variant, loaded.runtime)
                for name, served in self.models.items()
                for role, loaded in (
                    ("primary", served.primary),
                    ("canary", served.canary),
                    ("shadow", served.shadow),
                )
                if loaded is not None
            ]
        )


def create_app(
    registry: Registry,
    refs: list[str],
    settings: ServeConfig | None = None,
    *,
    admin_token: str | None = None,
    monitoring: MonitorConfig | None = None,
) -> FastAPI:
    """The application; models load in the background after start-up (``/v2/health/ready`` tells when).
    Monitoring is on unless ``monitoring.enabled`` is false."""
    state = ServerState(registry, refs, settings or ServeConfig(), admin_token)
    monitoring = monitoring or MonitorConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if monitoring.enabled:
            state.monitor = LiveMonitor(monitoring, registry, state.metrics)
        tasks = [asyncio.create_task(_load_all(state))]
        if state.monitor is not None:
            tasks.append(asyncio.create_task(_watch(state, state.monitor, monitoring.interval_s)))
        if state.metrics.shared:
            tasks.append(asyncio.create_task(_share_metrics(state)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for served in state.models.values():
                await served.close()  # graceful: every accepted request is answered first
            if state.monitor is not None:
                state.monitor.close()  # after the drain, so the last answers are stored too
            state.metrics.sync_counts()  # the last records' outcomes, for the workers that stay
            state.metrics.close()

    app = FastAPI(title="modelcycle", version=__version__, lifespan=lifespan)
    app.state.serving = state
    _install_error_handlers(app)
    from modelcycle.serve.admin import router as admin_router
    from modelcycle.serve.explain import router as explain_router
    from modelcycle.serve.feedback import router as feedback_router
    from modelcycle.serve.protocols import openai, simple, v2

    app.add_middleware(Gateway, limit=state.settings.max_body_bytes, hot_path=v2.hot_path)
    app.include_router(v2.router)
    app.include_router(simple.router)
    app.include_router(openai.router)
    app.include_router(feedback_router)
    app.include_router(explain_router)
    app.include_router(admin_router)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        state.refresh_metrics()
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _load_all(state: ServerState) -> None:
    try:
        for ref in state.refs:
            loaded = await state.load(ref, state.settings.variant)
            name = loaded.bundle.manifest.name
            if name in state.models:
                raise NotFoundError(f"{ref}: model '{name}' is given twice")
            state.models[name] = ServedModel(name, loaded)
            logger.info("serving %s (variant %s)", loaded.bundle.ref, loaded.variant)
        state.describe()
        # Everything loaded so far (torch, transformers, the models) lives as long as the server: moving it
        # out of the collector's reach stops full collections of a large heap from stalling requests.
        gc.collect()
        gc.freeze()
        state.ready = True
    except Exception as error:  # the server stays up and says why it is not ready
        state.load_error = str(error)
        logger.error("could not load the models: %s", error)


async def _share_metrics(state: ServerState) -> None:
    """With ``--workers``: a scrape reaches one worker, so each brings its shared values up to date itself."""
    while True:
        await asyncio.sleep(SHARE_METRICS_EVERY_S)
        try:
            state.refresh_metrics()
        except Exception:  # logged, and tried again: the worker's metrics must not stop for good
            logger.exception("sharing the metrics failed")


async def _watch(state: ServerState, monitor: LiveMonitor, interval_s: float) -> None:
    """Every ``interval_s``: live quality, drift and alerts, computed in a thread off the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        if not state.ready:
            continue
        try:
            await loop.run_in_executor(None, monitor.check, state.watched())
        except Exception:  # a failed round is logged and the next one tries again; serving goes on
            logger.exception("monitoring round failed")


def new_request_id() -> str:
    """A UUID version 7 (RFC 9562) as 32 hex digits: unique like uuid4, but ordered by time, so the
    prediction store's index on request ids grows at its end instead of at random pages (measured: 3 µs
    a row flat, against 3 → 11 µs a row as a store of random ids grows past 70 MB)."""
    milliseconds = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (milliseconds & (2**48 - 1)) << 80 | 0x7 << 76 | (random_bits >> 68) << 64
    value |= 0b10 << 62 | random_bits & (2**62 - 1)
    return f"{value:032x}"


def serving_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.serving
    return state


def error_body(message: str, status: int, *, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# OpenAI clients read errors as {"error": {"message": ..., "type": ...}}; every other path gets the Open
# Inference Protocol's {"error": "..."}.
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models")
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def _error_for(
    request: Request, message: str, status: int, *, retry_after: int | None = None
) -> JSONResponse:
    if request.url.path in OPENAI_PATHS:
        kind = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(body, status_code=status, headers=headers)
    return error_body(message, status, retry_after=retry_after)


def error_response(request: Request, error: ModelcycleError) -> JSONResponse:
    retry = 1 if isinstance(error, OverloadedError) else None
    return _error_for(request, str(error), error.http_status, retry_after=retry)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelcycleError)
    async def modelcycle_error(request: Request, error: ModelcycleError) -> JSONResponse:
        return error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return _error_for(request, f"{where or 'body'}: {first['msg']}", 400)


HotPath = Callable[[Request], Awaitable[Response] | None]


class Gateway:
    """The first layer a request meets (a plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs
    ~100 µs a request). A body whose declared length is over ``limit`` is answered 413 before it is read.
    ``hot_path`` may claim a request (inference on a small model, where the HTTP stack is most of the cost)
    and answer it directly, skipping FastAPI's remaining middleware and routing (~25 µs a request here);
    its errors get the same JSON bodies as everywhere else. Every other request goes on to FastAPI."""

    def __init__(self, app: ASGIApp, limit: int, hot_path: HotPath) -> None:
        self.app, self.limit, self.hot_path = app, limit, hot_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            refusal = error_body(f"body: {int(declared)} bytes, over the limit of {self.limit}", 413)
            await refusal(scope, receive, send)
            return
        request = Request(scope, receive)
        handled = self.hot_path(request)
        if handled is None:
            await self.app(scope, receive, send)
            return
        response: Response
        try:
            response = await handled
        except ModelcycleError as error:
            response = error_response(request, error)
        await response(scope, receive, send)


Encoder = Callable[[LoadedVersion], Tensors]


async def answer(
    state: ServerState,
    served: ServedModel,
    encode: Encoder,
    protocol: str,
    *,
    request_id: str,
    instances: list[Any] | None = None,
    version: int | None = None,
) -> tuple[LoadedVersion, np.ndarray]:
    """Route a request to a version, encode it with that version's own schema and preprocessing (a canary
    may preprocess differently), wait for the batcher, mirror it to the shadow, count it and hand it to
    monitoring (``instances``: the rows as the caller sent them, else the model-ready tensors are stored);
    returns the version that answered and its outputs."""
    started = time.perf_counter()
    loaded = served.route(version)
    code = "200"
    try:
        tensors = encode(loaded)
        outputs = await loaded.infer(tensors, state.settings.request_timeout_s)
    except ModelcycleError as error:
        code = str(error.http_status)
        raise
    finally:
        elapsed = time.perf_counter() - started
        state.metrics.requests.labels(served.name, str(loaded.version), protocol, code).inc()
        state.metrics.latency.labels(served.name, protocol).observe(elapsed)
    if state.monitor is not None:
        inputs = instances if instances is not None else tensors
        target = loaded.predictor.encoder
        state.monitor.record(
            request_id, served.name, loaded.version, protocol, inputs, outputs, target, elapsed * 1000
        )
    if version is None:
        served.mirror(encode, outputs, state.settings.shadow_timeout_s)
    return loaded, outputs
