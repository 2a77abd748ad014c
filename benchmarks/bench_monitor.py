"""What monitoring costs a request: the same server with monitoring off (`monitor.enabled: false`), on with
its defaults (predictions counted; requests stored with PII masking up to 2,000 a second, the rest sampled
out), and on with every request stored (`max_records_per_s: null`), side by side in one run, alternating
four times per cell (medians reported) so drift of the machine favours none. wrk, one thread, 127.0.0.1.

- digits-cnn over the Open Inference Protocol (HTTP-bound: the worst case for any per-request work);
- breast-cancer-mlp over the simple JSON API (30 named features per row, stored as sent).

Goal: ≤ 5 % throughput lost at the best concurrency, ≤ 1 ms added to p50 at concurrency 1.

Run: .venv/bin/python benchmarks/bench_monitor.py  → benchmarks/results/monitor.md   (needs `wrk`)
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PYTHON, ROOT, Load, free_port, start, stop, wrk
from machine import describe_machine

from modelcycle.config import load_config
from modelcycle.export import export_onnx
from modelcycle.pipeline import train
from modelcycle.predictor import training_split
from modelcycle.registry import Registry

CONCURRENCY = (1, 64)
ROUNDS = 4  # on 2 shared cores, identical configurations differ by up to ~5 % run to run: medians of 4


MODES = {
    "off": "enabled: false",
    "on (default: every request up to 2,000 a second stored)": "enabled: true",
    "on, every request stored": "max_records_per_s: null",
}


def serve_config(directory: Path, example: str, mode: str) -> Path:
    path = directory / f"{example}-{list(MODES).index(mode)}.yaml"
    text = (ROOT / "examples" / f"{example}.yaml").read_text()
    path.write_text(text + f"\nmonitor:\n  {MODES[mode]}\n  store: {directory / 'monitor.db'}\n")
    return path


def measure(registry: Registry, ref: str, example: str, path: str, body: dict, directory: Path) -> list[str]:
    results: dict[str, list[list[Load]]] = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            port = free_port()
            command = [PYTHON, "-m", "modelcycle", "serve", ref, "--port", str(port)]
            command += ["--config", str(serve_config(directory, example, mode))]
            home = {"MODELCYCLE_HOME": str(registry.home)}
            process = start(command, f"http://127.0.0.1:{port}/v2/health/ready", home)
            try:
                results[mode].append([wrk(f"http://127.0.0.1:{port}{path}", body, c) for c in CONCURRENCY])
            finally:
                stop(process)
    lines = [
        f"## {ref} ({path})",
        "",
        "| monitoring | " + " | ".join(f"c={c}: req/s, p50 / p99 ms" for c in CONCURRENCY) + " |",
        "| --- |" + " --- |" * len(CONCURRENCY),
    ]
    summary: dict[str, tuple[float, float]] = {}
    for mode, runs in results.items():
        for round_index, loads in enumerate(runs):
            cells = [
                f"{load.requests_per_second:.0f}, {load.p50_ms:.2f} / {load.p99_ms:.2f}" for load in loads
            ]
            lines.append(f"| {mode} (round {round_index + 1}) | " + " | ".join(cells) + " |")
        best = statistics.median(max(load.requests_per_second for load in loads) for loads in runs)
        summary[mode] = (best, statistics.median(loads[0].p50_ms for loads in runs))
    failed = sum(load.failed for runs in results.values() for loads in runs for load in loads)
    lines.append("")
    off_rate, off_p50 = summary["off"]
    for mode in list(MODES)[1:]:
        rate, p50 = summary[mode]
        lines.append(
            f"- {mode}: {rate:.0f} req/s at the best concurrency vs {off_rate:.0f} off "
            f"(median of {ROUNDS} rounds) "
            f"→ **{1 - rate / off_rate:+.1%} lost** (goal ≤ 5 %); p50 at c=1 {p50:.3f} ms vs {off_p50:.3f} "
            f"→ **{(p50 - off_p50) * 1000:+.0f} µs** (goal ≤ 1 ms)."
        )
    lines += [f"- failed requests: {failed}.", ""]
    return lines


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    started = time.perf_counter()
    lines = ["# Monitoring on vs off", "", f"Machine: {describe_machine()}", ""]
    lines += [
        "wrk, one thread, 8 s per cell, one row per request, 127.0.0.1. Monitoring on: predictions counted "
        "by class; requests stored (SQLite WAL, background writer, PII masking of strings) up to the records "
        "budget (default 2,000 a second), the rest sampled out and counted.",
        "",
    ]
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home))
        digits = train(load_config(ROOT / "examples" / "digits-cnn.yaml"), registry)
        mlp = train(load_config(ROOT / "examples" / "breast-cancer-mlp.yaml"), registry)
        assert digits is not None
        assert mlp is not None
        export_onnx(registry.open(digits.ref))
        pixels = training_split(registry.open(digits.ref), "test").images[0]
        v2 = {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, *pixels.shape],
                    "datatype": "FP32",
                    "data": pixels.ravel().tolist(),
                }
            ]
        }
        dataset = training_split(registry.open(mlp.ref), "test")
        instance = dataset.frame[dataset.features].iloc[0].to_dict()
        simple = {"instances": [instance]}
        lines += measure(registry, digits.ref, "digits-cnn", "/v2/models/digits-cnn/infer", v2, Path(home))
        lines += measure(
            registry, mlp.ref, "breast-cancer-mlp", "/v1/models/breast-cancer-mlp:predict", simple, Path(home)
        )
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    (ROOT / "benchmarks" / "results" / "monitor.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
