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
from modelcycle.monitor.predictions import DriftRow, QualityRow, TrafficSlice
from modelcycle.registry import VersionRecord

Figure = dict[str, Any]
TIME_SLICES = 60
CURVE_POINTS = 2000
TIME_AXIS = {"type": "date", "title": {"text": "time (UTC)"}}
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 50}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    # uirevision: a refresh redraws the data but keeps the reader's zoom and hidden traces
    return {"title": {"text": title}, "margin": MARGIN, "uirevision": title, "hovermode": "closest", **extra}


def live_figures(
    slices: Sequence[TrafficSlice], quality: Sequence[QualityRow], drift: Sequence[DriftRow], *, alpha: float
) -> dict[str, Figure]:
    """The monitoring page's charts by id, those without data left out."""
    figures: dict[str, Figure] = {}
    if any(piece.predictions for piece in slices):
        figures["traffic"] = _traffic(slices)
        figures["latency"] = _latency(slices)
        if any(row.predicted_class is not None for piece in slices for row in piece.sample):
            figures["classes"] = _classes(slices)
    if quality:
        figures["quality"] = _quality(quality)
    if drift:
        figures["drift"] = drift_figure(drift, alpha=alpha)
    return figures


def latency_summary(slices: Sequence[TrafficSlice]) -> dict[str, float | None]:
    """p50 / p95 / p99 of the window's latency (ms): each slice's sample weighted by the predictions it
    stands for, so a busy slice counts as much as it should."""
    latencies, weights = [], []
    for piece in slices:
        for row in piece.sample:
            latencies.append(row.latency_ms)
            weights.append(piece.predictions / len(piece.sample))
    if not latencies:
        return {"p50": None, "p95": None, "p99": None}
    order = np.argsort(latencies)
    ranked, cumulative = np.asarray(latencies)[order], np.cumsum(np.asarray(weights)[order])
    found: dict[str, float | None] = {}
    for quantile in (50, 95, 99):
        index = int(np.searchsorted(cumulative, quantile / 100 * cumulative[-1]))
        found[f"p{quantile}"] = float(ranked[min(index, len(ranked) - 1)])
    return found


def _centres(slices: Sequence[TrafficSlice]) -> list[float]:
    return [(piece.start + piece.end) * 500.0 for piece in slices]  # ms since the epoch


def _traffic(slices: Sequence[TrafficSlice]) -> Figure:
    """Predictions per minute and version: each slice's count, shared out as its sample's versions are."""
    versions = sorted({row.version for piece in slices for row in piece.sample})
    data = []
    for version in versions:
        rates = []
        for piece in slices:
            share = (
                sum(row.version == version for row in piece.sample) / len(piece.sample) if piece.sample else 0
            )
            rates.append(round(piece.predictions * share * 60.0 / (piece.end - piece.start), 3))
        data.append(
            {
                "type": "bar",
                "name": f"v{version}",
                "x": _centres(slices),
                "y": rates,
                "hovertemplate": "%{x}<br>%{y:.3g} / min<extra>v" + str(version) + "</extra>",
            }
        )
    return {"data": data, "layout": _layout("Predictions per minute", barmode="stack", xaxis=TIME_AXIS)}


def _latency(slices: Sequence[TrafficSlice]) -> Figure:
    used = [piece for piece in slices if piece.sample]
    data = []
    for quantile in (50, 95, 99):
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"p{quantile}",
                "x": _centres(used),
                "y": [
                    round(float(np.percentile([row.latency_ms for row in piece.sample], quantile)), 3)
                    for piece in used
                ],
                "hovertemplate": "%{x}<br>%{y:.3g} ms<extra>p" + str(quantile) + "</extra>",
            }
        )
    layout = _layout("Latency (ms)", xaxis=TIME_AXIS, yaxis={"title": {"text": "ms"}, "rangemode": "tozero"})
    return {"data": data, "layout": layout}


def _classes(slices: Sequence[TrafficSlice]) -> Figure:
    """Predicted classes per version over the window (each slice's sample scaled to its count)."""
    counts: dict[int, dict[str, float]] = {}
    for piece in slices:
        weight = piece.predictions / len(piece.sample) if piece.sample else 0.0
        for row in piece.sample:
            if row.predicted_class is not None:
                by_class = counts.setdefault(row.version, {})
                by_class[row.predicted_class] = by_class.get(row.predicted_class, 0.0) + weight
    classes = sorted({name for by_class in counts.values() for name in by_class})
    data = [
        {
            "type": "bar",
            "name": f"v{version}",
            "x": classes,
            "y": [round(by_class.get(name, 0.0)) for name in classes],
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
            "x": [row.created * 1000.0 for row in rows],
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
                "x": [step for step, _ in _thinned(by_key[key])],
                "y": [value for _, value in _thinned(by_key[key])],
            }
            for run_id, by_key in curves.items()
            if key in by_key
        ]
        figures[key] = {"data": data, "layout": _layout(key, xaxis={"title": {"text": "step"}})}
    return figures


def _thinned(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """At most ``CURVE_POINTS`` evenly spaced points of a curve, its last one kept (a page stays small)."""
    if len(points) <= CURVE_POINTS:
        return points
    stride = -(-len(points) // CURVE_POINTS)
    return [*points[:-1:stride], points[-1]]


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
