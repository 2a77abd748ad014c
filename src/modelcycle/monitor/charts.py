"""The monitoring report's charts as matplotlib Figures (PNG-encoded by the report, inspected by tests):
traffic, latency and live quality over clock time (UTC), predicted classes, and drift per feature with
the drifted features first, in red, against the threshold that decided them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from modelcycle.monitor.drift import ALPHA, DISTANCE_THRESHOLDS, TESTS
from modelcycle.monitor.predictions import DriftRow, QualityRow, Traffic
from modelcycle.plots import new_figure

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DRIFTED_COLOUR = "#b00020"
STEADY_COLOUR = "#4472c4"
TIME_BINS = 40
TIME_LABEL = "time (UTC)"
QUALITY_COLUMNS = 3  # live metrics side by side, then another row
LINE_STYLES = ("-", "--", ":", "-.")  # one per quality window
P_VALUE_LABEL = "−log10 p-value (Benjamini–Hochberg adjusted)"


def monitor_figures(
    traffic: Sequence[Traffic],
    quality: Sequence[QualityRow],
    drift: Sequence[DriftRow],
    *,
    alpha: float = ALPHA,
) -> list[tuple[str, Figure]]:
    """The report's charts with their titles, those without data left out; ``alpha``: the significance
    level the drift tests were decided at (the monitor config's ``drift_alpha``)."""
    figures: list[tuple[str, Figure]] = []
    if traffic:
        figures += [("Traffic", traffic_figure(traffic)), ("Latency", latency_figure(traffic))]
        if any(row.predicted_class is not None for row in traffic):
            figures.append(("Predicted classes", classes_figure(traffic)))
    if quality:
        figures.append(("Live quality (from feedback)", quality_figure(quality)))
    if drift:
        figures.append(("Drift per feature (latest check)", drift_figure(drift, alpha=alpha)))
    return figures


def traffic_figure(traffic: Sequence[Traffic]) -> Figure:
    """Predictions per second in ``TIME_BINS`` slices of the period."""
    created, edges = _time_bins(traffic)
    counts = np.histogram(created, edges)[0]
    figure = new_figure()
    axes = figure.subplots()
    axes.bar(_dates(edges[:-1]), counts / np.diff(edges), width=np.diff(edges) / 86400, align="edge")
    axes.set_ylabel("predictions / s")
    _time_axis(axes, edges[0])
    return figure


def latency_figure(traffic: Sequence[Traffic]) -> Figure:
    """Latency p50 / p95 / p99 (ms) per time slice, drawn at each slice's middle; empty slices are gaps."""
    created, edges = _time_bins(traffic)
    latency = np.array([row.latency_ms for row in traffic])
    slot = np.clip(np.searchsorted(edges, created, side="right") - 1, 0, TIME_BINS - 1)
    middles = _dates((edges[:-1] + edges[1:]) / 2)
    figure = new_figure()
    axes = figure.subplots()
    for percentile in (50, 95, 99):
        values = [
            np.percentile(latency[slot == index], percentile) if np.any(slot == index) else np.nan
            for index in range(TIME_BINS)
        ]
        axes.plot(middles, values, marker=".", label=f"p{percentile}")
    axes.set_ylabel("latency (ms)")
    axes.legend()
    _time_axis(axes, edges[0])
    return figure


def classes_figure(traffic: Sequence[Traffic]) -> Figure:
    """How often each class was predicted."""
    labels, counts = np.unique(
        [str(row.predicted_class) for row in traffic if row.predicted_class is not None], return_counts=True
    )
    figure = new_figure()
    axes = figure.subplots()
    axes.bar(labels, counts)
    axes.set_ylabel("predictions")
    return figure


def quality_figure(quality: Sequence[QualityRow]) -> Figure:
    """One panel per live metric with a line and markers per version over time (a line style per window
    when there are several), one colour per version in every panel; a single figure is still a marker."""
    series: dict[tuple[str, int | None, str], list[tuple[float, float]]] = {}
    for row in quality:
        series.setdefault((row.metric, row.version, row.window), []).append((row.created, row.value))
    metrics = sorted({metric for metric, _, _ in series})
    versions = sorted({version for _, version, _ in series}, key=_version_order)
    windows = sorted({window for _, _, window in series})
    columns = min(len(metrics), QUALITY_COLUMNS)
    rows = -(-len(metrics) // columns)
    figure = new_figure((10, 2.6 * rows + 0.4))
    grid = figure.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    panels = dict(zip(metrics, grid, strict=False))
    for axes in grid[len(metrics) :]:
        axes.set_visible(False)
    for (metric, version, window), points in sorted(
        series.items(), key=lambda item: _version_order(item[0][1])
    ):
        times, values = zip(*sorted(points), strict=True)
        name = "all versions" if version is None else f"v{version}"
        panels[metric].plot(
            _dates(np.array(times)),
            values,
            LINE_STYLES[windows.index(window) % len(LINE_STYLES)],
            marker="o",
            markersize=4,
            color=f"C{versions.index(version)}",
            label=name if len(windows) == 1 else f"{name}, {window} window",
        )
    start = min(row.created for row in quality)
    for metric, axes in panels.items():
        axes.set_title(metric)
        axes.tick_params(axis="x", labelbottom=True)  # sharex hides them above a hidden panel too
        _time_axis(axes, start, max_ticks=4)  # a third of the width: fewer clock times fit
    handles = {
        label: handle
        for axes in grid
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True)
    }
    figure.legend(list(handles.values()), list(handles), loc="outside right upper")
    return figure


def _version_order(version: int | None) -> tuple[bool, int]:
    """Versions in number order, "all versions together" (None) last."""
    return version is None, version or 0


class DriftPanel(NamedTuple):
    """The features whose drift was decided on one scale: its axis label, the threshold line (None: no
    fixed line) and (row, bar length) pairs, drifted first, then longest first."""

    label: str
    threshold: float | None
    bars: list[tuple[DriftRow, float]]


def drift_panels(drift: Sequence[DriftRow], *, alpha: float = ALPHA) -> list[DriftPanel]:
    """Each feature's drift on the scale its decision was made on, bigger meaning more drift: −log10 of
    the adjusted p-value for tests (line at −log10 ``alpha``), the distance otherwise (line at its
    threshold); one panel per scale. The static report and the dashboard both draw these."""
    bars: dict[str, list[tuple[DriftRow, float]]] = {}
    thresholds: dict[str, float | None] = {}
    for row in drift:
        label, value, threshold = _drift_measure(row, alpha)
        bars.setdefault(label, []).append((row, value))
        thresholds[label] = threshold
    return [
        DriftPanel(label, thresholds[label], sorted(rows, key=lambda item: (not item[0].drifted, -item[1])))
        for label, rows in bars.items()
    ]


def drift_figure(drift: Sequence[DriftRow], *, alpha: float = ALPHA) -> Figure:
    """The drift panels stacked, in each the drifted features first (at the top) and red."""
    panels = drift_panels(drift, alpha=alpha)
    figure = new_figure((10, 0.28 * len(drift) + 1.4 * len(panels)))
    grid = figure.subplots(
        len(panels), 1, squeeze=False, height_ratios=[len(panel.bars) + 3 for panel in panels]
    )
    for axes, panel in zip(grid.ravel(), panels, strict=True):
        _draw_drift(axes, panel.bars, panel.label, panel.threshold)
    return figure


def _drift_measure(row: DriftRow, alpha: float) -> tuple[str, float, float | None]:
    """The axis label, the bar's length and the threshold line of ``row``'s deciding score."""
    if row.method in TESTS:
        # a p-value of 0 (underflow) is the smallest positive float, so its bar is long and finite
        p_value = max(row.score, float(np.finfo(np.float64).tiny))
        return P_VALUE_LABEL, float(-np.log10(p_value)), float(-np.log10(alpha))
    return f"{row.method.replace('_', '-')} distance", row.score, DISTANCE_THRESHOLDS.get(row.method)


def _draw_drift(axes: Axes, rows: list[tuple[DriftRow, float]], label: str, threshold: float | None) -> None:
    """One panel: a bar per (row, length) top down, red where drifted, the threshold as a dashed line."""
    from matplotlib.patches import Patch

    positions = np.arange(len(rows))
    axes.barh(
        positions,
        [value for _, value in rows],
        color=[DRIFTED_COLOUR if row.drifted else STEADY_COLOUR for row, _ in rows],
    )
    axes.set_yticks(positions, labels=[f"{row.feature} ({row.method})" for row, _ in rows])
    axes.invert_yaxis()  # the first row (a drifted one) at the top
    axes.set_xlabel(f"{label} — longer bar: more drift")
    handles: list[Artist] = [
        Patch(color=DRIFTED_COLOUR, label="drifted"),
        Patch(color=STEADY_COLOUR, label="not drifted"),
    ]
    if threshold is not None:
        handles.append(
            axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
        )
    axes.legend(handles=handles, loc="lower right")


def _time_bins(traffic: Sequence[Traffic]) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's time (s since the epoch) and the edges of ``TIME_BINS`` equal slices (≥ 1 s)."""
    created = np.array([row.created for row in traffic])
    return created, np.linspace(created.min(), max(created.max(), created.min() + 1), TIME_BINS + 1)


def _dates(seconds: np.ndarray) -> np.ndarray:
    """Seconds since the epoch as matplotlib date numbers (days, in UTC)."""
    from matplotlib.dates import date2num

    return np.asarray(date2num(np.round(seconds * 1e6).astype("datetime64[us]")))


def _time_axis(axes: Axes, start: float, *, max_ticks: int | None = None) -> None:
    """Clock times on the x axis in UTC, as concise as the span allows (HH:MM:SS within a minute, the day
    where it changes); the label says UTC and the day the period starts (``start``: seconds since the
    epoch), in place of matplotlib's offset text, which overlaps the label in narrow panels; at most
    ``max_ticks`` ticks (matplotlib's choice by default)."""
    from datetime import timezone

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=timezone.utc, maxticks=max_ticks)
    clock = ["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S"]  # per tick level: years … seconds
    formatter = ConciseDateFormatter(
        locator, tz=timezone.utc, formats=clock, zero_formats=["", "%Y", "%b", "%b-%d", "%H:%M", "%H:%M:%S"]
    )
    formatter.show_offset = False
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(formatter)
    axes.set_xlabel(f"{TIME_LABEL} from {time.strftime('%Y-%m-%d', time.gmtime(start))}")
