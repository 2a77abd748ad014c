"""Serving on a Ray cluster (``modelcycle serve REF… --ray ADDRESS``): the served models become one Ray Serve
application whose deployment, ``ModelServer``, runs our own application in every replica (the three
protocols, the adaptive batcher, variants, monitoring) behind Ray's HTTP proxy, so the URLs and clients are
the ones of a single server. Ray places, scales and replaces the replicas; we keep what the versions do.

The registry is the source of truth for versions, and Ray Serve's own mechanism carries the line-up to every
replica: it is the deployment's ``user_config``, and each replica's ``reconfigure`` adopts it. An admin call
reaches one replica through the proxy; that replica makes the change and records it (``served.ServedModel``),
then publishes the model's new line-up (``ray_control.publish``), and the call returns once every replica has
it. Changes are made one at a time across the cluster (``RayCluster``, under a lock of the registry's), each
to the line-up the one before left. Ray hands a replica it starts later (scaling up, replacing one that
died) the current line-up before it takes traffic; only then does the replica become a Prometheus scrape
target (``scrape_target``).

Everything a replica reads (the registry home with its artifacts, the prediction store) must be reachable from
every node: a shared folder, and PostgreSQL for the databases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.registry import Registry, parse_ref
from modelcycle.serve.app import create_app
from modelcycle.serve.ray_config import APPLICATION, DEPLOYMENT, TARGETS_FOLDER, ClusterSpec
from modelcycle.serve.ray_control import LINEUP_LOCK, publish, running_lineups
from modelcycle.serve.scrape_target import ScrapeTarget
from modelcycle.serve.served import Lineup
from modelcycle.serve.state import ServerState

logger = logging.getLogger(__name__)


class RayCluster:
    """The replicas of our deployment, as a server's admin changes see them (``state.Cluster``): one change at
    a time under the registry's ``LINEUP_LOCK``, published through Ray Serve's ``user_config``."""

    def __init__(self, registry: Registry, spec: ClusterSpec) -> None:
        self.registry, self.spec = registry, spec

    @contextlib.asynccontextmanager
    async def changing(self) -> AsyncIterator[dict[str, Lineup]]:
        lock = self.registry.exclusive(LINEUP_LOCK)
        await asyncio.to_thread(lock.__enter__)  # blocking calls (database, controller) off the event loop
        try:
            deployed = await asyncio.to_thread(running_lineups)
            yield deployed or {}
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)

    async def publish(self, lineups: dict[str, Lineup]) -> None:
        await asyncio.to_thread(publish, self.spec, lineups)


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
            _current_refs(spec.refs),
            ServeConfig.model_validate(spec.settings),
            admin_digest=spec.admin_digest,
            monitoring=MonitorConfig.model_validate(spec.monitor),
        )
        state: ServerState = app.state.serving
        state.cluster = RayCluster(state.registry, spec)
        self.state = state
        return app

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Ray hands the line-up here at start (before any traffic) and after every admin change."""
        state = self.state
        assert state is not None  # built before Ray calls reconfigure
        lineups = {name: Lineup.model_validate(value) for name, value in config.get("lineups", {}).items()}
        await state.adopt(lineups)
        if self.targets is None:  # the first line-up taken: from here on this replica answers
            replica = serve.get_replica_context().replica_id.unique_id
            folder = Path(self.spec.home).joinpath(*TARGETS_FOLDER)
            self.targets = ScrapeTarget(state, folder, APPLICATION, replica)

    async def check_health(self) -> None:
        """Ray's health check: a replica whose models failed to load is replaced."""
        if self.state is not None and self.state.load_error is not None:
            raise RuntimeError(f"the models did not load: {self.state.load_error}")

    def __del__(self) -> None:
        if self.targets is not None:
            self.targets.close()


def _current_refs(refs: list[str]) -> list[str]:
    """The references with each model's primary as deployed now, so a replica Ray starts after promotions
    loads the version it is about to serve rather than first the one the command named (twice the time and
    memory, for a language model); as given when the controller has no line-up to say."""
    try:
        deployed = running_lineups() or {}
    except Exception:  # a boundary: the line-up still arrives through reconfigure, after one more load
        logger.warning("could not read the deployed line-up; loading the references as given", exc_info=True)
        return refs
    current = []
    for ref in refs:
        name = parse_ref(ref).name
        current.append(f"{name}@{deployed[name].primary}" if name in deployed else ref)
    return current


def application(args: dict[str, Any]) -> serve.Application:
    """The builder ``ray_config.IMPORT_PATH`` names: Ray calls it with the application config's ``args``."""
    return serve.deployment(name=DEPLOYMENT)(ModelServer).bind(args["spec"])
