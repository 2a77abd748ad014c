"""What monitoring costs a request: the same server with monitoring off (`monitor.enabled: false`), on with
its defaults (predictions counted; requests stored with PII masking up to 1,000 a second, the rest sampled
out), and on with every request stored (`max_records_per_s: null`), side by side in one run, with a second
"off" server as a control: its "loss" is what the method reads into no difference at all. The modes
alternate within each of six rounds, and the loss is taken per round against that round's "off" (the
median and the range are reported), so slow drift of the shared machine favours none. wrk, one thread,
127.0.0.1.

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
CONTROL = "off again (control)"
ROUNDS = 6  # on 2 shared cores, identical configurations differ by up to ~5 % run to run


MODES = {
    "off": "enabled: false",
    "off again (control)": "enabled: false",
    "on (default: every request up to 1,000 a second stored)": "enabled: true",
    "on, every request stored": "max_records_per_s: null",
}


def serve_config(directory: Path, example: str, mode: str) -> Path:
    path = directory / f"{example}-{list(MODES).index(mode)}.yaml"
    text = (ROOT / "examples" / f"{example}.yaml").read_text()
    path.write_text(text + f"\nmonitor:\n  {MODES[mode]}\n  store: {directory / 'monitor.db'}\n")
    return path


def measure(registry: Registry, ref: str, example: str, path: str, body: dict, directory: Path) -> list[str]:
    results: dict[str, list[list[Load]]] = {mode: [] for mode in MODES}
    for round_index in range(ROUNDS):
        shift = round_index % len(MODES)  # each mode takes each place in a round equally often
        for mode in [*MODES][shift:] + [*MODES][:shift]:
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
    for mode, runs in results.items():
        for round_index, loads in enumerate(runs):
            cells = [
                f"{load.requests_per_second:.0f}, {load.p50_ms:.2f} / {load.p99_ms:.2f}" for load in loads
            ]
            lines.append(f"| {mode} (round {round_index + 1}) | " + " | ".join(cells) + " |")
    failed = sum(load.failed for runs in results.values() for loads in runs for load in loads)
    lines.append("")
    off = results["off"]
    best_off = [max(load.requests_per_second for load in loads) for loads in off]
    p50_off = statistics.median(loads[0].p50_ms for loads in off)
    lines.append(
        f"- off: {statistics.median(best_off):.0f} req/s at the best concurrency (median of {ROUNDS} rounds; "
        f"rounds ranged {min(best_off):.0f}–{max(best_off):.0f}, the machine's own noise)."
    )
    for mode in list(MODES)[1:]:
        runs = results[mode]
        losses = [
            1 - max(load.requests_per_second for load in loads) / best
            for loads, best in zip(runs, best_off, strict=True)
        ]
        spread = f"median of the {ROUNDS} rounds' losses against their own off rounds; range " + (
            f"{min(losses):+.1%} to {max(losses):+.1%}"
        )
        if mode == CONTROL:
            lines.append(
                f"- {mode}: {statistics.median(losses):+.1%} ({spread}): what the method reads into two "
                "identical servers, the noise floor of this machine."
            )
            continue
        p50 = statistics.median(loads[0].p50_ms for loads in runs)
        lines.append(
            f"- {mode}: **{statistics.median(losses):.1%} throughput lost** at the best concurrency "
            f"({spread}; goal ≤ 5 %); p50 at c=1 {p50:.3f} ms vs {p50_off:.3f} → "
            f"**{(p50 - p50_off) * 1000:+.0f} µs** (goal ≤ 1 ms)."
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
        "by class; requests stored (SQLite WAL, PII masking of strings) up to the records "
        "budget (default 1,000 a second), the rest sampled out and counted. The server decodes and "
        "serialises each 0.2 s of records in a thread; a writer process masks and writes them.",
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
