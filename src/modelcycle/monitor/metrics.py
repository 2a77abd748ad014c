"""The server's metrics at ``/metrics`` (Prometheus text format), in a registry of the app's own so two
servers in one process never share counters. Every name carries the ``modelcycle_`` prefix; ``deploy/`` (the
Grafana dashboard and the alert rules) refers to them, and a test keeps the two in step.

With ``modelcycle serve --workers N`` each worker is a process of its own, and a scrape reaches one of them:
``PROMETHEUS_MULTIPROC_DIR`` is then set and prometheus-client keeps every value in a file there, so any
worker's ``/metrics`` answers for all of them (counters and histograms summed, gauges as their mode says)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelcycle.monitor.generation_metrics import GenerationMetrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# One worker runs the monitoring rounds (``LiveMonitor``); the value it set last is the one to show.
ROUND_RESULT: Final = "mostrecent"
SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch to values shared by processes


class ServerMetrics:
    def __init__(self) -> None:
        self.shared = bool(os.environ.get(SHARED_DIR))  # read by prometheus-client when first imported
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
            "modelcycle_queue_depth",
            "Requests waiting per model.",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.info = Gauge(
            "modelcycle_model_info",
            "1 for each loaded version, with its role and the variant that runs it.",
            ["model", "version", "role", "variant", "runtime"],
            registry=registry,
            multiprocess_mode="livemax",
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
            multiprocess_mode=ROUND_RESULT,
        )
        self.drift_detected = Gauge(
            "modelcycle_drift_detected",
            '1 when the feature drifted in the latest check (feature="dataset": the dataset as a whole).',
            ["model", "feature"],
            registry=registry,
            multiprocess_mode=ROUND_RESULT,
        )
        self.live_quality = Gauge(
            "modelcycle_live_quality",
            "Quality of labelled live predictions over a sliding window.",
            ["model", "version", "window", "metric"],
            registry=registry,
            multiprocess_mode=ROUND_RESULT,
        )
        self.live_samples = Gauge(
            "modelcycle_live_quality_samples",
            "Labelled predictions in the window.",
            ["model", "version", "window"],
            registry=registry,
            multiprocess_mode=ROUND_RESULT,
        )
        self.round_seconds = Gauge(
            "modelcycle_monitor_round_seconds",
            "How long the latest monitoring round (live quality, drift, alerts) took.",
            registry=registry,
            multiprocess_mode=ROUND_RESULT,
        )
        self.alerts = Gauge(
            "modelcycle_alert_firing",
            "1 while an alert fires.",
            ["model", "alert"],
            registry=registry,
            multiprocess_mode=ROUND_RESULT,
        )
        self.generation = GenerationMetrics(registry)
        self._label_children: dict[tuple[str, str, str], Any] = {}
        self._mirrors: list[_CountsMirror] = []
        self._shown: set[tuple[str, str, str, str, str]] = set()

    def batch(self, model: str, rows: int, queue_seconds: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.queue_time.labels(model).observe(queue_seconds)

    def show_versions(self, loaded: list[tuple[str, str, str, str, str]]) -> None:
        """The model-info gauge: 1 for each (model, version, role, variant, runtime) loaded now. Values shared
        by processes cannot be removed, so there a version no longer loaded reads 0."""
        if self.shared:
            for labels in self._shown - set(loaded):
                self.info.labels(*labels).set(0)
        else:
            self.info.clear()
        for labels in loaded:
            self.info.labels(*labels).set(1)
        self._shown = set(loaded)

    def predicted(self, model: str, version: str, label: str, rows: int = 1) -> None:
        key = (model, version, label)
        child = self._label_children.get(key)  # labels() takes a lock and builds a tuple: cache the child
        if child is None:
            child = self._label_children[key] = self.predictions.labels(*key)
        child.inc(rows)

    def watch_counts(
        self, name: str, documentation: str, label: str, counts: Callable[[], dict[str, int]]
    ) -> None:
        """Export counts kept elsewhere (the store's dropped records, the masker's hits) as a counter, brought
        up to date by ``sync_counts``."""
        counter = Counter(name, documentation, [label], registry=self.registry)
        self._mirrors.append(_CountsMirror(counter, counts))

    def sync_counts(self) -> None:
        for mirror in self._mirrors:
            mirror.sync()

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or with shared values every worker's (values kept
        elsewhere are brought in first by the caller, see ``ServerState.refresh_metrics``)."""
        if not self.shared:
            return generate_latest(self.registry)
        _forget_dead_workers()
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged)

    def close(self) -> None:
        """A worker that ends takes its live gauges (queue depth, loaded versions) with it."""
        if self.shared:
            mark_process_dead(os.getpid())


def _forget_dead_workers() -> None:
    """Live gauges (queue depth, loaded versions) of workers that ended without shutting down (killed, out
    of memory), which uvicorn replaces: their files would count on."""
    for path in Path(os.environ[SHARED_DIR]).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape removed them first
                mark_process_dead(pid)
        except PermissionError:  # alive, someone else's
            pass


class _CountsMirror:
    """A counter that follows counts kept elsewhere: each sync adds what they grew by since the last."""

    def __init__(self, counter: Counter, counts: Callable[[], dict[str, int]]) -> None:
        self.counter, self.counts = counter, counts
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()  # scrapes (in threads) and the sharing task may sync at once

    def sync(self) -> None:
        with self._lock:
            for key, value in self.counts().items():
                grown = value - self.seen.get(key, 0)
                if grown > 0 or key not in self.seen:
                    self.counter.labels(key).inc(grown)
                    self.seen[key] = value
