"""``modelcycle serve REF [REF ...]``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.render import say
from modelcycle.cli.state import open_registry


def serve(
    refs: Annotated[list[str], typer.Argument(help="Versions to serve, e.g. digits-cnn text-minilm@2.")],
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="A pipeline YAML whose serve: and monitor: sections set the defaults."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to bind [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port [8000].")] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Server processes (more than one turns the admin API off)."),
    ] = 1,
    variant: Annotated[
        str | None,
        typer.Option("--variant", help="auto (fastest measured variant that passed), base or a name."),
    ] = None,
    force: Annotated[
        bool | None, typer.Option("--force", help="Serve a named variant even if its gate rejected it.")
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option("--max-batch-size", min=1, help="Rows per batch [32].")
    ] = None,
    max_queue_delay_ms: Annotated[
        float | None, typer.Option("--max-queue-delay-ms", min=0.0, help="Longest wait to fill a batch [2].")
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option("--max-queue", min=1, help="Requests waiting per model before 503 [256].")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, help="Seconds a request may take [10].")
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="Serve HTTPS: a PEM certificate (chain).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option("--ssl-keyfile", help="The certificate's unencrypted PEM private key.")
    ] = None,
    allow_plain_http: Annotated[
        bool | None,
        typer.Option(
            "--allow-plain-http", help="Serve beyond this machine without TLS (a proxy in front has it)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray", help="Serve on this Ray cluster (HOST:PORT of its head) as a Ray Serve application."
        ),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="With --ray: replicas of the deployment [1].")
    ] = None,
    autoscale: Annotated[
        str | None,
        typer.Option(
            "--autoscale", help="With --ray: MIN:MAX replicas, scaled by Ray on the requests in flight."
        ),
    ] = None,
    cpus_per_replica: Annotated[
        float | None,
        typer.Option(
            "--cpus-per-replica", min=0.01, help="With --ray: CPUs Ray reserves for each replica [1]."
        ),
    ] = None,
) -> None:
    """Serve versions over HTTP: Open Inference Protocol v2 (/v2), simple JSON (/v1/models/NAME:predict),
    OpenAI-compatible (/v1/completions, /v1/chat/completions), admin (/admin, token from
    MODELCYCLE_ADMIN_TOKEN), metrics (/metrics)."""
    import uvicorn

    from modelcycle.config import MonitorConfig, ServeConfig, load_config
    from modelcycle.serve import create_app
    from modelcycle.serve.transport import ADMIN_TOKEN, check_exposure, tls_files

    pipeline = load_config(config_file) if config_file is not None else None
    base = pipeline.serve if pipeline is not None else ServeConfig()
    monitoring = pipeline.monitor if pipeline is not None else MonitorConfig()
    given = {
        "host": host,
        "port": port,
        "variant": variant,
        "force_variant": force,
        "max_batch_size": max_batch_size,
        "max_queue_delay_ms": max_queue_delay_ms,
        "max_queue": max_queue,
        "request_timeout_s": timeout,
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "allow_plain_http": allow_plain_http,
    }
    settings = base.model_copy(update={key: value for key, value in given.items() if value is not None})
    cluster = None
    if any(option is not None for option in (ray_address, replicas, autoscale, cpus_per_replica)):
        from modelcycle.cli.serve_ray import cluster_options

        cluster = cluster_options(ray_address, replicas, autoscale, workers, cpus_per_replica)
    token = os.environ.get(ADMIN_TOKEN) or None
    certfile, keyfile = tls_files(settings)
    check_exposure(settings, token, tls=certfile is not None)
    registry = open_registry()
    for ref in refs:
        registry.open(ref)  # unknown references and damaged bundles fail here, before the server starts
    if monitoring.enabled:
        from modelcycle.monitor.live import check_monitoring

        check_monitoring(monitoring, registry)  # and missing keys to the prediction store
    if cluster is not None:
        from modelcycle.cli.serve_ray import serve_on_ray

        serve_on_ray(cluster, refs, settings, monitoring, registry, token)
        return
    scheme = "http" if certfile is None else "https"
    say(
        f"serving {', '.join(refs)} on {scheme}://{settings.host}:{settings.port} "
        f"(variant {settings.variant})",
        style="bold",
    )
    if workers > 1:
        from modelcycle.serve.factory import SPEC, spec_for_workers

        os.environ[SPEC] = spec_for_workers(refs, settings, monitoring)
        factory = "modelcycle.serve.factory:from_environment"
        with _shared_metrics_folder():
            uvicorn.run(
                factory,
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=workers,
                log_level="warning",
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
            )
        return
    app = create_app(registry, refs, settings, admin_token=token, monitoring=monitoring)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )


@contextlib.contextmanager
def _shared_metrics_folder() -> Iterator[None]:
    """The folder where the workers keep their metrics, so that any worker's ``/metrics`` answers for all
    (prometheus-client's multiprocess mode): a new one, removed afterwards. One the user set is theirs to
    empty between runs, as prometheus-client asks."""
    from modelcycle.monitor.metrics import SHARED_DIR

    if os.environ.get(SHARED_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="modelcycle-metrics-") as folder:
        os.environ[SHARED_DIR] = folder
        try:
            yield
        finally:
            del os.environ[SHARED_DIR]
