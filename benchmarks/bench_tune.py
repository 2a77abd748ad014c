"""Parallel tuning: wall time of ``modelcycle tune --trials 8 --workers 2`` against ``--workers 1`` on the
same config (breast-cancer-mlp, no pruning so every trial trains every epoch), each run a fresh registry and a
fresh command, the two orders alternated, median of the repetitions. Goal on 2 cores: ≤ 0.65x.

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
TRIALS, EPOCHS, REPEATS = 8, 20, 3
OVERRIDES = [f"train.epochs={EPOCHS}", "tune.pruner=none"]
WORKERS = (1, 2)
GOAL = 0.65


def timed_tune(workers: int) -> tuple[float, dict[str, int]]:
    """Seconds for one whole ``tune`` command (start, trials, the best trained and registered) on a new
    registry, and its count of trials."""
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as home:
        command = [sys.executable, "-m", "modelcycle", "tune", str(CONFIG), "--trials", str(TRIALS)]
        command += ["--workers", str(workers), "--json", *(f"--set={value}" for value in OVERRIDES)]
        started = time.perf_counter()
        done = subprocess.run(
            command, env={**os.environ, "MODELCYCLE_HOME": home}, capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - started
    return seconds, json.loads(done.stdout)["trials"]


def main() -> None:
    load_before = os.getloadavg()[0]
    seconds: dict[int, list[float]] = {workers: [] for workers in WORKERS}
    for repeat in range(REPEATS):
        order = WORKERS if repeat % 2 == 0 else WORKERS[::-1]  # alternated: both see the same machine noise
        for workers in order:
            elapsed, trials = timed_tune(workers)
            if sum(trials.values()) != TRIALS:
                raise SystemExit(f"--workers {workers} ran {trials}, not {TRIALS} trials")
            seconds[workers].append(elapsed)
            print(f"--workers {workers}: {elapsed:.1f} s", flush=True)
    load = f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    one, two = (statistics.median(seconds[workers]) for workers in WORKERS)
    ratio = two / one
    lines = [
        "# Parallel tuning: tune --workers 2 vs --workers 1",
        "",
        f"Machine: {describe_machine()}; {load}",
        "",
        f"breast-cancer-mlp, `modelcycle tune --trials {TRIALS}` with {', '.join(OVERRIDES)}; each run a new "
        f"command on a new SQLite registry (whole command: start, trials, the best trained and registered); "
        f"the order alternated; median of {REPEATS} repetitions.",
        "",
        "| workers | seconds (median) | all repetitions |",
        "| --- | --- | --- |",
        *(
            f"| {workers} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |"
            for workers, values in seconds.items()
        ),
        "",
        f"--workers 2 / --workers 1 = {ratio:.2f}x (goal ≤ {GOAL}x on 2 cores).",
        "",
    ]
    output = ROOT / "benchmarks" / "results" / "tune-workers.md"
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
