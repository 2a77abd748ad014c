"""``modelcycle monitor report``: one static HTML page about a model's live traffic since a time — requests
and latency over time, predicted classes, drift per feature (latest check) and live quality over time —
read from the prediction store. The plots are PNGs inside the page, so it is one file to mail or archive."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from modelcycle.bundle.files import write_text_atomic
from modelcycle.monitor.charts import monitor_figures
from modelcycle.monitor.database import open_database
from modelcycle.monitor.drift import ALPHA
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.plots import figure_base64
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
    alpha: float = ALPHA,
) -> Path:
    """Write the report for ``model`` over the last ``since_seconds`` to ``out`` (atomically); ``events``
    (the model's registry history) give the timeline of alerts, updates, canaries and promotions; ``keys``
    read an encrypted store; ``alpha``: the monitor's ``drift_alpha``, the line drift tests had to cross."""
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
    charts = monitor_figures(traffic, quality, drift, alpha=alpha)
    figures = [(title, figure_base64(figure)) for title, figure in charts]
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
