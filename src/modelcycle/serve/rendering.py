"""Where a failed request becomes an HTTP answer: one conversion (``rendered``), with the body's shape chosen
by the protocol the request spoke. A protocol's router declares its shape through its route class
(``ProtocolRoute``, whose shape is ``{"error": "..."}``, or a subclass); the status is the error's own
(``ModelcycleError.http_status``: 4xx, or 503 with ``Retry-After`` when the server is busy)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelcycle.errors import ModelcycleError, OverloadedError

ErrorShape = Callable[[str, int, str | None], dict[str, Any]]  # (message, status, field) → JSON body
RETRY_AFTER_S = 1  # what a 503 asks the caller to wait: queues drain within a batch or two


def plain_shape(message: str, status: int, field: str | None) -> dict[str, Any]:
    """``{"error": "..."}``: the body of the Open Inference Protocol's errors, which the simple JSON API,
    feedback, explanations and the admin API share."""
    return {"error": message}


def error_response(
    shape: ErrorShape,
    message: str,
    status: int,
    *,
    field: str | None = None,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """``headers``: what the error carries besides (a 405's ``Allow``)."""
    sent = dict(headers or {})
    if retry_after is not None:
        sent["Retry-After"] = str(retry_after)
    return JSONResponse(shape(message, status, field), status_code=status, headers=sent or None)


async def rendered(answer: Awaitable[Response], shape: ErrorShape) -> Response:
    """``answer``'s response, or the error it raised rendered in ``shape``: a ``ModelcycleError`` with its own
    status, a request that does not fit the route's model as a 400 naming the first field at fault."""
    try:
        return await answer
    except ModelcycleError as error:
        retry = RETRY_AFTER_S if isinstance(error, OverloadedError) else None
        return error_response(shape, str(error), error.http_status, field=error.parameter, retry_after=retry)
    except HTTPException as error:  # FastAPI's own: a body it could not parse
        return error_response(shape, http_message(error), error.status_code, headers=error.headers)
    except RequestValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return error_response(shape, f"{where or 'body'}: {first['msg']}", 400, field=where or None)


def http_message(error: HTTPException) -> str:
    """What a Starlette / FastAPI ``HTTPException`` says, naming the body's fault where FastAPI's parser hid
    it ("There was an error parsing the body" for a body nested too deeply or not UTF-8)."""
    cause = error.__cause__
    if error.status_code != 400 or cause is None:
        return str(error.detail)
    if isinstance(cause, RecursionError):
        return "body: JSON nested too deeply"
    return f"body: not JSON ({cause})"


async def plain_http_error(request: Request, error: Exception) -> Response:
    """The application's answer to an ``HTTPException`` raised outside a protocol's routes (no such path,
    a method the path does not take): ``{"error": ...}`` like every other error, not FastAPI's
    ``{"detail": ...}``."""
    assert isinstance(error, HTTPException)
    message = http_message(error)
    if error.__cause__ is None:  # "Not Found": say what was not found
        message = f"{request.url.path}: {message}"
    return error_response(plain_shape, message, error.status_code, headers=error.headers)


class ProtocolRoute(APIRoute):
    """A route whose errors are answered in its protocol's shape (``error_body``; subclasses override it).
    FastAPI validates the body and solves dependencies inside the route's handler, so their errors are
    rendered here too."""

    @staticmethod
    def error_body(message: str, status: int, field: str | None) -> dict[str, Any]:
        return plain_shape(message, status, field)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler, shape = super().get_route_handler(), self.error_body

        async def guarded(request: Request) -> Response:
            return await rendered(handler(request), shape)

        return guarded
