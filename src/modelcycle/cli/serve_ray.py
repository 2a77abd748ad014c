"""``modelcycle serve REF… --ray ADDRESS [--replicas N | --autoscale MIN:MAX]``: the served models as a Ray
Serve application on a running cluster (``modelcycle.serve.ray_app``), behind Ray's HTTP proxy on
``--host``/``--port``. The command stays in the foreground, like ``serve run``; Ctrl-C (or SIGTERM) removes
the application from the cluster and leaves the cluster running."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from modelcycle.cli.ray_head import check_head, join_cluster
from modelcycle.cli.render import say
from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.errors import ConfigError, MissingDependencyError
from modelcycle.registry import Registry
from modelcycle.serve.transport import check_exposure

if TYPE_CHECKING:
    from modelcycle.serve.ray_config import ClusterSpec

START_TIMEOUT_S = 600.0  # loading a language model on every replica takes minutes on a small machine


@dataclass(frozen=True)
class ClusterOptions:
    """``--ray``, ``--replicas`` and ``--autoscale``, checked."""

    address: str
    replicas: int
    autoscale: tuple[int, int] | None
    cpus_per_replica: float


def cluster_options(
    address: str | None,
    replicas: int | None,
    autoscale: str | None,
    workers: int,
    cpus_per_replica: float | None,
) -> ClusterOptions | None:
    """The cluster options, checked before anything is opened (the head node answers, too); None without
    ``--ray`` (then ``--replicas`` and ``--autoscale`` are errors: they only mean something to Ray)."""
    if address is None:
        given = {"--replicas": replicas, "--autoscale": autoscale, "--cpus-per-replica": cpus_per_replica}
        for flag, value in given.items():
            if value is not None:
                raise ConfigError(f"{flag} needs --ray ADDRESS", parameter=flag)
        return None
    if workers > 1:
        raise ConfigError("--workers is for one machine; with --ray give --replicas", parameter="--workers")
    if replicas is not None and autoscale is not None:
        raise ConfigError("give --replicas or --autoscale, not both", parameter="--autoscale")
    bounds = None
    if autoscale is not None:
        match = re.fullmatch(r"(\d+):(\d+)", autoscale.strip())
        if match is None or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(
                f"'{autoscale}' is not MIN:MAX replicas with 1 <= MIN <= MAX", parameter="--autoscale"
            )
        bounds = int(match[1]), int(match[2])
    check_head(address)
    return ClusterOptions(address, replicas or 1, bounds, cpus_per_replica or 1.0)


def serve_on_ray(
    cluster: ClusterOptions,
    refs: list[str],
    settings: ServeConfig,
    monitoring: MonitorConfig,
    registry: Registry,
    token: str | None,
) -> None:
    """Deploy, say where it answers, and keep it until interrupted."""
    try:
        import ray
        from ray import serve

        from modelcycle.serve.ray_config import APPLICATION
        from modelcycle.serve.ray_control import deploy, proxy_options, running_lineups
    except ImportError as error:
        raise MissingDependencyError(
            f"--ray needs Ray Serve ({error})", hint="pip install 'modelcycle[ray]'"
        ) from None
    spec = _cluster_spec(cluster, refs, settings, monitoring, registry, token)
    address = cluster.address
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    join_cluster(address)
    try:
        http: dict[str, Any] = {"host": settings.host, "port": settings.port}
        if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
            http |= {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}
        serve.start(http_options=http)
        if running_lineups() is not None:
            raise ConfigError(
                f"the Ray cluster at {address} already serves an application '{APPLICATION}'",
                hint="stop the command that started it (Ctrl-C), or serve your models from that one",
                parameter="--ray",
            )
        proxy = proxy_options()  # the proxy keeps the options of whoever started Serve on the cluster first
        host, port = str(proxy.get("host", settings.host)), int(proxy.get("port", settings.port))
        tls = bool(proxy.get("ssl_certfile"))
        check_exposure(settings.model_copy(update={"host": host}), token, tls=tls)
        if (host, port) != (settings.host, settings.port):
            say(
                f"Ray Serve was started on this cluster before, on {host}:{port}: it answers there",
                style="yellow",
            )
        count = f"{spec.autoscale[0]}..{spec.autoscale[1]}" if spec.autoscale else str(spec.replicas)
        plural = "" if count == "1" else "s"
        say(
            f"deploying {', '.join(refs)} on the Ray cluster at {address} ({count} replica{plural})",
            style="bold",
        )
        try:
            deploy(spec, registry, start_timeout_s=START_TIMEOUT_S)
            scheme = "https" if tls else "http"
            say(f"serving on {scheme}://{host}:{port} through Ray Serve; Ctrl-C removes it")
            _wait_for_interrupt()
        except (RuntimeError, TimeoutError) as error:
            raise ConfigError(
                f"the Ray Serve application did not start: {error}", parameter="--ray"
            ) from None
        finally:  # what this command submitted, whether it started or not
            say("removing the application from the cluster")
            serve.delete(APPLICATION)
    finally:
        ray.shutdown()


def _cluster_spec(
    cluster: ClusterOptions,
    refs: list[str],
    settings: ServeConfig,
    monitoring: MonitorConfig,
    registry: Registry,
    token: str | None,
) -> ClusterSpec:
    """What every replica starts with: files as absolute paths (the same on every node), the admin token as
    its digest; and a word on what a cluster of several machines cannot use (SQLite files) or should not be
    given (a password inside a URL: the cluster's configuration shows it to whoever reads it)."""
    from modelcycle.monitor.live import store_path
    from modelcycle.serve.ray_config import ClusterSpec
    from modelcycle.serve.transport import token_digest

    store, encryption = store_path(monitoring, registry), monitoring.encryption
    changes: dict[str, Any] = {}
    if store.path is not None:  # a file: the same absolute path on every node
        changes["store"] = str(store.path.resolve())
    if encryption.key_file is not None:
        changes["encryption"] = encryption.model_copy(
            update={"key_file": str(Path(encryption.key_file).resolve())}
        )
    monitoring = monitoring.model_copy(update=changes)
    on_files = [
        what
        for what, on_file in (
            ("the registry (MODELCYCLE_DATABASE_URL)", registry.url.startswith("sqlite")),
            ("the prediction store (monitor.store)", monitoring.enabled and store.path is not None),
        )
        if on_file
    ]
    if on_files:
        kind = "is a SQLite file" if len(on_files) == 1 else "are SQLite files"
        say(
            f"{' and '.join(on_files)} {kind}: fine for nodes of one machine; replicas on several machines "
            "need PostgreSQL",
            style="yellow",
        )
    urls = [url for url in (registry.url, store.url) if url is not None and "://" in url]
    if any(make_url(url).password for url in urls):
        say(
            "a database URL holds a password, which the cluster's Serve configuration shows to whoever reads "
            "it: give it to the nodes as PGPASSWORD or ~/.pgpass instead",
            style="yellow",
        )
    return ClusterSpec(
        refs=refs,
        settings=settings.model_dump(mode="json"),
        monitor=monitoring.model_dump(mode="json"),
        home=str(registry.home.resolve()),
        database_url=registry.url,
        admin_digest=None if token is None else token_digest(token),
        replicas=cluster.replicas,
        autoscale=cluster.autoscale,
        cpus_per_replica=cluster.cpus_per_replica,
    )


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (which ``_interrupt_on_sigterm`` turns into the same)."""
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(1.0)


def _interrupt_on_sigterm(_signal: int, _frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C, from the start: a command stopped while it deploys removes what it submitted too."""
    raise KeyboardInterrupt
