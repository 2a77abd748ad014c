"""Dashboard pages at scale: every page of ``modelcycle ui`` over a registry of 1,000 versions and 10,000 runs
and a store of 1,000,000 predictions (benchmarks/dashboard_data.py), timed from a client in another process.
Goal: every page answers in ≤ 300 ms at the 95th percentile.

Side by side, in the same run and over the same data, what a user had before the dashboard: the static
monitoring report (`modelcycle monitor report`, the same window) and the CLI's reads for the runs list and a
model's versions (`modelcycle runs list`, `modelcycle models versions`).

Run: .venv/bin/python benchmarks/bench_dashboard.py [--home FOLDER]  → benchmarks/results/dashboard.md
(FOLDER keeps the generated data for another run; generating it takes a few minutes.)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_data import MODEL, generate
from machine import describe_machine

from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.report import monitor_report
from modelcycle.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
WARM_UP, SAMPLES = 3, 40
GOAL_MS = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


def _time_page(client: httpx.Client, url: str) -> list[float]:
    times = []
    for attempt in range(WARM_UP + SAMPLES):
        started = time.perf_counter()
        answer = client.get(url, headers={"Accept": "text/html"})
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"{url}: HTTP {answer.status_code}: {answer.text[:300]}")
        if attempt >= WARM_UP:
            times.append(elapsed)
    return times


def _time_call(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=None)
    options = parser.parse_args()
    home = options.home or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    if not (home / "monitor.db").exists():
        started = time.perf_counter()
        generate(home)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    registry = Registry(home)
    runs = [run.id for run in registry.runs.recent(limit=5)]
    last = max(record.version for record in registry.list_versions(MODEL))
    oldest_event = registry.events(limit=1)[0].id - 500
    pages = {
        "models": "/ui/",
        "model (versions 1–50 of 1,000)": f"/ui/models/{MODEL}",
        "model, page 20": f"/ui/models/{MODEL}?page=20",
        "version": f"/ui/models/{MODEL}/versions/{last}",
        "live monitoring, 1h": f"/ui/models/{MODEL}/monitor?window=1h",
        "live monitoring, 24h": f"/ui/models/{MODEL}/monitor?window=24h",
        "live monitoring, 7d (1M predictions)": f"/ui/models/{MODEL}/monitor?window=7d",
        "runs (10,000)": "/ui/runs",
        "runs, filtered by text": "/ui/runs?text=0.0012",
        "runs, page 150": "/ui/runs?page=150",
        "run": f"/ui/runs/{runs[0]}",
        "compare 2 runs": f"/ui/runs/compare?run={runs[0]}&run={runs[1]}",
        "compare 5 runs": "/ui/runs/compare?" + "&".join(f"run={run}" for run in runs),
        "timeline": "/ui/timeline",
        "timeline, older page": f"/ui/timeline?before={oldest_event}",
        "timeline, one kind": "/ui/timeline?kind=alert",
    }
    port = _free_port()
    environment = {**os.environ, "MODELCYCLE_HOME": str(home)}
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "modelcycle"), "ui", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    rows = []
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/ui/").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for name, url in pages.items():
            p50, p95, most = _percentiles(_time_page(client, url))
            rows.append((name, p50, p95, most))
            print(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {most:.1f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    store = StoreLocation(home / "monitor.db")
    events = registry.history(MODEL)
    out = Path(tempfile.mkdtemp()) / "report.html"
    baselines = {
        "static monitoring report, 1h (`monitor report --since 1h`)": _time_call(
            lambda: monitor_report(store, MODEL, since_seconds=3600, out=out, events=events), 5
        ),
        "static monitoring report, 24h": _time_call(
            lambda: monitor_report(store, MODEL, since_seconds=86400, out=out, events=events), 3
        ),
        "`runs list` read (50 newest)": _time_call(lambda: registry.runs.recent(limit=50), 20),
        "`models versions` read (1,000 rows)": _time_call(lambda: registry.list_versions(MODEL), 20),
    }
    registry.close()
    _write(rows, {name: _percentiles(times) for name, times in baselines.items()})


def _write(
    rows: list[tuple[str, float, float, float]], baselines: dict[str, tuple[float, float, float]]
) -> None:
    met = all(p95 <= GOAL_MS for _, _, p95, _ in rows)
    lines = [
        "# Dashboard pages at scale",
        "",
        f"Machine: {describe_machine()}",
        "",
        "Data (benchmarks/dashboard_data.py): one model with 1,000 versions, 10,000 runs × 20 epochs × 8 "
        "metrics (1.6 M metric rows), 1,000,000 stored predictions over 7 days, quality and drift rounds "
        "every 5 minutes (8,064 quality rows, 62,496 drift rows). SQLite registry and store.",
        "",
        f"`modelcycle ui` in its own process; one client, {SAMPLES} requests per page after {WARM_UP} "
        "warm-up requests, sequential, whole HTML page received (charts' data included).",
        "",
        f"Goal: every page ≤ {GOAL_MS:.0f} ms at p95 — **{'met' if met else 'NOT met'}**.",
        "",
        "| page | p50 ms | p95 ms | max ms |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {p50:.1f} | {p95:.1f} | {most:.1f} |" for name, p50, p95, most in rows),
        "",
        "How the live page stays bounded: its window is cut into 60 slices; each slice's predictions are "
        "counted from the (model, created) index alone and only its newest 100 are read, so a week of a "
        "million predictions reads 60 counts and at most 6,000 rows. Reading the newest 100,000 rows "
        "instead took 493 ms (p50) for 24 h and 699 ms for 7 d; counting the window's feedback with a join "
        "walked every prediction (144 ms), now it is driven from the feedback table. `modelcycle ui` "
        "freezes what its imports made (`gc.freeze()`): before, the collector's full passes over them took "
        "about 165 ms every ninth live page, which set every page's p95 near 300 ms.",
        "",
        "## Before the dashboard, on the same data in the same run",
        "",
        "The static monitoring report renders matplotlib PNGs of every stored prediction of its window; the "
        "CLI reads are what `runs list` and `models versions` print, without any chart.",
        "",
        "| what | p50 ms | p95 ms | max ms |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {p50:.1f} | {p95:.1f} | {most:.1f} |" for name, (p50, p95, most) in baselines.items()),
        "",
    ]
    path = ROOT / "benchmarks" / "results" / "dashboard.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
