"""What answers requests for one model name, and the only place its versions change: ``promote``, ``canary``,
``shadow`` and ``rollback``. Every transition loads (and warms) the incoming version before anything moves,
so a version that cannot load changes nothing; then it swaps the gateway's references (atomic in the event
loop), lets the replaced version drain what it accepted before closing it (so no request fails), and records
the change in the registry: the ``production`` alias follows the primary, and canaries, shadows and rollbacks
are events. The admin API calls these methods (and ``modelcycle update`` calls the admin API).

On a Ray cluster every replica holds its own ``ServedModel``: the replica that took the admin call makes the
change and records it, then the new ``Lineup`` goes to every replica through Ray Serve's ``user_config``,
and each one ``adopt``s it, which loads and swaps as the transitions do but records nothing (it was
recorded once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field

from modelcycle.errors import ConfigError, NotFoundError
from modelcycle.registry.lookup import PRODUCTION
from modelcycle.serve.gateway import Gateway
from modelcycle.serve.versions import LoadedVersion

Loader = Callable[[int], Awaitable[LoadedVersion]]  # a version number → that version, loaded and warmed


class Ledger(Protocol):
    """Where version changes are recorded: the registry (``modelcycle.registry.Registry``)."""

    def set_alias(self, ref: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> Any:
        """Point ``alias`` at the version ``ref`` names."""

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
        """Append an event to the model's history."""


class Lineup(BaseModel):
    """Which versions of one model answer (primary, canary with its share, shadow) and the earlier primaries
    (for ``rollback``): what every replica of a cluster must agree on, as JSON."""

    primary: int = Field(ge=1)
    canary: int | None = Field(default=None, ge=1)
    canary_percent: float = Field(default=0.0, ge=0, le=100)
    shadow: int | None = Field(default=None, ge=1)
    previous: list[int] = Field(default_factory=list)


@dataclass
class ServedModel:
    """One model name on a server: its ``gateway`` (the line-up that routes requests), the earlier primaries
    (for ``rollback``), how to load a version (``load``), where changes are recorded (``ledger``) and whom
    to tell after each (``changed``: the server's model-info metric)."""

    gateway: Gateway
    load: Loader
    ledger: Ledger
    changed: Callable[[], None] = lambda: None
    previous: list[int] = field(default_factory=list)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    _transition: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.gateway.name

    async def promote(self, version: int, *, actor: str) -> None:
        """Make ``version`` the primary (a canary of that version stops being one) and point ``production``
        at it; the old primary is kept for ``rollback``."""
        async with self._transition:  # one change at a time: each reads the line-up it replaces
            gateway = self.gateway
            incoming = await self._version(version)
            outgoing = gateway.primary
            if incoming is not outgoing:
                gateway.primary = incoming  # new requests go to it from here on
                self.previous.append(outgoing.version)
                if gateway.canary is incoming:
                    gateway.canary, gateway.canary_percent = None, 0.0
                self._retire(outgoing)
            self.ledger.set_alias(
                f"{self.name}@{version}", PRODUCTION, actor=actor, reason="promoted on the server"
            )
            self.changed()

    async def canary(self, version: int, percent: float, *, actor: str) -> None:
        """Send ``percent`` of the traffic to ``version``; 0 ends the canary (all traffic on the primary)."""
        async with self._transition:  # one change at a time: each reads the line-up it replaces
            gateway = self.gateway
            if version == gateway.primary.version:
                raise ConfigError(f"version {version} is already the primary of '{self.name}'")
            old = gateway.canary
            if percent == 0:
                gateway.canary, gateway.canary_percent = None, 0.0
            else:
                gateway.canary, gateway.canary_percent = await self._version(version), percent
            self._retire(old)
            self.ledger.log_event(
                self.name, "canary", version=version, actor=actor, details={"percent": percent}
            )
            self.changed()

    async def shadow(self, version: int | None, *, actor: str) -> None:
        """Mirror every answered request to ``version`` (None: stop), counting anew how often it disagrees."""
        async with self._transition:  # one change at a time: each reads the line-up it replaces
            gateway = self.gateway
            old = gateway.shadow
            gateway.shadow = None if version is None else await self._version(version)
            gateway.shadow_requests = gateway.shadow_disagreements = 0
            self._retire(old)
            self.ledger.log_event(self.name, "shadow", version=version, actor=actor)
            self.changed()

    async def rollback(self, *, actor: str) -> None:
        """Back to the version that was primary before the last promotion, with no canary; ``production``
        follows."""
        async with self._transition:  # one change at a time: each reads the line-up it replaces
            if not self.previous:
                raise NotFoundError(f"'{self.name}' has no earlier primary on this server to roll back to")
            gateway, target = self.gateway, self.previous[-1]
            incoming = await self._version(target)
            outgoing, old_canary = gateway.primary, gateway.canary
            gateway.primary, gateway.canary, gateway.canary_percent = incoming, None, 0.0
            self.previous.pop()
            self._retire(outgoing)
            self._retire(old_canary)
            self.ledger.set_alias(
                f"{self.name}@{target}", PRODUCTION, actor=actor, reason="rolled back on the server"
            )
            self.ledger.log_event(
                self.name, "rollback", version=target, actor=actor, details={"from_version": outgoing.version}
            )
            self.changed()

    def lineup(self) -> Lineup:
        """The line-up as it stands."""
        gateway = self.gateway
        canary = gateway.canary
        return Lineup(
            primary=gateway.primary.version,
            canary=None if canary is None else canary.version,
            canary_percent=gateway.canary_percent if canary is not None else 0.0,
            shadow=None if gateway.shadow is None else gateway.shadow.version,
            previous=list(self.previous),
        )

    async def adopt(self, lineup: Lineup) -> None:
        """Take ``lineup`` as it is, a change made and recorded elsewhere (another replica): load what is not
        in memory first (if one cannot load, what was loaded for it is closed and nothing changes), swap,
        retire what left."""
        async with self._transition:
            gateway = self.gateway
            wanted = {version for version in (lineup.primary, lineup.canary, lineup.shadow) if version}
            on_hand = {loaded.version: loaded for loaded in gateway.versions()}
            fresh: list[LoadedVersion] = []
            try:
                for number in sorted(version for version in wanted if version not in on_hand):
                    fresh.append(await self.load(number))
                    on_hand[number] = fresh[-1]
            except BaseException:
                for loaded in fresh:
                    self._retire(loaded)
                raise
            leaving = gateway.versions()
            gateway.primary = on_hand[lineup.primary]
            gateway.canary = None if lineup.canary is None else on_hand[lineup.canary]
            gateway.canary_percent = lineup.canary_percent if gateway.canary is not None else 0.0
            shadow = None if lineup.shadow is None else on_hand[lineup.shadow]
            if shadow is not gateway.shadow:
                gateway.shadow_requests = gateway.shadow_disagreements = 0
            gateway.shadow = shadow
            self.previous = list(lineup.previous)
            for loaded in leaving:
                self._retire(loaded)
            self.changed()

    async def close(self) -> None:
        """Drain and close every version, after the requests each accepted and the shadow copies."""
        for loaded in self.gateway.versions():
            await loaded.close()
        await self.gateway.settle()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _version(self, version: int) -> LoadedVersion:
        """The version in memory if the line-up holds it already, else freshly loaded and warmed."""
        for loaded in self.gateway.versions():
            if loaded.version == version:
                return loaded
        return await self.load(version)

    def _retire(self, loaded: LoadedVersion | None) -> None:
        """Let a replaced version finish what it accepted, then close it (in the background); one still in
        the line-up in another role stays."""
        if loaded is None or any(loaded is live for live in self.gateway.versions()):
            return
        task = asyncio.get_running_loop().create_task(loaded.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
