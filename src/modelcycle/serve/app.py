"""``create_app``: one FastAPI application serving several models over the Open Inference Protocol v2
(``/v2``), a simple JSON API (``/v1/models/{name}:predict``), an OpenAI-compatible API (``/v1/completions``,
``/v1/chat/completions``), feedback, explanations, an admin API (``/admin``), metrics (``/metrics``) and
the dashboard (``/ui``). It only wires the parts together: each router renders its own errors in its
protocol's shape."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from modelcycle import __version__
from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.dashboard import Sources, create_dashboard
from modelcycle.monitor.encryption import store_keys
from modelcycle.monitor.live import store_path
from modelcycle.registry import Registry
from modelcycle.serve import admin, explain, exposition, feedback
from modelcycle.serve.entry import Entry
from modelcycle.serve.lifespan import lifespan
from modelcycle.serve.protocols import openai, simple, v2
from modelcycle.serve.rendering import plain_http_error
from modelcycle.serve.state import ServerState
from modelcycle.serve.transport import is_loopback, token_digest

ROUTERS = (
    v2.router,
    simple.router,
    openai.router,
    feedback.router,
    explain.router,
    admin.router,
    exposition.router,
)
DASHBOARD = "/ui"  # the web dashboard, on the same registry and store


def create_app(
    registry: Registry,
    refs: list[str],
    settings: ServeConfig | None = None,
    *,
    admin_token: str | None = None,
    admin_digest: str | None = None,
    monitoring: MonitorConfig | None = None,
) -> FastAPI:
    """The application; models load in the background after start-up (``/v2/health/ready`` tells when).
    Monitoring is on unless ``monitoring.enabled`` is false. The admin API is on with ``admin_token`` (or
    only its ``admin_digest``, ``transport.token_digest``)."""
    if admin_token is not None:
        admin_digest = token_digest(admin_token)
    state = ServerState(registry, refs, settings or ServeConfig(), admin_digest)
    app = FastAPI(
        title="modelcycle", version=__version__, lifespan=lifespan(state, monitoring or MonitorConfig())
    )
    app.state.serving = state
    app.add_exception_handler(HTTPException, plain_http_error)
    app.add_middleware(
        Entry,
        limit=state.settings.max_body_bytes,
        timeout_s=state.settings.request_timeout_s,
        hot_path=v2.hot_path,
    )
    for router in ROUTERS:
        app.include_router(router)
    app.mount(
        DASHBOARD,
        create_dashboard(
            _dashboard_sources(state, monitoring or MonitorConfig()), login=_dashboard_login(state)
        ),
    )
    return app


def _dashboard_login(state: ServerState) -> Callable[[str], bool] | None:
    """Open on 127.0.0.1; beyond it the pages show runs' parameters and errors, who did what and why, so
    they ask for the admin token (as an HTTP Basic password; none configured: refused)."""
    if is_loopback(state.settings.host):
        return None
    digest = state.admin_digest
    return lambda token: digest is not None and hmac.compare_digest(token_digest(token), digest)


def _dashboard_sources(state: ServerState, monitoring: MonitorConfig) -> Sources:
    """What ``/ui`` shows: this server's registry and store, and its own metrics (time to first token)."""
    return Sources(
        state.registry,
        store=store_path(monitoring, state.registry) if monitoring.enabled else None,
        keys=store_keys(monitoring.encryption) if monitoring.enabled else None,
        alpha=monitoring.drift_alpha,
        exposition=lambda: state.metrics.exposition(),
    )
