"""What the loop cannot invent: the requests a served model gets and the labels that come back for them.
A ``Traffic`` drives the server through ``Served``, which counts every answer (and every failed one) and
reads the alerts the monitor raises meanwhile."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import httpx

from modelcycle.config import MonitorConfig
from modelcycle.loop.timeline import Timeline
from modelcycle.registry import Registry

ALERTS_READ = 50  # the newest events searched for alerts: far more than a loop's run raises


class Feedback(NamedTuple):
    """The true label (a class, or a value) of the answer to one request."""

    request_id: str
    label: Any


class Served:
    """A model being served at ``url`` as traffic sees it: a client whose every answer is counted, the
    feedback endpoint, and the alerts raised for the model since serving began."""

    def __init__(
        self, name: str, url: str, registry: Registry, monitoring: MonitorConfig, timeline: Timeline
    ) -> None:
        self.name, self.url, self.registry = name, url, registry
        self.monitoring, self.timeline = monitoring, timeline
        self.requests = self.failed_requests = 0
        self._lock = threading.Lock()  # traffic may run in a thread of its own during the canary
        self._first_event = max((event.id for event in registry.history(name, limit=1)), default=0)
        self.client = httpx.Client(base_url=url, timeout=30, event_hooks={"response": [self._count]})

    def predict(self, instance: dict[str, Any]) -> str | None:
        """The request id of the model's answer to one instance; None when the request failed."""
        reply = self.client.post(f"/v1/models/{self.name}:predict", json={"instances": [instance]})
        return str(reply.json()["request_id"]) if reply.status_code < 400 else None

    def feedback(self, item: Feedback) -> None:
        self.client.post("/v1/feedback", json={"request_id": item.request_id, "label": item.label})

    def alerts(self, prefix: str = "") -> list[str]:
        """The reasons of the alerts raised for the model since serving began (oldest first) that start
        with ``prefix`` (e.g. ``drift``)."""
        events = self.registry.history(self.name, limit=ALERTS_READ)
        return [
            event.reason or ""
            for event in reversed(events)
            if event.id > self._first_event
            and event.kind == "alert"
            and (event.reason or "").startswith(prefix)
        ]

    def wait_for_alert(self, prefix: str, *, timeout_s: float) -> str | None:
        """The reason of the first alert starting with ``prefix``, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            raised = self.alerts(prefix)
            if raised:
                return raised[0]
            time.sleep(0.5)
        return None

    def _count(self, response: httpx.Response) -> None:
        with self._lock:
            self.requests += 1
            self.failed_requests += response.status_code >= 400

    def __enter__(self) -> Served:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.client.close()


class Traffic(Protocol):
    """The requests the loop's served model gets, and their labels: a demo simulates them, a user's own
    clients could be wrapped the same way."""

    name: str  # how the loop's figures call it, e.g. "shifted traffic"

    def before_update(self, served: Served) -> list[Feedback]:
        """Requests before any update (a traffic may record stages of its own on ``served.timeline``); the
        labels of their answers, which the loop sends as feedback."""
        ...

    def during_canary(self, served: Served, stop: threading.Event) -> None:
        """Requests, each labelled at once, until ``stop`` is set: what the canary's live quality is read
        from. Runs in a thread of its own."""
        ...
