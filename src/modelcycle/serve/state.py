"""What every route of a server shares (``ServerState``): the served models by name, readiness, settings,
metrics, live monitoring and the registry; and loading the models, which happens in the background after
start-up (``/v2/health/ready`` tells when it is done, or why it failed)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import Request

from modelcycle.config import ServeConfig
from modelcycle.errors import NotFoundError, OverloadedError
from modelcycle.monitor.live import LiveMonitor, Watched
from modelcycle.monitor.metrics import ServerMetrics
from modelcycle.registry import Registry
from modelcycle.serve.batcher import BatchStats
from modelcycle.serve.gateway import Gateway
from modelcycle.serve.served import Lineup, ServedModel
from modelcycle.serve.versions import LoadedVersion, load_version

logger = logging.getLogger(__name__)

Transition = Callable[[ServedModel], Awaitable[None]]


class Cluster(Protocol):
    """The replicas a server is one of (``ray_app.RayCluster``): where a change of line-up is serialised and
    from where it reaches them all."""

    def changing(self) -> AbstractAsyncContextManager[dict[str, Lineup]]:
        """Hold the cluster's one change lock for the block; yields the line-ups as every replica has them."""

    async def publish(self, lineups: dict[str, Lineup]) -> None:
        """Give every replica these models' line-ups (the others' as they are); returns once all have them."""


@dataclass
class ServerState:
    """Everything the routes share: the models by name, readiness, settings, metrics and the registry."""

    registry: Registry
    refs: list[str]
    settings: ServeConfig
    admin_digest: str | None  # the admin token's SHA-256 (``transport.token_digest``); None: admin API off
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    monitor: LiveMonitor | None = None
    explaining: asyncio.Semaphore | None = None  # made in the event loop on first use
    models: dict[str, ServedModel] = field(default_factory=dict)
    ready: bool = False
    load_error: str | None = None
    cluster: Cluster | None = None  # the replicas this server is one of (``modelcycle serve --ray``)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # set when loading ends, done or failed

    def model(self, name: str) -> ServedModel:
        if not self.ready:
            raise OverloadedError("the server is still loading its models")
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"model '{name}' is not served here", hint=f"served: {known}") from None

    async def load(self, ref: str) -> LoadedVersion:
        """Load a version off the event loop (loading and warming take seconds for a large model)."""
        bundle = self.registry.open(ref)
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(
            None,
            lambda: load_version(bundle, self.settings, variant=self.settings.variant, on_batch=self._batch),
        )
        loaded.batcher.start()
        return loaded

    async def load_all(self) -> None:
        """Load every reference the server was started with, then mark it ready; on failure the server stays
        up, not ready, and says why."""
        try:
            for ref in self.refs:
                loaded = await self.load(ref)
                name = loaded.bundle.manifest.name
                if name in self.models:
                    raise NotFoundError(f"{ref}: model '{name}' is given twice")
                self.models[name] = self._served(name, loaded)
                logger.info("serving %s (variant %s)", loaded.bundle.ref, loaded.variant)
            self.describe()
            # Everything loaded so far (torch, transformers, the models) lives as long as the server: moving
            # it out of the collector's reach stops full collections of a large heap from stalling requests.
            gc.collect()
            gc.freeze()
            self.ready = True
        except Exception as error:  # the server stays up and says why it is not ready
            self.load_error = str(error)
            logger.error("could not load the models: %s", error)
        finally:
            self.loaded.set()

    async def change(self, name: str, transition: Transition) -> bool | None:
        """Run an admin ``transition`` of model ``name``. On a cluster, one change at a time: under the
        cluster's lock this replica first takes the line-up every replica has (another replica may have
        changed it), then changes it, then gives every replica the result. Says whether they all took it
        (None: one server). A failed publication is logged, not raised: the change stands on this replica and
        in the registry, and the next change of the model publishes again."""
        served = self.model(name)
        if self.cluster is None:
            await transition(served)
            return None
        async with self.cluster.changing() as current:
            if name in current:
                await served.adopt(current[name])
            await transition(served)
            try:
                await self.cluster.publish({name: served.lineup()})
            except Exception:  # a boundary: Ray's controller may fail in many ways
                logger.exception("the new line-up of %s did not reach every replica", name)
                return False
        return True

    async def adopt(self, lineups: dict[str, Lineup]) -> None:
        """Take line-ups decided elsewhere (a cluster's ``user_config``) once the models are loaded; a model
        this server does not serve is an error (the configuration names another application's models)."""
        await self.loaded.wait()
        if not self.ready:
            raise OverloadedError(f"the models did not load: {self.load_error}")
        for name, lineup in lineups.items():
            await self.model(name).adopt(lineup)

    def _served(self, name: str, loaded: LoadedVersion) -> ServedModel:
        async def load(version: int) -> LoadedVersion:
            return await self.load(f"{name}@{version}")

        return ServedModel(Gateway(name, loaded), load, self.registry, self.describe)

    def _batch(self, ref: str, labels: list[str], stats: BatchStats) -> None:
        """Batch metrics, and predictions by label counted once a batch (not once a request)."""
        model, _, version = ref.partition("@")
        self.metrics.batch(model, stats.rows, stats.queue_seconds)
        for label, count in Counter(labels).items():
            self.metrics.predicted(model, version, label, count)

    def watched(self) -> list[Watched]:
        """The versions that answer requests (primary and canary), as monitoring sees them."""
        return [
            Watched(
                name,
                loaded.version,
                loaded.bundle.manifest.task,
                loaded.predictor.encoder.classes_ or None,
                loaded.reference,
                loaded.embed_stored,
            )
            for name, served in self.models.items()
            for loaded in (served.gateway.primary, served.gateway.canary)
            if loaded is not None
        ]

    def refresh_metrics(self) -> None:
        """Bring the values kept outside the metrics (queue depths, the store's counts) into them."""
        generation = self.metrics.generation
        for name, served in self.models.items():
            versions = served.gateway.versions()
            self.metrics.queue_depth.labels(name).set(sum(loaded.batcher.depth for loaded in versions))
            engines = [loaded.engine for loaded in versions if loaded.engine is not None]
            if engines:
                generation.running.labels(name).set(sum(engine.running() for engine in engines))
                generation.waiting.labels(name).set(sum(engine.waiting() for engine in engines))
                generation.cache_usage.labels(name).set(max(engine.cache_usage() for engine in engines))
        self.metrics.sync_counts()

    def describe(self) -> None:
        """Refresh the model-info gauge after any change of versions."""
        self.metrics.show_versions(
            [
                (name, str(loaded.version), role, loaded.variant, loaded.runtime)
                for name, served in self.models.items()
                for role, loaded in (
                    ("primary", served.gateway.primary),
                    ("canary", served.gateway.canary),
                    ("shadow", served.gateway.shadow),
                )
                if loaded is not None
            ]
        )


def serving_state(request: Request) -> ServerState:
    """The state of the server ``request`` reached (set on the application by ``create_app``)."""
    state: ServerState = request.app.state.serving
    return state
