"""The dashboard's charts as Plotly figure specifications (``{"data": [...], "layout": {...}}``, the JSON that
plotly.js draws with hover and zoom): live traffic, latency percentiles, predicted classes, live quality per
version, drift per feature, metrics per version and split, training curves. Drift is drawn from the same
panels as the static report (``monitor.charts.drift_panels``): drifted first, red, against the line that
decided them. Times are milliseconds since the epoch, which plotly shows as UTC dates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelcycle.monitor.charts import DRIFTED_COLOUR, STEADY_COLOUR, drift_panels
from modelcycle.monitor.predictions import DriftRow, QualityRow, Traffic
from modelcycle.registry import VersionRecord

Figure = dict[str, Any]
TIME_BINS = 60
MIN_SPAN_S = 60.0
TIME_AXIS = {"type": "date", "title": {"text": "time (UTC)"}}
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 50}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    # uirevision: a refresh redraws the data but keeps the reader's zoom and hidden traces
    return {"title": {"text": title}, "margin": MARGIN, "uirevision": title, "hovermode": "closest", **extra}


def live_figures(
    traffic: Sequence[Traffic],
    quality: Sequence[QualityRow],
    drift: Sequence[DriftRow],
    *,
    alpha: float,
    since: float,
    until: float,
) -> dict[str, Figure]:
    """The monitoring page's charts by id, those without data left out."""
    figures: dict[str, Figure] = {}
    if traffic:
        # the window's slices, narrowed to the traffic there is (at least a minute), so that a few minutes
        # of traffic in a day's window are not one bar
        start = min(max(since, min(row.created for row in traffic)), until - MIN_SPAN_S)
        edges = np.linspace(start, until, TIME_BINS + 1)
        figures["traffic"] = _traffic(traffic, edges)
        figures["latency"] = _latency(traffic, edges)
        if any(row.predicted_class is not None for row in traffic):
            figures["classes"] = _classes(traffic)
    if quality:
        figures["quality"] = _quality(quality)
    if drift:
        figures["drift"] = drift_figure(drift, alpha=alpha)
    return figures


def _milliseconds(seconds: np.ndarray) -> list[float]:
    return (seconds * 1000.0).round().tolist()


def _traffic(traffic: Sequence[Traffic], edges: np.ndarray) -> Figure:
    created = np.array([row.created for row in traffic])
    versions = np.array([row.version for row in traffic])
    width = float(edges[1] - edges[0])
    data = [
        {
            "type": "bar",
            "name": f"v{version}",
            "x": _milliseconds(edges[:-1] + width / 2),
            "y": (np.histogram(created[versions == version], edges)[0] * 60.0 / width).round(3).tolist(),
            "hovertemplate": "%{x}<br>%{y:.3g} / min<extra>v" + str(version) + "</extra>",
        }
        for version in sorted(set(versions.tolist()))
    ]
    return {"data": data, "layout": _layout("Predictions per minute", barmode="stack", xaxis=TIME_AXIS)}


def _latency(traffic: Sequence[Traffic], edges: np.ndarray) -> Figure:
    created = np.array([row.created for row in traffic])
    latency = np.array([row.latency_ms for row in traffic])
    slot = np.clip(np.searchsorted(edges, created, side="right") - 1, 0, len(edges) - 2)
    centres = edges[:-1] + (edges[1] - edges[0]) / 2
    used = sorted(set(slot.tolist()))
    data = []
    for quantile in (50, 95, 99):
        values = [float(np.percentile(latency[slot == index], quantile)) for index in used]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"p{quantile}",
                "x": _milliseconds(centres[used]),
                "y": [round(value, 3) for value in values],
                "hovertemplate": "%{x}<br>%{y:.3g} ms<extra>p" + str(quantile) + "</extra>",
            }
        )
    layout = _layout("Latency (ms)", xaxis=TIME_AXIS, yaxis={"title": {"text": "ms"}, "rangemode": "tozero"})
    return {"data": data, "layout": layout}


def _classes(traffic: Sequence[Traffic]) -> Figure:
    counts: dict[int, dict[str, int]] = {}
    for row in traffic:
        if row.predicted_class is not None:
            by_class = counts.setdefault(row.version, {})
            by_class[row.predicted_class] = by_class.get(row.predicted_class, 0) + 1
    classes = sorted({name for by_class in counts.values() for name in by_class})
    data = [
        {
            "type": "bar",
            "name": f"v{version}",
            "x": classes,
            "y": [by_class.get(name, 0) for name in classes],
        }
        for version, by_class in sorted(counts.items())
    ]
    return {"data": data, "layout": _layout("Predicted classes", barmode="group", xaxis={"type": "category"})}


def _quality(quality: Sequence[QualityRow]) -> Figure:
    """One line per (version, metric, window) over time, markers on every round's figure."""
    lines: dict[tuple[str, str, str], list[QualityRow]] = {}
    for row in quality:
        version = "all" if row.version is None else f"v{row.version}"
        lines.setdefault((version, row.metric, row.window), []).append(row)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"{version} {metric} ({window})",
            "x": _milliseconds(np.array([row.created for row in rows])),
            "y": [row.value for row in rows],
            "customdata": [row.samples for row in rows],
            "hovertemplate": "%{x}<br>%{y:.4g} from %{customdata} labelled<extra>%{fullData.name}</extra>",
        }
        for (version, metric, window), rows in sorted(lines.items())
    ]
    return {"data": data, "layout": _layout("Live quality per version (from feedback)", xaxis=TIME_AXIS)}


def drift_figure(drift: Sequence[DriftRow], *, alpha: float) -> Figure:
    """One horizontal bar chart per scale, stacked; in each the drifted features first (top), red, and the
    threshold as a dashed line."""
    panels = drift_panels(drift, alpha=alpha)
    heights = [len(panel.bars) + 2 for panel in panels]
    total = sum(heights)
    data: list[dict[str, Any]] = []
    layout = _layout("Drift per feature (latest check): drifted first, in red", showlegend=False)
    shapes = []
    top = 1.0
    for index, (panel, height) in enumerate(zip(panels, heights, strict=True), start=1):
        suffix = "" if index == 1 else str(index)
        bottom = top - height / total
        labels = [f"{row.feature} ({row.method})" for row, _ in panel.bars]
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "x": [round(value, 6) for _, value in panel.bars],
                "y": labels,
                "marker": {
                    "color": [DRIFTED_COLOUR if row.drifted else STEADY_COLOUR for row, _ in panel.bars]
                },
                "customdata": [
                    [row.score, "drifted" if row.drifted else "not drifted"] for row, _ in panel.bars
                ],
                "hovertemplate": "%{y}: score %{customdata[0]:.4g}, %{customdata[1]}<extra></extra>",
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
            }
        )
        layout[f"yaxis{suffix}"] = {
            "domain": [max(bottom + 0.04, 0.0), top],
            "autorange": "reversed",
            "categoryorder": "array",
            "categoryarray": labels,
            "automargin": True,
        }
        layout[f"xaxis{suffix}"] = {
            "anchor": f"y{suffix}",
            "title": {"text": f"{panel.label} — longer bar: more drift"},
        }
        if panel.threshold is not None:
            shapes.append(
                {
                    "type": "line",
                    "xref": f"x{suffix}",
                    "yref": f"y{suffix} domain",
                    "x0": panel.threshold,
                    "x1": panel.threshold,
                    "y0": 0,
                    "y1": 1,
                    "line": {"dash": "dash", "color": "black"},
                }
            )
        top = bottom
    layout["shapes"] = shapes
    layout["height"] = 120 + 22 * len(drift) + 60 * len(panels)
    return {"data": data, "layout": layout}


def version_metrics(
    versions: Sequence[VersionRecord],
    metrics: dict[int, dict[str, dict[str, float]]],
    columns: Sequence[tuple[str, str]],
) -> Figure | None:
    """Each (split, metric) across the versions shown, oldest left: how the model changed."""
    if not versions or not columns:
        return None
    ordered = sorted(versions, key=lambda record: record.version)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"{split} {key}",
            "x": [record.version for record in ordered],
            "y": [metrics[record.version].get(split, {}).get(key) for record in ordered],
        }
        for split, key in columns
    ]
    layout = _layout("Metrics per version", xaxis={"title": {"text": "version"}, "dtick": 1})
    return {"data": data, "layout": layout}


def split_metrics(metrics: dict[str, dict[str, float]]) -> Figure | None:
    """A version's metrics, a group of bars per metric, a bar per split."""
    if not metrics:
        return None
    keys = list(dict.fromkeys(key for values in metrics.values() for key in values))
    data = [
        {"type": "bar", "name": split, "x": keys, "y": [values.get(key) for key in keys]}
        for split, values in metrics.items()
    ]
    return {"data": data, "layout": _layout("Metrics per split", barmode="group")}


def run_curves(
    curves: dict[str, dict[str, list[tuple[int, float]]]], labels: dict[str, str]
) -> dict[str, Figure]:
    """One chart per metric key, a line per run (overlaid to compare), by step."""
    keys = list(dict.fromkeys(key for by_key in curves.values() for key in by_key))
    figures = {}
    for key in keys:
        data = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": labels[run_id],
                "x": [step for step, _ in by_key[key]],
                "y": [value for _, value in by_key[key]],
            }
            for run_id, by_key in curves.items()
            if key in by_key
        ]
        figures[key] = {"data": data, "layout": _layout(key, xaxis={"title": {"text": "step"}})}
    return figures


def importance_figure(features: Sequence[dict[str, Any]]) -> Figure:
    """Global (permutation) importance, the most important feature on top, the spread as error bars."""
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [item["mean"] for item in features],
                "y": [item["feature"] for item in features],
                "error_x": {"type": "data", "array": [item["std"] for item in features]},
            }
        ],
        "layout": _layout(
            "Global importance (permutation, test split)",
            yaxis={"autorange": "reversed", "automargin": True},
            xaxis={"title": {"text": "drop in the score when the feature is shuffled"}},
            height=120 + 22 * len(features),
        ),
    }
