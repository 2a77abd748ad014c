"""Talking to a Ray cluster's Serve controller for ``modelcycle serve --ray``: deploy our application, publish
a changed line-up to every replica, and say where Ray's proxy listens.

A change of line-up is made under the registry's lock ``LINEUP_LOCK`` (held by ``ray_app.RayCluster``), so
changes made on different replicas at once are applied one after the other, each to the line-up the one
before left: the replica reads the line-ups as deployed, replaces the model it changed and submits the whole
configuration again, keeping the cluster's other applications and its settings (target capacity, proxy and
gRPC options) as deployed. Ray sees that only the ``user_config`` changed and reconfigures the running
replicas in place.

The controller is reached through the client ``serve deploy`` itself uses (Ray's own, not public: the
declarative config has no public Python entry point yet; ``ray`` is pinned to the tested release)."""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve._private.client import ServeControllerClient
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from modelcycle.registry import Registry
from modelcycle.serve.ray_config import APPLICATION, ClusterSpec, application_config, deployed_lineups
from modelcycle.serve.served import Lineup

LINEUP_LOCK = "modelcycle serve --ray: line-up"
KEPT_SETTINGS = ("proxy_location", "http_options", "grpc_options", "target_capacity")


def _client() -> ServeControllerClient:
    client = _get_global_client()
    if client is None:  # connected with ray.init, and Serve started: never None then
        raise RuntimeError("Ray Serve is not running on this cluster")
    return client


def _submit(spec: ClusterSpec, lineups: dict[str, Lineup], *, wait: bool, update: bool = False) -> None:
    """Submit our application with ``lineups``, the other applications and the settings as deployed; with
    ``update``, ``lineups`` change those of our deployed application (the others stay as they are). With
    ``wait``, return once every application runs it (Ray's own wait: a ``TimeoutError`` after 60 s). One
    read of the cluster's details serves all of it."""
    client = _client()
    details = client.get_serve_details()
    applications = details.get("applications", {})
    if update:
        deployed = _lineups_of(applications.get(APPLICATION))
        if deployed is None:
            raise RuntimeError(f"the application '{APPLICATION}' is not deployed on this cluster")
        lineups = deployed | lineups
    others = [
        app["deployed_app_config"]
        for name, app in applications.items()
        if name != APPLICATION and app.get("deployed_app_config")
    ]
    settings = {key: details[key] for key in KEPT_SETTINGS if details.get(key) is not None}
    config = {**settings, "applications": [*others, application_config(spec, lineups)]}
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=wait)


def _lineups_of(application: dict[str, Any] | None) -> dict[str, Lineup] | None:
    """The line-ups in our application's details as deployed; None when it is not deployed."""
    if application is None or not application.get("deployed_app_config"):
        return None
    return deployed_lineups(application["deployed_app_config"])


def running_lineups() -> dict[str, Lineup] | None:
    """The line-ups of our application as deployed on the cluster; None when it does not run there."""
    return _lineups_of(_client().get_serve_details().get("applications", {}).get(APPLICATION))


def publish(spec: ClusterSpec, changed: dict[str, Lineup]) -> None:
    """Give every replica the ``changed`` line-ups (the others as deployed); returns once every replica has
    them. The caller holds ``LINEUP_LOCK``."""
    _submit(spec, changed, wait=True, update=True)


def deploy(spec: ClusterSpec, registry: Registry, *, start_timeout_s: float) -> None:
    """Run our application on the cluster this process is connected to, each model's primary the version its
    reference names now; returns once every replica answers (or raises with Ray's reason)."""
    lineups = {}
    for ref in spec.refs:
        manifest = registry.open(ref).manifest
        lineups[manifest.name] = Lineup(primary=manifest.version)
    _submit(spec, lineups, wait=False)
    _wait_running(start_timeout_s)


def _wait_running(timeout_s: float) -> None:
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


def proxy_options() -> dict[str, Any]:
    """How Ray's HTTP proxy listens (host, port, TLS files): set by whoever started Serve on the cluster."""
    options = _client().get_serve_details().get("http_options") or {}
    return dict(options)
