"""Monitoring inside the server: what each answered request leaves behind (a stored record, a count by
predicted class), feedback joined to it later, and the periodic round that turns the store into live
quality, drift and alerts. The request path only counts and enqueues; everything else runs in a thread."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.config import MonitorConfig, duration_seconds
from modelcycle.data import TargetEncoder
from modelcycle.data.reference import Reference
from modelcycle.errors import ConflictError, NotFoundError, RequestError
from modelcycle.monitor.alerts import Alert, Alerter
from modelcycle.monitor.drift import DriftReport
from modelcycle.monitor.encryption import store_keys
from modelcycle.monitor.leadership import round_leader
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.metrics import ServerMetrics
from modelcycle.monitor.predictions import DriftRow, PredictionDatabase, QualityRow
from modelcycle.monitor.quality import LiveQuality, live_quality
from modelcycle.monitor.reference import drift
from modelcycle.monitor.store import PredictionRecord, PredictionStore, check_store
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS

logger = logging.getLogger(__name__)
DRIFT_MAX_ROWS = 2000  # the newest rows of the drift window: power enough for every test, bounded in CPU
EMBED_ROWS = 200  # embedding rows costs a forward pass each: a bounded share of the CPU per round


@dataclass(frozen=True)
class Watched:
    """A served version as monitoring sees it."""

    model: str
    version: int
    task: str
    labels: list[str] | None
    reference: Reference
    embed: Callable[[list[Any]], np.ndarray | None] | None = None  # stored rows → the model's embeddings


class TokenBucket:
    """At most ``rate`` takes a second on average, with bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def store_path(config: MonitorConfig, registry: Registry) -> StoreLocation:
    """Where ``config`` keeps the prediction store: its ``store`` (a SQLite file or a PostgreSQL URL), else
    monitor.db under the registry's home."""
    return StoreLocation(config.store or registry.home / "monitor.db")


def check_monitoring(config: MonitorConfig, registry: Registry) -> None:
    """What starting monitoring refuses (a ConfigError: encryption on without keys, or keys that cannot read
    the store's newest predictions), checked before a server starts so that the command says it in a line."""
    check_store(store_path(config, registry), store_keys(config.encryption))


class LiveMonitor:
    def __init__(self, config: MonitorConfig, registry: Registry, metrics: ServerMetrics) -> None:
        self.config, self.metrics = config, metrics
        self.store = PredictionStore(
            store_path(config, registry),
            masking=config.pii.model_dump(exclude={"enabled"}) if config.pii.enabled else None,
            keys=store_keys(config.encryption),
            buffer_size=config.buffer_size,
            retention_days=config.retention_days,
            max_rows=config.max_rows,
        )
        self.alerter = Alerter(registry, config.alerts, config.webhook)
        self.leader = round_leader(self.store.location)
        self.budget = TokenBucket(config.max_records_per_s) if config.max_records_per_s else None
        self.sampled_out = 0
        store = self.store
        metrics.watch_counts(
            "modelcycle_monitor_records",
            "Prediction records by outcome: stored, sampled out, dropped (buffer full) or failed (write).",
            "outcome",
            lambda: {
                "sampled_out": self.sampled_out,
                "stored": store.written - store.failed,
                "dropped": store.dropped,
                "failed": store.failed,
            },
        )
        metrics.watch_counts(
            "modelcycle_pii_masked",
            "Personal data found and masked in stored inputs, by rule.",
            "rule",
            lambda: dict(store.masked),
        )

    def record(
        self,
        request_id: str,
        model: str,
        version: int,
        protocol: str,
        inputs: list[Any] | dict[str, np.ndarray],
        outputs: np.ndarray,
        target: TargetEncoder | None,
        latency_ms: float,
        generated: str | None = None,
    ) -> None:
        """Hand the request to the store (a sample of them, if configured, and within the records-per-second
        budget). ``inputs`` is one JSON value per row, or the model-ready tensors by name; ``generated`` a
        language model's answer (``outputs`` then empty)."""
        if self.config.sample_rate < 1.0 and random.random() >= self.config.sample_rate:
            self.sampled_out += 1
            return
        if self.budget is not None and not self.budget.take():
            self.sampled_out += 1
            return
        self.store.record(
            PredictionRecord(
                request_id,
                model,
                version,
                protocol,
                time.time(),
                latency_ms,
                inputs,
                outputs,
                target,
                generated,
            )
        )

    def feedback(
        self, request_id: str, row: int, label: object, value: float | None, stored_label: Any
    ) -> str:
        """Join a label (classification: a class; multi-label: a list of labels) or value (regression) to a
        stored prediction; returns the model. ``stored_label(model, version, label, value)`` checks them
        against that version's task and gives the label's text as stored."""
        if (label is None) == (value is None):
            raise RequestError(
                "feedback: give exactly one of 'label' (classification) and 'value' (regression)"
            )
        self.store.flush()  # the prediction may still be in the buffer
        with self.store.open() as database:
            found = database.find(request_id, row)
            if found is None:
                raise NotFoundError(
                    f"request_id: no stored prediction '{request_id}' (row {row})",
                    hint="it may be unknown, sampled out or past retention",
                )
            model, version = found
            text = stored_label(model, version, label, value)
            earlier = database.add_feedback(request_id, row, text, value, created=time.time())
        if earlier is None:
            self.metrics.feedback.labels(model).inc()
        elif earlier != (text, value):  # the same answer again is accepted (a client's retry)
            given = earlier[0] if earlier[0] is not None else earlier[1]
            raise ConflictError(
                f"request_id: prediction '{request_id}' (row {row}) has feedback already ({given!r}); the "
                "first answer stands",
                hint="feedback is given once per prediction",
            )
        return model

    def check(self, watched: list[Watched], now: float | None = None) -> list[Alert]:
        """One monitoring round (blocking; the server runs it in a thread): live quality per version and
        window, drift per model, then alerts. Results go to the metrics and to the store. Of the servers
        sharing the store, only the one that leads a model (``leadership.RoundLeader``) checks it."""
        now = time.time() if now is None else now
        started = time.perf_counter()
        self.store.flush()
        alerts: list[Alert] = []
        with self.store.open() as database:
            by_model: dict[str, list[Watched]] = {}
            for item in watched:
                if self.leader.leads(item.model):
                    by_model.setdefault(item.model, []).append(item)
            for model, versions in by_model.items():
                first = versions[0]
                for item in versions:
                    for window in self.config.windows:
                        result = live_quality(
                            database,
                            model,
                            item.task,
                            item.labels,
                            window=window,
                            now=now,
                            version=item.version,
                        )
                        self._publish_quality(database, result, now)
                # alerts judge the model as its users see it: every served version together
                quality = {
                    window: live_quality(database, model, first.task, first.labels, window=window, now=now)
                    for window in self.config.windows
                }
                alerts += self.alerter.check(model, quality, self._drift(database, first, now))
        for alert in alerts:  # resolved ones read 0
            self.metrics.alerts.labels(alert.model, alert.name).set(1 if alert.firing else 0)
        for model, name in self.alerter.firing:  # also those raised before this server led the rounds
            self.metrics.alerts.labels(model, name).set(1)
        if by_model:
            self.metrics.round_seconds.set(time.perf_counter() - started)
        return alerts

    def _publish_quality(self, database: PredictionDatabase, result: LiveQuality, now: float) -> None:
        labels = (result.model, str(result.version), result.window)
        self.metrics.live_samples.labels(*labels).set(result.samples)
        for metric, value in result.metrics.items():
            self.metrics.live_quality.labels(*labels, metric).set(value)
        database.add_quality(
            QualityRow(result.model, result.version, result.window, metric, value, result.samples, now)
            for metric, value in result.metrics.items()
        )

    def _drift(self, database: PredictionDatabase, item: Watched, now: float) -> DriftReport | None:
        task = TASKS.get(item.task)()
        if task.ordered_rows:
            # its reference profiles the training corpus cut in blocks, not prompts: every prompt is shorter
            # than a block, so a drift alert would fire on any traffic at all
            return None
        since = now - duration_seconds(self.config.drift_window)
        rows = database.recent_inputs(item.model, since=since, limit=DRIFT_MAX_ROWS)
        if len(rows) < self.config.drift_min_rows:
            return None
        stored = [inputs for inputs, _ in rows]
        embeddings = None
        if item.embed is not None and item.reference.embedding is not None:
            embeddings = item.embed(stored[:EMBED_ROWS])
        predicted = pd.Series([prediction for _, prediction in rows if prediction is not None], dtype=object)
        labels = task.label_occurrences(predicted)  # a multi-label prediction is each of its labels
        report = drift(
            item.reference,
            stored_columns(item.reference, stored),
            predictions=None if labels is None else labels.tolist() or None,
            embeddings=embeddings,
            alpha=self.config.drift_alpha,
            share=self.config.drift_share,
        )
        for feature in report.features:
            self.metrics.drift_score.labels(item.model, feature.feature, feature.method).set(feature.score)
            self.metrics.drift_detected.labels(item.model, feature.feature).set(int(feature.drifted))
        database.add_drift(
            DriftRow(
                item.model, feature.feature, feature.method, feature.score, feature.drifted, feature.rows, now
            )
            for feature in report.features
        )
        self.metrics.drift_detected.labels(item.model, "dataset").set(int(report.drifted))
        return report

    def close(self) -> None:
        self.store.close()
        self.leader.release()


def stored_columns(reference: Reference, stored: list[Any]) -> dict[str, list[Any]]:
    """The feature columns of stored inputs: a JSON object per row gives the features it names (tabular),
    a string is the text feature, a nested list the image; model-ready tensors whose names are not
    features (encoded tabular rows, token ids) give nothing."""
    features = reference.features
    single = next(iter(features)) if len(features) == 1 else None
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for row in stored:
        if isinstance(row, dict):
            for name, value in row.items():
                if name in columns:
                    columns[name].append(value)
        elif single is not None:
            columns[single].append(row)
    return {name: values for name, values in columns.items() if values}
