"""``create_dashboard``: the web dashboard as a FastAPI application of server-rendered pages (Jinja2) whose
charts plotly.js draws and whose parts refresh in place while a page is open. ``modelcycle ui`` serves it
alone; ``modelcycle serve`` mounts it at ``/ui``. Pages only read; the actions (promote, canary, shadow,
rollback) are made by the browser on the serving admin API with the token the reader types, so a page
without the token can look but not change anything.

Every URL is a deep link: ``/models/NAME``, ``/models/NAME/versions/N``, ``/models/NAME/monitor``,
``/runs``, ``/runs/ID``, ``/runs/compare?run=A&run=B``, ``/timeline``. Errors are 4xx: a JSON
``{"error": ...}``, or the same message as a page when a browser asks for HTML."""

from __future__ import annotations

import base64
import binascii
import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcycle.dashboard import charts, views
from modelcycle.dashboard.importance import importance_of
from modelcycle.dashboard.sources import Sources
from modelcycle.errors import ModelcycleError, OverloadedError
from modelcycle.packages import package_file
from modelcycle.registry import parse_ref

HERE = Path(__file__).parent
PLOTLY = ("plotly", "package_data/plotly.min.js")  # plotly.js as the plotly package on PyPI ships it
REFRESH_SECONDS = {"monitor": 5, "timeline": 10, "model": 10, "models": 15}
ASSET_CACHE = "public, max-age=86400"
MAX_NUMBER = 2**31 - 1  # a page, version or event number beyond any the databases hold (and can take)
PageNumber = Annotated[int, Query(ge=1, le=MAX_NUMBER)]


def create_dashboard(
    sources: Sources, *, admin_path: str | None = "", login: Callable[[str], bool] | None = None
) -> FastAPI:
    """The dashboard over ``sources``. ``admin_path``: where the serving admin API is from the browser,
    relative to the path the dashboard is mounted under (``""``: ``/admin`` beside ``/ui``); None when there
    is no server to act on, so the pages say so. ``login``: when given, every request needs HTTP Basic
    credentials whose password it accepts (the admin token, on a server reachable beyond this machine)."""
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    templates.filters["when"] = _when
    templates.filters["number"] = _number
    templates.filters["version_path"] = _version_path
    app = FastAPI(title="modelcycle dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    # plotly.js: 4.8 MB, 1.6 MB compressed; level 1: a week's live page (380 kB) compresses in 8 ms, not 90
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=1)
    if login is not None:
        app.add_middleware(BasicLogin, accepts=login)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(
        request: Request, template: str, *, refresh: int | None = None, **context: Any
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        page = templates.get_template(template).render(
            base=base,
            admin=None if admin_path is None else base.rpartition("/")[0] + admin_path,
            refresh=refresh,
            **context,
        )
        return HTMLResponse(page)

    @app.exception_handler(ModelcycleError)
    def known_error(request: Request, error: ModelcycleError) -> Response:
        return _error(request, _status(error), str(error))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'][1:])}: {problem['msg']}"
            for problem in error.errors()
        )
        return _error(request, 400, problems)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, error: HTTPException) -> Response:
        return _error(request, error.status_code, str(error.detail))

    @app.get("/", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        return render(request, "models.html", refresh=REFRESH_SECONDS["models"], **views.models_view(sources))

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str, page: PageNumber = 1, split: str | None = None) -> HTMLResponse:
        context = views.model_view(sources, name, page=page, split=split or None)
        return render(request, "model.html", refresh=REFRESH_SECONDS["model"], **context)

    @app.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version(
        request: Request, name: str, version: Annotated[int, PathParam(ge=1, le=MAX_NUMBER)]
    ) -> HTMLResponse:
        return render(request, "version.html", **views.version_view(sources, name, version))

    @app.get("/models/{name}/monitor", response_class=HTMLResponse)
    def monitor(request: Request, name: str, window: str = views.DEFAULT_WINDOW) -> HTMLResponse:
        context = views.monitor_view(sources, name, window=window)
        return render(request, "monitor.html", refresh=REFRESH_SECONDS["monitor"], **context)

    @app.get("/runs", response_class=HTMLResponse)
    def runs(
        request: Request,
        name: str | None = None,
        status: str | None = None,
        text: str | None = None,
        page: PageNumber = 1,
    ) -> HTMLResponse:
        context = views.runs_view(
            sources, name=name or None, status=status or None, text=text or None, page=page
        )
        return render(request, "runs.html", **context)

    @app.get("/runs/compare", response_class=HTMLResponse)
    def compare(request: Request, run: Annotated[list[str], Query()] = []) -> HTMLResponse:  # noqa: B006
        return render(request, "compare.html", **views.compare_view(sources, run))

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        return render(request, "run.html", **views.run_view(sources, run_id))

    @app.get("/timeline", response_class=HTMLResponse)
    def timeline(
        request: Request,
        model: str | None = None,
        kind: str | None = None,
        before: Annotated[int | None, Query(ge=1, le=MAX_NUMBER)] = None,
    ) -> HTMLResponse:
        context = views.timeline_view(sources, name=model, kind=kind, before=before)
        return render(
            request,
            "timeline.html",
            refresh=REFRESH_SECONDS["timeline"] if before is None else None,
            **context,
        )

    @app.get("/api/models/{name}/versions/{version}/importance")
    def importance(name: str, version: Annotated[int, PathParam(ge=1, le=MAX_NUMBER)]) -> JSONResponse:
        record = sources.registry.resolve(f"{parse_ref(name).name}@{version}")
        answer = importance_of(sources, record)
        if answer["status"] == "ready":
            answer["figure"] = charts.importance_figure(answer["importance"]["features"])
        return JSONResponse(answer, status_code=202 if answer["status"] == "computing" else 200)

    @app.get("/assets/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(
            package_file(*PLOTLY), media_type="text/javascript", headers={"Cache-Control": ASSET_CACHE}
        )

    return app


class BasicLogin:
    """Every request must carry HTTP Basic credentials whose password ``accepts`` takes (any user name): a
    browser asks for them itself, so the pages stay plain links. Refused: 401 naming what is needed."""

    def __init__(self, app: ASGIApp, *, accepts: Callable[[str], bool]) -> None:
        self.app, self.accepts = app, accepts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.accepts(_basic_password(Headers(scope=scope))):
            refused = JSONResponse(
                {"error": "the dashboard needs the admin token: sign in with it as the password"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="modelcycle dashboard", charset="UTF-8"'},
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _basic_password(headers: Headers) -> str:
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _version_path(ref: str) -> str:
    """The dashboard path of a version reference (``name@3``), or "" for one that names no number here (a
    parent written by hand, from another registry)."""
    try:
        parsed = parse_ref(ref)
    except ModelcycleError:
        return ""
    return (
        "" if parsed.version is None else f"/models/{quote(parsed.name, safe='')}/versions/{parsed.version}"
    )


def _status(error: ModelcycleError) -> int:
    """The error's own status; one it gives as the server's fault (a damaged bundle, a missing package) is
    a 422 naming what could not be read. A store that is busy stays 503, as the server answers it."""
    if isinstance(error, OverloadedError) or error.http_status < 500:
        return error.http_status
    return 422


def _error(request: Request, status: int, message: str) -> Response:
    """The error as JSON ``{"error": ...}``, or as a page for a browser that asks for HTML."""
    if "text/html" in request.headers.get("accept", ""):
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>modelcycle — error</title>"
            f"</head><body><h1>{status}</h1><p class='error'>{html.escape(message)}</p>"
            f"<p><a href='{html.escape(request.scope.get('root_path', ''))}/'>models</a></p></body></html>"
        )
        return HTMLResponse(page, status_code=status)
    return JSONResponse({"error": message}, status_code=status)


def _when(at: str | float | None) -> str:
    """A registry time (ISO, UTC) or epoch seconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if at is None:
        return ""
    if isinstance(at, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    return at.replace("T", " ")[:19] + " UTC"


def _number(value: Any) -> str:
    """A figure as the tables show it: floats to 4 significant digits, nothing for None."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
