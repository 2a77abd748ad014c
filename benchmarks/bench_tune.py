"""Parallel tuning: wall time of ``modelcycle tune --trials 8 --workers 2`` against ``--workers 1`` on the
same config (breast-cancer-mlp, no pruning so every trial trains every epoch; short and long trials), each run
a fresh registry and a fresh command, the two orders alternated, median of the repetitions. Goal on 2 cores:
≤ 0.65x.

Run: .venv/bin/python benchmarks/bench_tune.py  → benchmarks/results/tune-workers.md
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "breast-cancer-mlp.yaml"
TRIALS, REPEATS = 8, 3
# short trials (about 0.5 s each here) show the fixed cost of K worker processes (each imports torch and
# prepares the data); long ones (about 5 s) the speed-up once trials dominate
EPOCHS = (20, 200)
WORKERS = (1, 2)
GOAL = 0.65


def overrides(epochs: int) -> list[str]:
    return [f"train.epochs={epochs}", "tune.pruner=none"]


def timed_tune(workers: int, epochs: int) -> tuple[float, dict[str, int]]:
    """Seconds for one whole ``tune`` command (start, trials, the best trained and registered) on a new
    registry, and its count of trials."""
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as home:
        command = [sys.executable, "-m", "modelcycle", "tune", str(CONFIG), "--trials", str(TRIALS)]
        command += ["--workers", str(workers), "--json", *(f"--set={value}" for value in overrides(epochs))]
        started = time.perf_counter()
        done = subprocess.run(
            command, env={**os.environ, "MODELCYCLE_HOME": home}, capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - started
    return seconds, json.loads(done.stdout)["trials"]


def measure(epochs: int) -> dict[int, list[float]]:
    """Seconds of each repetition for each number of workers."""
    seconds: dict[int, list[float]] = {workers: [] for workers in WORKERS}
    for repeat in range(REPEATS):
        order = WORKERS if repeat % 2 == 0 else WORKERS[::-1]  # alternated: both see the same machine noise
        for workers in order:
            elapsed, trials = timed_tune(workers, epochs)
            if sum(trials.values()) != TRIALS:
                raise SystemExit(f"--workers {workers} ran {trials}, not {TRIALS} trials")
            seconds[workers].append(elapsed)
            print(f"{epochs} epochs, --workers {workers}: {elapsed:.1f} s", flush=True)
    return seconds


def main() -> None:
    load_before = os.getloadavg()[0]
    results = {epochs: measure(epochs) for epochs in EPOCHS}
    load = f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    lines = [
        "# Parallel tuning: tune --workers 2 vs --workers 1",
        "",
        f"Machine: {describe_machine()}; {load}",
        "",
        f"breast-cancer-mlp, `modelcycle tune --trials {TRIALS}` with tune.pruner=none (every trial trains "
        f"every epoch); each run a new command on a new SQLite registry (whole command: start, trials, the "
        f"best trained and registered); the order alternated; median of {REPEATS} repetitions.",
        "",
        "| epochs per trial | workers | seconds (median) | all repetitions | 2 workers / 1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for epochs, seconds in results.items():
        one, two = (statistics.median(seconds[workers]) for workers in WORKERS)
        for workers, values in seconds.items():
            ratio = f"{two / one:.2f}x" if workers == WORKERS[-1] else ""
            lines.append(
                f"| {epochs} | {workers} | {statistics.median(values):.1f} | "
                f"{', '.join(f'{v:.1f}' for v in values)} | {ratio} |"
            )
    lines += ["", f"Goal on 2 cores: ≤ {GOAL}x.", ""]
    output = ROOT / "benchmarks" / "results" / "tune-workers.md"
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
