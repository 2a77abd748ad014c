"""The monitoring report's charts, as the figure objects the report turns into PNGs: drift per feature puts
the drifted features first, in red, on a scale where a longer bar is more drift; time axes are UTC clock
times; live quality is a line per version."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from matplotlib.colors import to_hex
from matplotlib.dates import ConciseDateFormatter, date2num
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from modelcycle.monitor.charts import (
    DRIFTED_COLOUR,
    STEADY_COLOUR,
    drift_figure,
    latency_figure,
    monitor_figures,
    quality_figure,
    traffic_figure,
)
from modelcycle.monitor.predictions import DriftRow, QualityRow, Traffic

START = datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc).timestamp()


def _drift(feature: str, method: str, score: float, drifted: bool) -> DriftRow:
    return DriftRow("m", feature, method, score, drifted, 500, START)


def _quality(version: int, metric: str, value: float, seconds: float) -> QualityRow:
    return QualityRow("m", version, "1h", metric, value, 40, START + seconds)


def _traffic() -> list[Traffic]:
    return [Traffic(START + index * 3, 1.0 + index % 5, 1, "benign") for index in range(30)]


def test_drifted_features_come_first_in_red_with_longer_bars_than_the_threshold() -> None:
    rows = [  # ordered as the store reads them (by score), with a p-value that underflowed to 0
        _drift("steady", "ks", 0.9, False),
        _drift("shifted", "ks", 1e-12, True),
        _drift("prediction", "chi2", 0.0, True),
        _drift("calm", "ks", 0.2, False),
    ]
    (axes,) = drift_figure(rows, alpha=0.01).axes
    names = [label.get_text() for label in axes.get_yticklabels()]
    assert names == ["prediction (chi2)", "shifted (ks)", "calm (ks)", "steady (ks)"]
    assert axes.yaxis_inverted()  # the first name is the top bar
    bars = [bar for bar in axes.patches if isinstance(bar, Rectangle)]
    assert [to_hex(bar.get_facecolor()) for bar in bars] == [DRIFTED_COLOUR] * 2 + [STEADY_COLOUR] * 2
    lengths = [bar.get_width() for bar in bars]
    assert np.allclose(lengths[1:], [12, -np.log10(0.2), -np.log10(0.9)])
    assert np.isfinite(lengths[0])
    assert lengths[0] > 300
    (threshold,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert np.asarray(threshold.get_xdata())[0] == 2.0  # −log10 of alpha = 0.01
    assert min(lengths[:2]) > 2.0 > max(lengths[2:])
    legend = axes.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()][:2] == ["drifted", "not drifted"]
    assert "p-value" in axes.get_xlabel()


def test_distances_get_their_own_panel_with_their_own_threshold() -> None:
    rows = [_drift("big", "ks", 0.5, False), _drift("wide", "wasserstein", 0.3, True)]
    tests, distances = drift_figure(rows).axes
    assert [label.get_text() for label in distances.get_yticklabels()] == ["wide (wasserstein)"]
    assert [bar.get_width() for bar in distances.patches if isinstance(bar, Rectangle)] == [0.3]
    (threshold,) = [line for line in distances.get_lines() if line.get_linestyle() == "--"]
    assert np.asarray(threshold.get_xdata())[0] == 0.1
    assert "wasserstein distance" in distances.get_xlabel()
    assert len(tests.patches) == 1


def test_time_axes_are_utc_clock_times() -> None:
    traffic = _traffic()
    quality = [_quality(1, "accuracy", 0.8, 0)]
    for figure in (traffic_figure(traffic), latency_figure(traffic), quality_figure(quality)):
        axes = figure.axes[0]
        formatter = axes.xaxis.get_major_formatter()
        assert isinstance(formatter, ConciseDateFormatter)
        assert "UTC" in axes.get_xlabel()
        assert "2026-03-14" in axes.get_xlabel()
        # a tick at 09:27:05 UTC reads as that clock time (tick level: seconds), whatever the local zone
        at = date2num(datetime(2026, 3, 14, 9, 27, 5, tzinfo=timezone.utc))
        assert formatter.format_ticks([at - 5 / 86400, at]) == ["09:27:00", "09:27:05"]


def test_live_quality_is_a_line_with_markers_per_version_in_each_metric_panel() -> None:
    quality = [_quality(1, metric, 0.8, seconds) for seconds in (0, 60, 120) for metric in ("accuracy", "f1")]
    quality += [_quality(2, metric, 0.9, 120) for metric in ("accuracy", "f1")]  # the new version: one round
    figure = quality_figure(quality)
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["accuracy", "f1"]
    for axes in panels:
        lines = [line for line in axes.get_lines() if isinstance(line, Line2D)]
        assert [line.get_label() for line in lines] == ["v1", "v2"]
        assert [len(np.asarray(line.get_xdata())) for line in lines] == [3, 1]
        assert all(line.get_marker() == "o" for line in lines)  # a single figure still shows
        assert lines[0].get_color() != lines[1].get_color()
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["v1", "v2"]


def test_the_report_has_a_chart_for_each_kind_of_data_it_has() -> None:
    traffic, quality = _traffic(), [_quality(1, "accuracy", 0.8, 0)]
    drift = [_drift("shifted", "ks", 1e-6, True)]
    titles = [title for title, _ in monitor_figures(traffic, quality, drift)]
    assert titles == [
        "Traffic",
        "Latency",
        "Predicted classes",
        "Live quality (from feedback)",
        "Drift per feature (latest check)",
    ]
    assert [title for title, _ in monitor_figures([], [], drift)] == ["Drift per feature (latest check)"]
