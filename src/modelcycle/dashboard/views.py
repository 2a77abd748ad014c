"""Each page's content as plain data, read from the registry and the prediction store: what the templates
show and the charts draw. Every read is bounded (a page of versions, runs or events; the newest
``SAMPLE_PER_SLICE`` predictions of each slice of a window), so a page costs the same with ten versions or
a thousand, a thousand predictions or a million."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelcycle.dashboard import charts
from modelcycle.dashboard.sources import Sources
from modelcycle.dashboard.ttft import first_token_quantiles
from modelcycle.errors import ConfigError, EncryptionError, NotFoundError
from modelcycle.monitor.charts import drift_panels
from modelcycle.monitor.predictions import DriftRow, PredictionDatabase, QualityRow, TrafficSlice
from modelcycle.registry import EventRecord, RunRecord, VersionRecord, parse_ref
from modelcycle.registry.runs import flat_params

VERSIONS_PER_PAGE = 50
RUNS_PER_PAGE = 50
EVENTS_PER_PAGE = 100
MODEL_EVENTS = 15
SAMPLE_PER_SLICE = 100  # the newest predictions of each slice of a window that the live charts draw
MIN_SPAN_S = 60.0  # the live charts span the window's traffic, at least this long
END_MARGIN_S = 1e-3  # the last slice ends just after now, so that a prediction made now is counted
LINEAGE_DEPTH = 20
WINDOWS = {"15m": 900, "1h": 3600, "6h": 21_600, "24h": 86_400, "7d": 604_800}
DEFAULT_WINDOW = "1h"
DEFAULT_SPLIT = "test"
ALERT_KINDS = ("alert", "alert_resolved")
COMPARE_LIMIT = 10


@dataclass(frozen=True)
class Page:
    """Which slice of a long list a page shows."""

    number: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def last(self) -> int:
        return max(1, -(-self.total // self.size))


def page_of(number: int, size: int, total: int) -> Page:
    """Page ``number`` (1 the first) of ``total`` items ``size`` a page."""
    if number < 1:
        raise ConfigError(f"{number} is not a page number (1 is the first)", parameter="page")
    return Page(number, size, total)


def models_view(sources: Sources) -> dict[str, Any]:
    """Every model with its versions, aliases and newest event."""
    registry = sources.registry
    return {"models": registry.list_models(), "latest_event": registry.newest_events()}


def model_view(sources: Sources, name: str, *, page: int = 1, split: str | None = None) -> dict[str, Any]:
    """A page of versions, newest first, with one split's metrics (``split``; the test split by default)."""
    registry = sources.registry
    name = parse_ref(name).name
    versions = list(reversed(registry.list_versions(name)))
    shown = page_of(page, VERSIONS_PER_PAGE, len(versions))
    rows = versions[shown.offset : shown.offset + shown.size]
    metrics = {record.version: sources.manifest(record).metrics for record in rows}
    splits = _keys(split for values in metrics.values() for split in values)
    if split is None:
        split = DEFAULT_SPLIT if DEFAULT_SPLIT in splits or not splits else splits[0]
    elif split not in splits:
        raise ConfigError(
            f"'{split}' is not a split of these versions ({', '.join(splits)})", parameter="split"
        )
    columns = [
        (split, key) for key in _keys(key for values in metrics.values() for key in values.get(split, {}))
    ]
    aliases = {alias: record.version for record in versions for alias in record.aliases}
    return {
        "name": name,
        "task": versions[0].task if versions else "",
        "versions": rows,
        "metrics": metrics,
        "split": split,
        "splits": splits,
        "columns": columns,
        "aliases": aliases,
        "page": shown,
        "events": registry.events(name=name, limit=MODEL_EVENTS),
        "firing": firing_alerts(sources, name),
        "figure": charts.version_metrics(rows, metrics, columns),
    }


def version_view(sources: Sources, name: str, version: int) -> dict[str, Any]:
    registry = sources.registry
    record = registry.resolve(f"{parse_ref(name).name}@{version}")
    manifest = sources.manifest(record)
    return {
        "record": record,
        "manifest": manifest,
        "ancestors": _ancestors(sources, record),
        "children": registry.children(record.ref),
        "variants": sources.variants(record),
        "events": registry.events(name=record.name, version=record.version, limit=EVENTS_PER_PAGE),
        "metric_keys": _keys(key for values in manifest.metrics.values() for key in values),
        "figure": charts.split_metrics(manifest.metrics),
    }


def _ancestors(sources: Sources, record: VersionRecord) -> list[str]:
    """Parent, grandparent, … as references (a parent of another registry, or removed, ends the chain)."""
    chain: list[str] = []
    parent = record.parent
    while parent and len(chain) < LINEAGE_DEPTH:
        chain.append(parent)
        try:
            parent = sources.registry.resolve(parent).parent
        except (NotFoundError, ConfigError):  # a parent outside this registry is shown, not followed
            break
    return chain


def runs_view(
    sources: Sources, *, name: str | None, status: str | None, text: str | None, page: int = 1
) -> dict[str, Any]:
    """A page of the runs matching the filters, newest first, with their last metrics."""
    runs = sources.registry.runs
    checked = page_of(page, RUNS_PER_PAGE, 0)
    found, total = runs.search(
        name=name, status=status, text=text, limit=RUNS_PER_PAGE, offset=checked.offset
    )
    return {
        "runs": found,
        "metric_keys": _keys(key for run in found for key in run.final_metrics)[:6],
        "names": sorted(runs.names()),
        "filters": {"name": name or "", "status": status or "", "text": text or ""},
        "page": page_of(page, RUNS_PER_PAGE, total),
    }


def run_view(sources: Sources, run_id: str) -> dict[str, Any]:
    """One run: its parameters, last metrics and every metric's curve."""
    run = sources.registry.runs.get(run_id)
    curves = sources.registry.runs.curves([run.id])
    return {"run": run, "figures": charts.run_curves(curves, {run.id: _short(run)})}


def compare_view(sources: Sources, run_ids: list[str]) -> dict[str, Any]:
    """Runs side by side: curves overlaid, last metrics and parameters, the differing ones first."""
    if not 2 <= len(run_ids) <= COMPARE_LIMIT:
        raise ConfigError(
            f"compare needs 2 to {COMPARE_LIMIT} runs, got {len(run_ids)}",
            hint="tick the runs to compare on the runs page",
            parameter="run",
        )
    runs = [sources.registry.runs.get(run_id) for run_id in run_ids]
    curves = sources.registry.runs.curves([run.id for run in runs])
    return {
        "runs": runs,
        "params": _side_by_side([flat_params(run.params) for run in runs]),
        "finals": _side_by_side([run.final_metrics for run in runs]),
        "figures": charts.run_curves(curves, {run.id: _short(run) for run in runs}),
    }


def _side_by_side(values: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
    """(key, each run's value, whether they differ), the differing keys first."""
    keys = _keys(key for each in values for key in each)
    rows = [
        (key, [each.get(key) for each in values], len({repr(each.get(key)) for each in values}) > 1)
        for key in keys
    ]
    return sorted(rows, key=lambda row: not row[2])


def monitor_view(sources: Sources, name: str, *, window: str, now: float | None = None) -> dict[str, Any]:
    """The live page over the last ``window``: its traffic in ``charts.TIME_SLICES`` slices (from the first
    prediction of the window, a minute at least), each counted whole and drawn from its newest
    ``SAMPLE_PER_SLICE`` predictions; live quality, the latest drift check and the firing alerts."""
    if window not in WINDOWS:
        raise ConfigError(f"'{window}' is not one of {', '.join(WINDOWS)}", parameter="window")
    record = sources.registry.resolve(parse_ref(name).name)
    now = time.time() if now is None else now
    since = now - WINDOWS[window]
    slices: list[TrafficSlice] = []
    quality: list[QualityRow] = []
    drift: list[DriftRow] = []
    labelled = 0
    unreadable = None
    with sources.database() as database:
        if database is not None:
            try:
                slices = _slices(database, record.name, since=since, now=now)
                labelled = database.count_labelled(record.name, since=since)
            except EncryptionError as error:  # the figures below are stored in plain: still shown
                unreadable = error.message
            quality = database.quality(record.name, since=since)
            drift = database.latest_drift(record.name, since=since)
    ttft = first_token_quantiles(sources.exposition, record.name) if sources.exposition else None
    total = sum(piece.predictions for piece in slices)
    return {
        "name": record.name,
        "window": window,
        "windows": list(WINDOWS),
        "total": total,
        "sampled": sum(len(piece.sample) for piece in slices),
        "labelled": labelled,
        "latency": charts.latency_summary(slices),
        "ttft": ttft,
        "unreadable": unreadable,
        "drift": _drifted_first(drift, sources.alpha),
        "drifted": [row.feature for row in drift if row.drifted],
        "firing": firing_alerts(sources, record.name),
        "figures": charts.live_figures(slices, quality, drift, alpha=sources.alpha),
    }


def _slices(database: PredictionDatabase, model: str, *, since: float, now: float) -> list[TrafficSlice]:
    first = database.first_prediction(model, since=since)
    if first is None:
        return []
    start = min(max(since, first), now - MIN_SPAN_S)
    edges = np.linspace(start, now + END_MARGIN_S, charts.TIME_SLICES + 1).tolist()
    return database.traffic_slices(model, edges=edges, per_slice=SAMPLE_PER_SLICE)


def _drifted_first(drift: list[DriftRow], alpha: float) -> list[DriftRow]:
    """The drift rows in the charts' order (each scale's most drifted first), the drifted ones first."""
    ordered = [row for panel in drift_panels(drift, alpha=alpha) for row, _ in panel.bars]
    return sorted(ordered, key=lambda row: not row.drifted)


def firing_alerts(sources: Sources, name: str) -> list[EventRecord]:
    """The alerts raised for ``name`` and not resolved since: the newest event of each alert name."""
    newest: dict[str, EventRecord] = {}
    for event in sources.registry.events(name=name, kinds=ALERT_KINDS, limit=1000):
        newest.setdefault(str(event.details.get("name", event.reason)), event)
    return [event for event in newest.values() if event.kind == "alert"]


def timeline_view(
    sources: Sources, *, name: str | None, kind: str | None, before: int | None
) -> dict[str, Any]:
    """A page of registry events, newest first (``before``: an event id, to page back)."""
    events = sources.registry.events(
        name=name or None, kinds=(kind,) if kind else (), before_id=before, limit=EVENTS_PER_PAGE
    )
    return {
        "events": events,
        "filters": {"model": name or "", "kind": kind or ""},
        "models": [model.name for model in sources.registry.list_models()],
        "older": events[-1].id if len(events) == EVENTS_PER_PAGE else None,
    }


def _keys(values: Any) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def _short(run: RunRecord) -> str:
    return f"{run.name} {run.id[:8]}"
