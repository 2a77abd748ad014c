"""``modelcycle serve REF [REF ...]``."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer

from modelcycle.cli.render import say
from modelcycle.cli.state import open_registry
from modelcycle.errors import ConfigError

ADMIN_TOKEN = "MODELCYCLE_ADMIN_TOKEN"


def serve(
    refs: Annotated[list[str], typer.Argument(help="Versions to serve, e.g. digits-cnn text-minilm@2.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes.")] = 1,
    variant: Annotated[
        str,
        typer.Option(
            "--variant", help="auto (fastest measured variant that passed its gate), base or a name."
        ),
    ] = "auto",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1)] = 32,
    max_queue_delay_ms: Annotated[float, typer.Option("--max-queue-delay-ms", min=0.0)] = 2.0,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Requests waiting per model before 503.")
    ] = 256,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds a request may take.")
    ] = 10.0,
) -> None:
    """Serve versions over HTTP: Open Inference Protocol v2 (/v2), simple JSON (/v1/models/NAME:predict),
    admin (/admin, token from MODELCYCLE_ADMIN_TOKEN), metrics (/metrics)."""
    import uvicorn

    from modelcycle.serve import ServeSettings, create_app

    token = os.environ.get(ADMIN_TOKEN) or None
    if not _loopback(host) and token is None:
        raise ConfigError(
            f"--host {host}: refusing to serve beyond this machine without an admin token",
            hint=f"set {ADMIN_TOKEN}, or bind 127.0.0.1",
        )
    settings = ServeSettings(
        host=host,
        port=port,
        variant=variant,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue=max_queue,
        request_timeout_s=timeout,
    )
    registry = open_registry()
    for ref in refs:
        registry.resolve(ref)  # unknown references fail here, before the server starts
    say(f"serving {', '.join(refs)} on http://{host}:{port} (variant {variant})", style="bold")
    app = create_app(registry, refs, settings, admin_token=token)
    uvicorn.run(app, host=host, port=port, workers=None if workers == 1 else workers, log_level="warning")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
