"""The admin API of another server, reached through the dashboard's own origin: ``modelcycle ui --server
URL`` forwards ``/admin/models/...`` calls (method, JSON body and the reader's Authorization header, nothing
else) to that server, so the browser acts on it without a cross-origin request. The server checks the token
and answers; its answer comes back as it was. Bounded: a body of at most ``MAX_BODY`` bytes, ``TIMEOUT_S``
for the answer."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

MAX_BODY = 64 * 1024
TIMEOUT_S = 30.0


def admin_proxy(server: str) -> APIRouter:
    router = APIRouter()
    target = server.rstrip("/")

    @router.api_route("/admin/models/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def forward(path: str, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
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
