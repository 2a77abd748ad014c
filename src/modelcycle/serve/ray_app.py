"""Serving on a Ray cluster (``modelcycle serve REF… --ray ADDRESS``): the served models become one Ray Serve
application whose deployment runs our own application in every replica (the three protocols, the adaptive
batcher, variants, monitoring) behind Ray's HTTP proxy, so the URLs and clients are the ones of a single
server. Ray places, scales and replaces the replicas; we keep what the versions do.

The registry is the source of truth for versions, and Ray Serve's own mechanism carries the line-up to every
replica: it is the deployment's ``user_config``, and each replica's ``reconfigure`` adopts it. An admin call
reaches one replica through the proxy; that replica makes the change and records it (``served.ServedModel``),
then submits the application's configuration again with the new line-up. Ray sees that only the
``user_config`` changed and reconfigures the running replicas in place (no restart, no failed request), and
the call returns once every replica has the new line-up. A replica Ray starts later (scaling up, replacing
one that died) is handed the current line-up before it takes traffic.

The configuration is submitted the declarative way (an application config naming an import path, as
``serve deploy`` does), because only then does Ray keep the replicas when the ``user_config`` changes; other
applications on the cluster are kept as they are.

Every replica also serves its own metrics on a port of its node and names it in a Prometheus file-based
discovery file under ``<registry home>/ray/targets`` (``deploy/prometheus-ray.yml``), so one scrape target per
replica covers them all. Everything a replica reads (the registry home with its artifacts, the prediction
store) must be reachable from every node: a shared folder, and PostgreSQL for the databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import ray
from fastapi import FastAPI
from prometheus_client import make_wsgi_app
from pydantic import BaseModel, Field
from ray import serve
from ray.serve._private.client import ServeControllerClient
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.errors import OverloadedError
from modelcycle.registry import Registry
from modelcycle.serve.app import create_app
from modelcycle.serve.served import Lineup
from modelcycle.serve.state import ServerState

logger = logging.getLogger(__name__)

APPLICATION = "modelcycle"
DEPLOYMENT = "ModelServer"
IMPORT_PATH = "modelcycle.serve.ray_app:application"
PUBLISH_TIMEOUT_S = 60.0  # an admin change waits this long for every replica to take it


class ClusterSpec(BaseModel):
    """What every replica is started with (the application's ``args``, JSON): the references, the serve and
    monitor sections, where the registry lives, how many replicas; the admin token only as its digest."""

    refs: list[str]
    settings: dict[str, Any]
    monitor: dict[str, Any]
    home: str  # the registry home (artifacts): a folder every node reads at the same path
    database_url: str | None = None  # the registry database; None: SQLite under ``home``
    admin_digest: str | None = None
    replicas: int = Field(default=1, ge=1)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, scaled by Ray on ongoing requests
    cpus_per_replica: float = Field(default=1.0, gt=0)

    def deployment(self, lineups: dict[str, Lineup]) -> dict[str, Any]:
        """The deployment's part of the application config: scale, resources, and the line-up as its
        ``user_config``."""
        settings = ServeConfig.model_validate(self.settings)
        scale: dict[str, Any] = {"num_replicas": self.replicas}
        if self.autoscale is not None:
            low, high = self.autoscale
            scale = {
                "autoscaling_config": {
                    "min_replicas": low,
                    "max_replicas": high,
                    "initial_replicas": low,
                    "target_ongoing_requests": settings.max_batch_size,
                }
            }
        return {
            "name": DEPLOYMENT,
            **scale,
            # the batcher needs many requests in flight to fill batches; past its queue bound it answers 503
            "max_ongoing_requests": settings.max_queue + settings.max_batch_size,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            "user_config": {"lineups": {name: lineup.model_dump() for name, lineup in lineups.items()}},
        }


def application_config(spec: ClusterSpec, lineups: dict[str, Lineup]) -> dict[str, Any]:
    """Our application as a Ray Serve application config (the declarative form ``serve deploy`` takes)."""
    env = {"MODELCYCLE_DATABASE_URL": spec.database_url} if spec.database_url else {}
    return {
        "name": APPLICATION,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": {"spec": spec.model_dump(mode="json")},
        "runtime_env": {"env_vars": env},
        "deployments": [spec.deployment(lineups)],
    }


def _client() -> ServeControllerClient:
    """The handle on the cluster's Serve controller that ``serve deploy`` itself uses (Ray's own, not public:
    the declarative config has no public Python entry point yet; ``ray`` is pinned to the tested release)."""
    client = _get_global_client()
    if client is None:  # connected with ray.init, and Serve started: never None then
        raise RuntimeError("Ray Serve is not running on this cluster")
    return client


def submit(spec: ClusterSpec, lineups: dict[str, Lineup], *, wait: bool) -> None:
    """Submit our application to the cluster this process is connected to, keeping the other applications
    as deployed; with ``wait``, return once every replica runs it (a ``TimeoutError`` after 60 s)."""
    client = _client()
    details = client.get_serve_details()
    others = [
        app["deployed_app_config"]
        for name, app in details.get("applications", {}).items()
        if name != APPLICATION and app.get("deployed_app_config")
    ]
    config = ServeDeploySchema.model_validate(
        {
            "http_options": details.get("http_options", {}),
            "proxy_location": details.get("proxy_location", "EveryNode"),
            "applications": [*others, application_config(spec, lineups)],
        }
    )
    client.deploy_apps(config, _blocking=wait)


@serve.ingress()
class ModelServer:
    """One replica: our application over the spec's references, adopting the line-up Ray hands it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = ClusterSpec.model_validate(spec)
        self.state: ServerState | None = None
        self.targets: ScrapeTarget | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The application, built in the replica (nothing of it crosses the cluster but the spec)."""
        spec = self.spec
        app = create_app(
            Registry(spec.home, database_url=spec.database_url),
            spec.refs,
            ServeConfig.model_validate(spec.settings),
            admin_digest=spec.admin_digest,
            monitoring=MonitorConfig.model_validate(spec.monitor),
        )
        state: ServerState = app.state.serving
        state.publish = self._publish
        self.state = state
        self.targets = ScrapeTarget(state, Path(spec.home) / "ray" / "targets")
        return app

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Ray hands the line-up here at start (before any traffic) and after every admin change."""
        assert self.state is not None  # built before Ray calls reconfigure
        lineups = {name: Lineup.model_validate(value) for name, value in config.get("lineups", {}).items()}
        await self.state.adopt(lineups)

    def check_health(self) -> None:
        """Ray's health check: a replica whose models failed to load is replaced."""
        if self.state is not None and self.state.load_error is not None:
            raise RuntimeError(f"the models did not load: {self.state.load_error}")

    async def _publish(self, lineups: dict[str, Lineup]) -> None:
        """After an admin change on this replica: every replica takes the new line-ups through Ray."""
        try:
            await asyncio.to_thread(submit, self.spec, lineups, wait=True)
        except Exception as error:  # the change stands here and in the registry; the others may lag
            raise OverloadedError(
                f"the change is recorded, but the cluster did not confirm it on every replica: {error}"
            ) from error

    def __del__(self) -> None:
        if self.targets is not None:
            self.targets.close()


def application(args: dict[str, Any]) -> serve.Application:
    """The application builder named by ``IMPORT_PATH``: Ray calls it with the config's ``args``."""
    return serve.deployment(name=DEPLOYMENT)(ModelServer).bind(args["spec"])


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds per replica)."""


class ScrapeTarget:
    """This replica's metrics on a port of its own node, named in a Prometheus file-based discovery file
    (``<folder>/<replica>.json``) while the replica lives. A replica that dies without closing leaves its file
    behind: Prometheus then shows that target as down until the file is removed."""

    def __init__(self, state: ServerState, folder: Path) -> None:
        exposition = make_wsgi_app(state.metrics.registry)

        def metrics(environ: dict[str, Any], start_response: Any) -> Any:
            state.refresh_metrics()  # queue depths and the store's counts, as /metrics does
            return exposition(environ, start_response)

        host = node_address()
        self.server: WSGIServer = make_server(host, 0, metrics, handler_class=_Quiet)
        threading.Thread(target=self.server.serve_forever, name="modelcycle-metrics", daemon=True).start()
        replica = serve.get_replica_context().replica_id.unique_id
        self.path = folder / f"{APPLICATION}-{replica}.json"
        target = {
            "targets": [f"{host}:{self.server.server_port}"],
            "labels": {"replica": replica, "application": APPLICATION, "node": host},
        }
        folder.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(f".{os.getpid()}.tmp")  # Prometheus reads *.json only: no half file
        staged.write_text(json.dumps([target]))
        staged.replace(self.path)

    def close(self) -> None:
        self.server.shutdown()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def node_address() -> str:
    """The address Ray knows this process's node by (what ``ray start --node-ip-address`` set)."""
    node = ray.get_runtime_context().get_node_id()
    return next(str(info["NodeManagerAddress"]) for info in ray.nodes() if info["NodeID"] == node)


def proxy_address() -> tuple[str, int]:
    """Where Ray's HTTP proxy listens: set by whoever started Serve on the cluster first."""
    options = _client().get_serve_details().get("http_options", {})
    return str(options.get("host", "127.0.0.1")), int(options.get("port", 8000))


def wait_running(timeout_s: float) -> None:
    """Wait until our application runs on the cluster; a failed deployment raises with Ray's message."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(APPLICATION)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(status.message or status.status)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the application did not start within {timeout_s:.0f} s")
        time.sleep(0.5)


def deploy(spec: ClusterSpec, registry: Registry, *, start_timeout_s: float) -> dict[str, Lineup]:
    """Run our application on the cluster this process is connected to, each model's primary the version its
    reference names now; returns once every replica answers (or raises with Ray's reason)."""
    lineups = {}
    for ref in spec.refs:
        manifest = registry.open(ref).manifest
        lineups[manifest.name] = Lineup(primary=manifest.version)
    submit(spec, lineups, wait=False)
    wait_running(start_timeout_s)
    return lineups
