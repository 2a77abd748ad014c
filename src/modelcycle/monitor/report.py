"""``modelcycle monitor report``: one static HTML page about a model's live traffic since a time — requests
and latency over time, predicted classes, drift per feature (latest check) and live quality over time —
read from the prediction store. The plots are PNGs inside the page, so it is one file to mail or archive."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.bundle.files import write_text_atomic
from modelcycle.monitor.database import open_database
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import DriftRow, QualityRow, Traffic
from modelcycle.plots import png_base64
from modelcycle.registry.events import EventRecord

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ model }} — monitoring</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
th { background: #f3f3f3; }
.drifted { color: #b00020; font-weight: 600; }
img { max-width: 100%; }
</style></head><body>
<h1>{{ model }}: monitoring since {{ since }}</h1>
<p>{{ summary.requests }} stored predictions, {{ summary.labelled }} with feedback;
latency p50 {{ "%.2f"|format(summary.p50_ms) }} ms, p95 {{ "%.2f"|format(summary.p95_ms) }} ms.
Generated {{ generated }}.</p>
{% for title, image in figures %}
<h2>{{ title }}</h2><img alt="{{ title }}" src="data:image/png;base64,{{ image }}">
{% endfor %}
<h2>Drift per feature (latest check)</h2>
{% if drift %}
<table><tr><th>feature</th><th>method</th><th>score</th><th>rows</th><th>drifted</th></tr>
{% for row in drift %}
<tr><td>{{ row.feature }}</td><td>{{ row.method }}</td><td>{{ "%.4g"|format(row.score) }}</td>
<td>{{ row.rows }}</td>
<td class="{{ 'drifted' if row.drifted else '' }}">{{ 'yes' if row.drifted else 'no' }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No drift check in this period.</p>{% endif %}
<h2>Timeline (alerts, updates, canaries, promotions)</h2>
{% if timeline %}
<table><tr><th>when</th><th>event</th><th>version</th><th>why</th></tr>
{% for event in timeline %}
<tr><td>{{ event.at }}</td><td>{{ event.kind }}</td><td>{{ event.version or "" }}</td>
<td>{{ event.reason or "" }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No events in this period.</p>{% endif %}
</body></html>
"""


@dataclass(frozen=True)
class Summary:
    requests: int
    labelled: int
    p50_ms: float
    p95_ms: float


def monitor_report(
    store: StoreLocation | Path,
    model: str,
    *,
    since_seconds: float,
    out: Path,
    events: Sequence[EventRecord] = (),
    now: float | None = None,
    keys: Keyring | None = None,
) -> Path:
    """Write the report for ``model`` over the last ``since_seconds`` to ``out`` (atomically); ``events``
    (the model's registry history) give the timeline of alerts, updates, canaries and promotions; ``keys``
    read an encrypted store."""
    import jinja2

    now = time.time() if now is None else now
    since = now - since_seconds
    with open_database(store, keys) as database:
        traffic = database.traffic(model, since=since)
        labelled = database.count_labelled(model, since=since)
        quality = database.quality(model, since=since)
        drift = database.latest_drift(model, since=since)
    latencies = np.array([row.latency_ms for row in traffic]) if traffic else np.zeros(1)
    summary = Summary(len(traffic), labelled, *np.percentile(latencies, [50, 95]).tolist())
    figures = [(title, png_base64(draw)) for title, draw in _figures(traffic, quality, now)]
    if drift:
        height = 0.28 * len(drift) + 1.4
        figures.append(
            ("Drift per feature (latest check)", png_base64(_drift_plot(drift), size=(10, height)))
        )
    page = (
        jinja2.Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            model=model,
            since=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(since)),
            generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now)),
            summary=summary,
            figures=figures,
            drift=drift,
            timeline=sorted(
                (event for event in events if event.kind in TIMELINE and _epoch(event.at) >= since),
                key=lambda event: event.id,
            ),
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    return out


UPDATE_OUTCOMES = ("skipped", "rejected", "registered", "promoted", "rolled_back")
TIMELINE = (
    "registered",
    "alert",
    "alert_resolved",
    "canary",
    "promoted",
    "rollback",
    "aliased",
    *(f"update_{outcome}" for outcome in UPDATE_OUTCOMES),
)


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def _drift_plot(drift: list[DriftRow]) -> Any:
    """Each feature's deciding score against its threshold; red where it drifted."""

    def draw(axes: Any) -> None:
        names = [f"{row.feature} ({row.method})" for row in drift]
        colours = ["#b00020" if row.drifted else "#4472c4" for row in drift]
        axes.barh(names, [row.score for row in drift], color=colours)
        axes.set_xscale("symlog", linthresh=1e-3)
        axes.set_xlabel("score (p-value for tests, distance otherwise); red: drifted")

    return draw


def _figures(traffic: list[Traffic], quality: list[QualityRow], now: float) -> list[tuple[str, Any]]:
    figures: list[tuple[str, Any]] = []
    if traffic:
        created = np.array([row.created for row in traffic])
        latency = np.array([row.latency_ms for row in traffic])
        edges = np.linspace(created.min(), max(created.max(), created.min() + 1), 41)
        minutes = (edges[:-1] - now) / 60

        def traffic_plot(axes: Any) -> None:
            counts = np.histogram(created, edges)[0]
            axes.bar(minutes, counts / np.diff(edges), width=np.diff(edges) / 60, align="edge")
            axes.set_xlabel("minutes before now")
            axes.set_ylabel("predictions / s")

        def latency_plot(axes: Any) -> None:
            slot = np.clip(np.searchsorted(edges, created, side="right") - 1, 0, len(minutes) - 1)
            for percentile in (50, 95, 99):
                values = [
                    np.percentile(latency[slot == index], percentile) if np.any(slot == index) else np.nan
                    for index in range(len(minutes))
                ]
                axes.plot(minutes, values, label=f"p{percentile}")
            axes.set_xlabel("minutes before now")
            axes.set_ylabel("ms")
            axes.legend()

        def classes_plot(axes: Any) -> None:
            labels, counts = np.unique(
                [str(row.predicted_class) for row in traffic if row.predicted_class is not None],
                return_counts=True,
            )
            axes.bar(labels, counts)
            axes.set_ylabel("predictions")

        figures += [("Traffic", traffic_plot), ("Latency", latency_plot)]
        if any(row.predicted_class is not None for row in traffic):
            figures.append(("Predicted classes", classes_plot))
    if quality:

        def quality_plot(axes: Any) -> None:
            series: dict[tuple[int | None, str, str], list[tuple[float, float]]] = {}
            for row in quality:
                key = (row.version, row.window, row.metric)
                series.setdefault(key, []).append(((row.created - now) / 60, row.value))
            for (version, window, metric), points in sorted(series.items()):
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker=".", label=f"v{version} {metric} ({window})")
            axes.set_xlabel("minutes before now")
            axes.legend(fontsize="small", ncol=2)

        figures.append(("Live quality (from feedback)", quality_plot))
    return figures
