"""The first layer a request meets, before FastAPI: the body is read here, within the size limit and the
request's time, whatever its transfer encoding; and the hot path (inference on a small model, where the HTTP
stack is most of the cost) may be answered at once."""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class Deadlines:
    """When body reads in flight run out of time, kept with one timer per ``SLOT_S`` of deadlines rather
    than one per request: a timer a request, each cancelled once its body came, piled up in the event
    loop's heap for the timeout's length and cost a small model ~6 % of its throughput (measured side by
    side, wrk at c=64). A read ends at most ``SLOT_S`` after its deadline."""

    SLOT_S = 0.25

    def __init__(self) -> None:
        # per event loop (a test client runs one per session): deadline slot → the tasks reading by then
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, set[asyncio.Task[Any]]]]
        self._slots = weakref.WeakKeyDictionary()
        self.expired: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def watch(self, task: asyncio.Task[Any], timeout_s: float) -> set[asyncio.Task[Any]]:
        """Cancel ``task`` once ``timeout_s`` has passed (marking it expired) unless it leaves the returned
        set first."""
        loop = asyncio.get_running_loop()
        slots = self._slots.setdefault(loop, {})
        slot = math.ceil((loop.time() + timeout_s) / self.SLOT_S)
        tasks = slots.get(slot)
        if tasks is None:
            tasks = slots[slot] = set()
            loop.call_at(slot * self.SLOT_S, self._expire, slots, slot)
        tasks.add(task)
        return tasks

    def _expire(self, slots: dict[int, set[asyncio.Task[Any]]], slot: int) -> None:
        for task in slots.pop(slot, set()):
            self.expired.add(task)
            task.cancel()


async def read_within(receive: Receive, limit: int, timeout_s: float, deadlines: Deadlines) -> bytes:
    """``read_body``, or ``BodyTimeout`` once ``timeout_s`` has passed (``deadlines`` keeps the time)."""
    task = asyncio.current_task()
    assert task is not None  # an ASGI app runs in a task
    cancellations = task.cancelling() if hasattr(task, "cancelling") else 0  # Python 3.11+
    watched = deadlines.watch(task, timeout_s)
    try:
        return await read_body(receive, limit)
    except asyncio.CancelledError:
        if task not in deadlines.expired:
            raise
        deadlines.expired.discard(task)
        # Python 3.11+: take back the deadline's cancellation only; one from outside in the same turn of
        # the loop (a shutdown) goes on as a cancellation, as asyncio.timeout does it
        if hasattr(task, "uncancel") and task.uncancel() > cancellations:
            raise
        raise BodyTimeout from None
    finally:
        watched.discard(task)


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
