"""What ``modelcycle bench`` measures and stores (as ``variants/bench.json``): one entry per variant, measured
side by side in one run, with the machine they ran on."""

from __future__ import annotations

from dataclasses import dataclass

from modelcycle.bench.machine import Machine


@dataclass(frozen=True)
class VariantBench:
    """One variant's figures. ``throughput`` is rows per second by batch size (keys are text, as in JSON);
    ``latency_ms`` holds p50 / p95 / p99 / mean at batch 1 and the number of calls behind them; ``metrics``
    are the task's metrics on the split the rows came from (None without training data);
    ``tokens_per_second`` is a language model's generation rate by sequences decoding together (None for
    other models), which is what ``auto`` compares for it."""

    variant: str
    runtime: str
    size_bytes: int
    verdict: str | None  # None for the base, which is the version itself rather than a variant
    load_seconds: float
    threads: int
    latency_ms: dict[str, float]
    throughput: dict[str, float]
    peak_rss_mb: float
    metrics: dict[str, float] | None
    tokens_per_second: dict[str, float] | None = None

    def speed(self) -> dict[str, float]:
        """What ``auto`` compares, by batch size: generated tokens per second for a language model, rows
        per second otherwise."""
        return self.tokens_per_second or self.throughput


@dataclass(frozen=True)
class BenchReport:
    """``data`` says which rows were fed; ``sequence_length`` is that of the token inputs measured (None when
    the model takes none); ``auto`` is what serving's ``auto`` picks at each batch size."""

    ref: str
    task: str
    primary_metric: str
    date: str
    machine: Machine
    data: str
    rows: int
    sequence_length: int | None
    batch_sizes: list[int]
    seconds: float
    results: list[VariantBench]
    auto: dict[str, str]
    chart: str
