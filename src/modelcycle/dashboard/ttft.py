"""Time to first token of a language model, read from the Prometheus histogram of the server it runs in (the
prediction store keeps whole-request latency only): p50 / p95 / p99 since that server started, interpolated
inside the buckets as Prometheus' ``histogram_quantile`` does."""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

FIRST_TOKEN = "modelcycle_time_to_first_token_seconds"
QUANTILES = (0.5, 0.95, 0.99)


def first_token_quantiles(exposition: Callable[[], bytes], model: str) -> dict[str, float] | None:
    """{"p50": s, "p95": s, "p99": s, "count": n} for ``model``, or None when it generated nothing yet."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(exposition().decode("utf-8")):
        if family.name != FIRST_TOKEN:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("model") == model:
                buckets.append((float(sample.labels["le"]), sample.value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    count = buckets[-1][1]
    found = {f"p{round(q * 100)}": _quantile(q, buckets) for q in QUANTILES}
    return {**found, "count": count}


def _quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """The value below which ``quantile`` of the observations fall, linear inside its bucket; the highest
    finite bound when it lies in the +Inf bucket."""
    rank = quantile * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (cumulative - lower_count) if cumulative > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, cumulative
    return lower_bound
