"""``modelcycle ui``: the web dashboard alone, on the registry and prediction store this command sees (the
same pages ``modelcycle serve`` has at ``/ui``). With ``--server URL`` its actions go to that server's admin
API; without, the pages are read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.render import say
from modelcycle.cli.state import open_registry

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def ui(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8080,
    server: Annotated[
        str | None,
        typer.Option("--server", help="A running `modelcycle serve` (http://HOST:PORT) to make actions on."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="A pipeline YAML whose monitor: section names the store and its keys."),
    ] = None,
) -> None:
    """The dashboard: models and versions, runs and their comparison, live monitoring, the timeline and
    serving actions; it refreshes while a page is open."""
    import gc

    import uvicorn

    from modelcycle.config import MonitorConfig, load_config
    from modelcycle.dashboard import Sources
    from modelcycle.dashboard.standalone import standalone_app
    from modelcycle.errors import ConfigError
    from modelcycle.monitor.encryption import store_keys
    from modelcycle.monitor.live import store_path
    from modelcycle.serve.transport import is_loopback

    if not is_loopback(host):
        raise ConfigError(
            f"--host {host}: the dashboard serves plain HTTP and the admin token passes through it",
            hint="bind 127.0.0.1 and reach it through an SSH tunnel or a TLS proxy, or use /ui on "
            "`modelcycle serve` with TLS",
            parameter="host",
        )
    if server is not None:
        _check_server(server)
    monitor = load_config(config_file).monitor if config_file is not None else MonitorConfig()
    registry = open_registry()
    sources = Sources(
        registry,
        store=store_path(monitor, registry),
        keys=store_keys(monitor.encryption),
        alpha=monitor.drift_alpha,
    )
    app = standalone_app(sources, server=server, hosts=sorted({host, *LOOPBACK_NAMES}))
    # what the imports made (torch, transformers, pydantic models) lives as long as the process: frozen, it
    # leaves the collector's full passes, which took 165 ms every ~9 live pages of a week's traffic
    gc.freeze()
    say(f"dashboard on http://{host}:{port}/ui/" + (f" (actions on {server})" if server else " (read-only)"))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        sources.close()
        registry.close()


def _check_server(server: str) -> None:
    """The server's URL; plain HTTP only to this machine (the admin token goes there with each action)."""
    from urllib.parse import urlsplit

    from modelcycle.errors import ConfigError
    from modelcycle.serve.transport import is_loopback

    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--server {server}: give the server's URL, e.g. http://127.0.0.1:8000")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"--server {server}: the admin token would cross the network in clear",
            hint="use https:// (modelcycle serve --ssl-certfile ...), or a server on this machine",
        )
