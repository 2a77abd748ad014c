"""The admin API of another server, reached through the dashboard's own origin: ``modelcycle ui --server
URL`` forwards the admin calls its pages make (a model's status, promote, canary, shadow, rollback) to that
server with the reader's Authorization header, so the browser acts on it without a cross-origin request.
The server checks the token and answers; its answer comes back as it was.

Only those paths are forwarded (``NAME`` or ``NAME/ACTION``, nothing that could walk elsewhere on the
server), only from the dashboard's own pages (a browser's ``Sec-Fetch-Site``/``Origin`` say same-origin, so
another site cannot post through it), a JSON body of at most ``MAX_BODY`` bytes, ``TIMEOUT_S`` for the
answer."""

from __future__ import annotations

import re

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

MAX_BODY = 64 * 1024
TIMEOUT_S = 30.0
ACTIONS = ("promote", "canary", "shadow", "rollback")
FORWARDED = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,99}}(/({'|'.join(ACTIONS)}))?")


def admin_proxy(server: str) -> APIRouter:
    """A router forwarding ``/admin/models/...`` to ``server`` (its base URL)."""
    router = APIRouter()
    target = server.rstrip("/")

    @router.api_route("/admin/models/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def forward(path: str, request: Request) -> Response:
        refused = _refusal(path, request)
        if refused is not None:
            return refused
        body = await _body(request)
        if body is None:
            return JSONResponse({"error": f"body: more than {MAX_BODY} bytes"}, status_code=413)
        headers = {"Content-Type": "application/json"}
        if "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                answer = await client.request(
                    request.method, f"{target}/admin/models/{path}", content=body or None, headers=headers
                )
        except httpx.HTTPError as error:
            return JSONResponse(
                {"error": f"--server {target}: no answer ({type(error).__name__}: {error})"}, status_code=502
            )
        return Response(
            answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type")
        )

    return router


def _refusal(path: str, request: Request) -> Response | None:
    if FORWARDED.fullmatch(path) is None:
        return JSONResponse({"error": f"path: /admin/models/{path} is not an admin call"}, status_code=404)
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}"
    ):
        return JSONResponse(
            {"error": "origin: admin calls are taken from the dashboard's own pages only"}, 403
        )
    if request.method == "POST" and request.headers.get("content-type", "").partition(";")[0] not in (
        "application/json",
        "",
    ):
        return JSONResponse({"error": "content-type: admin calls send application/json"}, status_code=415)
    return None


async def _body(request: Request) -> bytes | None:
    """The body, or None past ``MAX_BODY`` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)
