"""The server's metrics at ``/metrics`` (Prometheus text format), in a registry of the app's own so two
servers in one process never share counters. Every name carries the ``modelcycle_`` prefix; ``deploy/`` (the
Grafana dashboard and the alert rules) refers to them, and a test keeps the two in step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "modelcycle_requests",
            "Requests answered, by model, version, protocol and HTTP status code.",
            ["model", "version", "protocol", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "modelcycle_request_latency_seconds",
            "Time from a request's arrival to its answer.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "modelcycle_batch_size_rows",
            "Rows per executed batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_time = Histogram(
            "modelcycle_queue_seconds",
            "Time a request waited before its batch ran.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "modelcycle_queue_depth", "Requests waiting per model.", ["model"], registry=registry
        )
        self.info = Gauge(
            "modelcycle_model_info",
            "1 for each loaded version, with its role and the variant that runs it.",
            ["model", "version", "role", "variant", "runtime"],
            registry=registry,
        )
        self.predictions = Counter(
            "modelcycle_predictions",
            "Predicted rows by model, version and predicted class.",
            ["model", "version", "class"],
            registry=registry,
        )
        self.feedback = Counter(
            "modelcycle_feedback",
            "Labels and values received through /v1/feedback.",
            ["model"],
            registry=registry,
        )
        self.drift_score = Gauge(
            "modelcycle_drift_score",
            "The latest drift score per feature (a p-value for tests, a distance otherwise; see method).",
            ["model", "feature", "method"],
            registry=registry,
        )
        self.drift_detected = Gauge(
            "modelcycle_drift_detected",
            '1 when the feature drifted in the latest check (feature="dataset": the dataset as a whole).',
            ["model", "feature"],
            registry=registry,
        )
        self.live_quality = Gauge(
            "modelcycle_live_quality",
            "Quality of labelled live predictions over a sliding window.",
            ["model", "version", "window", "metric"],
            registry=registry,
        )
        self.live_samples = Gauge(
            "modelcycle_live_quality_samples",
            "Labelled predictions in the window.",
            ["model", "version", "window"],
            registry=registry,
        )
        self.round_seconds = Gauge(
            "modelcycle_monitor_round_seconds",
            "How long the latest monitoring round (live quality, drift, alerts) took.",
            registry=registry,
        )
        self.alerts = Gauge(
            "modelcycle_alert_firing", "1 while an alert fires.", ["model", "alert"], registry=registry
        )
        self._label_children: dict[tuple[str, str, str], Any] = {}

    def batch(self, model: str, rows: int, queue_seconds: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.queue_time.labels(model).observe(queue_seconds)

    def predicted(self, model: str, version: str, label: str, rows: int = 1) -> None:
        key = (model, version, label)
        child = self._label_children.get(key)  # labels() takes a lock and builds a tuple: cache the child
        if child is None:
            child = self._label_children[key] = self.predictions.labels(*key)
        child.inc(rows)

    def watch_counts(
        self, name: str, documentation: str, label: str, counts: Callable[[], dict[str, int]]
    ) -> None:
        """Export counts kept elsewhere (the store's dropped records, the masker's hits) as a counter."""
        self.registry.register(_CountsCollector(name, documentation, label, counts))


class _CountsCollector(Collector):
    def __init__(
        self, name: str, documentation: str, label: str, counts: Callable[[], dict[str, int]]
    ) -> None:
        self.name, self.documentation, self.label, self.counts = name, documentation, label, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, value in sorted(self.counts().items()):
            family.add_metric([key], value)
        yield family
