"""The first layer a request meets, before FastAPI: a body over the size limit is refused, and the hot path
(inference on a small model, where the HTTP stack is most of the cost) may be answered at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcycle.serve.rendering import error_response, plain_shape

HotPath = Callable[[Request], Awaitable[Response] | None]


class Entry:
    """A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs ~100 µs a request). A body whose
    declared length is over ``limit`` is answered 413 before it is read. ``hot_path`` may claim a request
    and answer it directly, skipping FastAPI's remaining middleware and routing (~25 µs a request here);
    it renders its own errors. Every other request goes on to FastAPI."""

    def __init__(self, app: ASGIApp, limit: int, hot_path: HotPath) -> None:
        self.app, self.limit, self.hot_path = app, limit, hot_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            message = f"body: {int(declared)} bytes, over the limit of {self.limit}"
            await error_response(plain_shape, message, 413)(scope, receive, send)
            return
        handled = self.hot_path(Request(scope, receive))
        if handled is None:
            await self.app(scope, receive, send)
            return
        response = await handled
        await response(scope, receive, send)
