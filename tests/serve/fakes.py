"""Stand-ins for what the serving units are handed — a loaded version, a loader, the registry — so that
routing and version transitions are tested alone, without a model or a registry on disk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from modelcycle.errors import ModelcycleError, NotFoundError


@dataclass(eq=False)
class FakeVersion:
    """A loaded version: answers ``outputs`` (or raises ``error``); its own batcher, closed once retired."""

    version: int
    outputs: np.ndarray = field(default_factory=lambda: np.array([[0.9, 0.1]]))
    error: ModelcycleError | None = None
    closed: bool = False
    asked: int = 0
    predictor: Any = field(default_factory=lambda: SimpleNamespace(encoder="target encoder"))

    @property
    def batcher(self) -> FakeVersion:
        return self

    async def infer(self, inputs: Any, timeout: float) -> np.ndarray:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return self.outputs

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeLoader:
    """Loads the versions in ``available`` (a fresh object each time, as the server does), else 404."""

    available: set[int]
    loaded: list[FakeVersion] = field(default_factory=list)

    async def __call__(self, version: int) -> FakeVersion:
        await asyncio.sleep(0)  # loading yields to the event loop, as the server's executor does
        if version not in self.available:
            raise NotFoundError(f"version {version} is not in the registry")
        fresh = FakeVersion(version)
        self.loaded.append(fresh)
        return fresh


@dataclass
class FakeLedger:
    """The registry as transitions see it: the aliases set and the events logged, in order."""

    aliases: list[tuple[str, str, str | None]] = field(default_factory=list)
    events: list[tuple[str, str, int | None, dict[str, Any] | None]] = field(default_factory=list)

    def set_alias(self, ref: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> None:
        self.aliases.append((ref, alias, actor))

    def log_event(
        self,
        name: str,
        kind: str,
        *,
        version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.events.append((name, kind, version, details))
