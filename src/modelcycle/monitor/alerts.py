"""Alerts: the ``monitor.alerts`` thresholds checked against each round of live quality and drift. An alert is
raised when its condition starts to hold and resolved when it stops (not repeated every round, nor by a
server started again, which is what makes alerting noisy); both are a registry event, a log line and, when
configured, a webhook call (JSON POST with a timeout and retries with back-off)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from modelcycle.config import AlertRule, WebhookConfig
from modelcycle.monitor.drift import DriftReport
from modelcycle.monitor.quality import LiveQuality
from modelcycle.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """A change of an alert's state: ``firing`` True when raised, False when resolved."""

    model: str
    name: str
    firing: bool
    message: str
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def alert_name(rule: AlertRule) -> str:
    if rule.metric == "drift":
        return "drift"
    side = f"below_{rule.below:g}" if rule.below is not None else f"above_{rule.above:g}"
    return f"{rule.metric}_{rule.window}_{side}"


def condition(
    rule: AlertRule, quality: dict[str, LiveQuality], drift: DriftReport | None
) -> tuple[bool, float | None, str] | None:
    """Whether ``rule`` holds now, the value it looked at and why; None when there is too little to judge."""
    if rule.metric == "drift":
        if drift is None:
            return None
        features = ", ".join(drift.drifted_features) or "none"
        return (
            drift.drifted,
            len(drift.drifted_features) / max(len(drift.features), 1),
            f"drifted: {features}",
        )
    window = quality.get(rule.window)
    if window is None or window.samples < rule.min_samples or rule.metric not in window.metrics:
        return None
    value = window.metrics[rule.metric]
    holds = (rule.below is not None and value < rule.below) or (rule.above is not None and value > rule.above)
    bound = f"< {rule.below:g}" if rule.below is not None else f"> {rule.above:g}"
    return (
        holds,
        value,
        f"{rule.metric} over {rule.window} = {value:.4f} ({bound}, {window.samples} labelled)",
    )


class Alerter:
    """Tracks which alerts fire per model and announces the changes."""

    def __init__(
        self, registry: Registry, rules: list[AlertRule], webhook: WebhookConfig | None = None
    ) -> None:
        self.registry, self.rules, self.webhook = registry, rules, webhook
        self.firing: set[tuple[str, str]] = set()
        self._recalled: set[str] = set()

    def check(self, model: str, quality: dict[str, LiveQuality], drift: DriftReport | None) -> list[Alert]:
        """Evaluate every rule for ``model``; announce and return the alerts that changed state."""
        self._recall(model)
        changes = []
        for rule in self.rules:
            verdict = condition(rule, quality, drift)
            if verdict is None:
                continue
            holds, value, message = verdict
            key = (model, alert_name(rule))
            if holds == (key in self.firing):
                continue
            (self.firing.add if holds else self.firing.discard)(key)
            details = {
                "rule": rule.model_dump(),
                **({"drift": drift.to_json()} if drift and rule.metric == "drift" else {}),
            }
            changes.append(Alert(model, key[1], holds, message, value, details))
        for alert in changes:
            self.announce(alert)
        return changes

    def _recall(self, model: str) -> None:
        """Take over from the registry the alerts an earlier server raised for ``model`` and nobody resolved
        (before a restart, or in the worker that ran the rounds before this one): raised again, each would
        be a second page, and a second retraining for ``modelcycle update --watch``."""
        if model in self._recalled:
            return
        self._recalled.add(model)
        names = {alert_name(rule) for rule in self.rules}
        for event in self.registry.history(model):
            name = event.details.get("name")
            if event.kind in ("alert", "alert_resolved") and name in names:
                (self.firing.add if event.kind == "alert" else self.firing.discard)((model, name))

    def announce(self, alert: Alert) -> None:
        kind = "alert" if alert.firing else "alert_resolved"
        (logger.warning if alert.firing else logger.info)(
            "%s %s on %s: %s", kind, alert.name, alert.model, alert.message
        )
        self.registry.log_event(
            alert.model, kind, actor="monitor", reason=f"{alert.name}: {alert.message}", details=asdict(alert)
        )
        if self.webhook is not None:
            post_webhook(self.webhook, {"event": kind, **asdict(alert), "time": time.time()})


def post_webhook(webhook: WebhookConfig, payload: dict[str, Any]) -> bool:
    """POST ``payload``; retried on connection errors and 5xx (back-off 0.5 s, 1 s, 2 s, …); never raises."""
    for attempt in range(webhook.retries + 1):
        try:
            response = httpx.post(webhook.url, json=payload, timeout=webhook.timeout_s)
            if response.status_code < 500:
                if response.status_code >= 400:
                    logger.error("webhook %s refused the alert: HTTP %d", webhook.url, response.status_code)
                return response.status_code < 400
        except httpx.HTTPError as error:
            logger.warning("webhook %s: %s (attempt %d)", webhook.url, error, attempt + 1)
        if attempt < webhook.retries:
            time.sleep(0.5 * 2**attempt)
    logger.error("webhook %s: gave up after %d attempts", webhook.url, webhook.retries + 1)
    return False
