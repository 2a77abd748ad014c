"""The gateway of one served model: which loaded version answers a request — a pinned version, else the canary
for its share of traffic, else the primary — and the copy of each answered request sent to the shadow, whose
answer is compared with the primary's and discarded. It only reads its line-up; the served model changes it
(``modelcycle.serve.served``), by swapping references, which is atomic in the event loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from modelcycle.errors import ModelcycleError, NotFoundError
from modelcycle.serve.batcher import Tensors
from modelcycle.serve.versions import LoadedVersion

Encoder = Callable[[LoadedVersion], Tensors]  # a request in a version's own terms (a canary may differ)


@dataclass
class Gateway:
    """The line-up of one model's versions and how a request picks one. ``draw`` is the uniform [0, 1)
    source of the canary split (seedable in tests)."""

    name: str
    primary: LoadedVersion
    canary: LoadedVersion | None = None
    canary_percent: float = 0.0
    shadow: LoadedVersion | None = None
    shadow_requests: int = 0
    shadow_disagreements: int = 0
    draw: Callable[[], float] = random.random
    _mirrors: set[asyncio.Task[None]] = field(default_factory=set)

    def route(self, version: int | None = None) -> LoadedVersion:
        """The version that answers: ``version`` if it is loaded (primary, canary or shadow), else the canary
        for ``canary_percent`` of requests, else the primary."""
        if version is not None:
            for loaded in self.versions():
                if loaded.version == version:
                    return loaded
            raise NotFoundError(f"model '{self.name}' version {version} is not loaded on this server")
        if self.canary is not None and self.draw() * 100 < self.canary_percent:
            return self.canary
        return self.primary

    def versions(self) -> list[LoadedVersion]:
        """Every version in the line-up: primary, canary, shadow (those present)."""
        return [loaded for loaded in (self.primary, self.canary, self.shadow) if loaded is not None]

    def mirror(self, encode: Encoder, answer: np.ndarray, timeout: float) -> None:
        """Send a copy of an answered request to the shadow, in the background; its answer counts as a
        disagreement when its shape or its argmax differs from ``answer``. A shadow that fails or is too
        busy is not counted (its failures never reach the caller)."""
        shadow = self.shadow
        if shadow is None:
            return

        async def compare() -> None:
            try:
                theirs = await shadow.infer(encode(shadow), timeout)
            except ModelcycleError:
                return
            self.shadow_requests += 1
            if theirs.shape != answer.shape or not np.array_equal(theirs.argmax(-1), answer.argmax(-1)):
                self.shadow_disagreements += 1

        task = asyncio.get_running_loop().create_task(compare())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def settle(self) -> None:
        """Wait for the shadow copies still in flight."""
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
