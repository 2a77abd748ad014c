"""Request metrics at ``/metrics`` (Prometheus text format), in a registry of the app's own so two servers in
one process never share counters. Names carry the ``modelcycle_`` prefix; the monitoring issue adds more."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelcycle.serve.batcher import BatchStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelcycle_requests",
            "Requests answered, by model, version, protocol and HTTP status code.",
            ["model", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelcycle_request_latency_seconds",
            "Time from a request's arrival to its answer.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelcycle_batch_size_rows",
            "Rows per executed batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "modelcycle_queue_seconds",
            "Time a request waited before its batch ran.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelcycle_queue_depth", "Requests waiting per model.", ["model"], registry=self.registry
        )
        self.info = Gauge(
            "modelcycle_model_info",
            "1 for each loaded version, with its role and the variant that runs it.",
            ["model", "version", "role", "variant", "runtime"],
            registry=self.registry,
        )

    def batch(self, ref: str, stats: BatchStats) -> None:
        model = ref.split("@", 1)[0]
        self.batch_size.labels(model).observe(stats.rows)
        self.queue_time.labels(model).observe(stats.queue_seconds)
