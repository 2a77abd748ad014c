"""The path every inference request takes once its protocol has named the model, whatever the protocol
(Open Inference Protocol v2, simple JSON, OpenAI): the gateway picks the version, and an ``Exchange``
counts the request once in ``modelcycle_requests_total`` with the status it ended with (failures too),
times it and hands it to monitoring. ``answer`` is that path for tensor models, batched; text generation
(``protocols.openai``) drives an ``Exchange`` itself, since a stream ends after its response has started."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.types import Scope

from modelcycle.data import TargetEncoder
from modelcycle.errors import ModelcycleError, OverloadedError
from modelcycle.serve.gateway import Encoder
from modelcycle.serve.served import ServedModel
from modelcycle.serve.state import ServerState
from modelcycle.serve.versions import LoadedVersion

ARRIVED = "modelcycle_arrived"  # in a request's state: when the first layer saw it (time.monotonic)


def time_left(scope: Scope, limit_s: float) -> float:
    """Seconds left of a request's ``limit_s`` (``serve.request_timeout_s``), counted from its arrival at
    the first layer (``serve.entry``), so that reading its body and waiting for the event loop count too:
    one bound on the whole request, not one per stage. Zero when none is left: the stage that waits next
    answers the overload, inside the request's accounting."""
    arrived = scope.get("state", {}).get(ARRIVED)
    if arrived is None:  # not through that layer (an app mounted without it)
        return limit_s
    return max(0.0, float(limit_s - (time.monotonic() - arrived)))


def new_request_id() -> str:
    """A UUID version 7 (RFC 9562) as 32 hex digits: unique like uuid4, but ordered by time, so the
    prediction store's index on request ids grows at its end instead of at random pages (measured: 3 µs
    a row flat, against 3 → 11 µs a row as a store of random ids grows past 70 MB)."""
    milliseconds = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (milliseconds & (2**48 - 1)) << 80 | 0x7 << 76 | (random_bits >> 68) << 64
    value |= 0b10 << 62 | random_bits & (2**62 - 1)
    return f"{value:032x}"


@dataclass
class Exchange:
    """One request answered by one version (``loaded``) of ``model`` over ``protocol``, from the moment the
    gateway chose the version: ``counted`` around the work that decides its status, ``stored`` with its
    answer once that is complete."""

    state: ServerState
    model: str
    loaded: LoadedVersion
    protocol: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Count the request with the status its block ends with: 200, a ``ModelcycleError``'s own, or 500
        for anything else; a failed request is timed here too (an answered one when it is stored)."""
        code = "500"
        try:
            yield
            code = "200"
        except ModelcycleError as error:
            code = str(error.http_status)
            raise
        finally:
            labels = (self.model, str(self.loaded.version), self.protocol, code)
            self.state.metrics.requests.labels(*labels).inc()
            if code != "200":
                self._timed()

    def stored(
        self,
        inputs: list[Any] | dict[str, np.ndarray],
        outputs: np.ndarray,
        target: TargetEncoder | None,
        *,
        generated: str | None = None,
    ) -> None:
        """Time the answered request and hand it to monitoring (when it is on) with its ``inputs`` as they
        are to be stored, its ``outputs`` and the target encoder (None for generated text)."""
        elapsed = self._timed()
        if self.state.monitor is not None:
            self.state.monitor.record(
                self.request_id,
                self.model,
                self.loaded.version,
                self.protocol,
                inputs,
                outputs,
                target,
                elapsed * 1000,
                generated=generated,
            )

    def _timed(self) -> float:
        elapsed = time.perf_counter() - self.started
        self.state.metrics.latency.labels(self.model, self.protocol).observe(elapsed)
        return elapsed


async def answer(
    state: ServerState,
    served: ServedModel,
    encode: Encoder,
    protocol: str,
    *,
    request_id: str,
    timeout: float,
    instances: list[Any] | None = None,
    version: int | None = None,
) -> tuple[LoadedVersion, np.ndarray]:
    """Route a request to a version (``version`` pins one), encode it with that version's own schema and
    preprocessing (a canary may preprocess differently), wait for the batcher at most ``timeout`` seconds
    (what is left of the request's time: ``time_left``), count and store it
    (``instances``: the rows as the caller sent them, else the model-ready tensors are stored) and mirror
    it to the shadow; returns the version that answered and its outputs."""
    gateway = served.gateway
    exchange = Exchange(state, served.name, gateway.route(version), protocol, request_id)
    loaded = exchange.loaded
    with exchange.counted():
        if timeout <= 0:
            raise OverloadedError("no answer within the request's time (none was left for the model)")
        tensors = encode(loaded)
        outputs = await loaded.infer(tensors, timeout)
    exchange.stored(instances if instances is not None else tensors, outputs, loaded.predictor.encoder)
    if version is None:
        gateway.mirror(encode, outputs, state.settings.shadow_timeout_s)
    return loaded, outputs
