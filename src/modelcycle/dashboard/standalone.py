"""The application ``modelcycle ui`` serves: the dashboard at ``/ui`` (``/`` leads there) and, with a
server to act on, that server's admin API forwarded at ``/admin/models`` so the pages' actions reach it."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import RedirectResponse

from modelcycle.dashboard.app import create_dashboard
from modelcycle.dashboard.proxy import admin_proxy
from modelcycle.dashboard.sources import Sources

MOUNT = "/ui"


def standalone_app(sources: Sources, *, server: str | None = None, hosts: list[str] | None = None) -> FastAPI:
    """The dashboard at ``/ui``; with ``server`` (its base URL) the pages' actions are forwarded to it.
    ``hosts``: the Host names taken (others refused, so a page of another site cannot reach this one by
    re-pointing its own name at 127.0.0.1); None takes any."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_api_route("/", lambda: RedirectResponse(f"{MOUNT}/"), include_in_schema=False)
    if server is not None:
        app.include_router(admin_proxy(server))
    app.mount(MOUNT, create_dashboard(sources, admin_path="" if server is not None else None))
    return app
