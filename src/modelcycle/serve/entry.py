"""The first layer a request meets, before FastAPI: the body is read here, within the size limit and the
request's time, whatever its transfer encoding; and the hot path (inference on a small model, where the HTTP
stack is most of the cost) may be answered at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelcycle.serve.deadlines import Deadlines
from modelcycle.serve.rendering import error_response, plain_shape
from modelcycle.serve.request_path import ARRIVED

HotPath = Callable[[Request], Awaitable[Response] | None]


class BodyTooLarge(Exception):
    """More body bytes came than the limit allows (a chunked body declares no length)."""


class BodyTimeout(Exception):
    """The body was not whole within the request's time."""


class ClientGone(Exception):
    """The client disconnected before its body was whole: there is nobody to answer."""


class Entry:
    """A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs ~100 µs a request). The body is
    read whole here before anything else sees it, so one check covers every route (admin routes before their
    token check) and every transfer encoding: a declared length over ``limit`` is answered 413 before a
    byte is read, a chunked body 413 as soon as it passes the limit (the rest is never read, so memory stays
    bounded), a body still incomplete after ``timeout_s`` 408 (a slow client holds a connection, not the
    server). ``hot_path`` may claim a request and answer it directly, skipping FastAPI's remaining middleware
    and routing (~25 µs a request here); it renders its own errors. Every other request goes on to
    FastAPI."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float, hot_path: HotPath) -> None:
        self.app, self.limit, self.timeout_s, self.hot_path = app, limit, timeout_s, hot_path
        self.deadlines = Deadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[ARRIVED] = time.monotonic()  # the request's time counts from here
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            message = f"body: {int(declared)} bytes, over the limit of {self.limit}"
            await refused(message, 413)(scope, receive, send)
            return
        try:
            body = await read_within(receive, self.limit, self.timeout_s, self.deadlines)
        except BodyTooLarge:
            message = f"body: over the limit of {self.limit} bytes"
            await refused(message, 413)(scope, receive, send)
            return
        except BodyTimeout:
            message = f"body: not received whole within {self.timeout_s:g} s"
            await refused(message, 408)(scope, receive, send)
            return
        except ClientGone:
            return
        receive = replay(body, receive)
        handled = self.hot_path(Request(scope, receive))
        if handled is None:
            await self.app(scope, receive, send)
            return
        response = await handled
        await response(scope, receive, send)


def refused(message: str, status: int) -> Response:
    """A body refused before it was read whole: the connection closes after the answer, since what is left
    of the body would otherwise be read as the client's next request."""
    response = error_response(plain_shape, message, status)
    response.headers["Connection"] = "close"
    return response


async def read_within(receive: Receive, limit: int, timeout_s: float, deadlines: Deadlines) -> bytes:
    """``read_body``, or ``BodyTimeout`` once ``timeout_s`` has passed (``deadlines`` keeps the time)."""
    task = asyncio.current_task()
    assert task is not None  # an ASGI app runs in a task
    cancellations = task.cancelling() if hasattr(task, "cancelling") else 0  # Python 3.11+
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    watched = deadlines.watch(timeout_s, expire)
    try:
        return await read_body(receive, limit)
    except asyncio.CancelledError:
        if not expired:
            raise
        # Python 3.11+: take back the deadline's cancellation only; one from outside in the same turn of
        # the loop (a shutdown) goes on as a cancellation, as asyncio.timeout does it
        if hasattr(task, "uncancel") and task.uncancel() > cancellations:
            raise
        raise BodyTimeout from None
    finally:
        watched.discard(expire)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, joined from its messages; ``BodyTooLarge`` once more than ``limit`` bytes came,
    without waiting for the rest."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return b"".join((*parts, part)) if parts else part  # most bodies come in one message
        parts.append(part)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read as one message, then the connection's own
    messages (a disconnect, which streaming answers watch for)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
