"""The tabular request path (simple JSON, named features) side by side in one run: request rows turned
straight into the model's tensor (``TabularPreprocessor.transform_rows``) vs the DataFrame path it replaced
(``instances_dataset`` + ``transform``), for breast-cancer-mlp (30 numeric features):
- preprocessing alone, per request of 1 and 32 rows, in this process;
- `modelcycle serve` end to end (wrk, one thread, 127.0.0.1, monitoring off in both): the two servers run
  at once and take turns of 3 s at c=64 and at c=1, each paused (SIGSTOP) while the other is measured.

Run: .venv/bin/python benchmarks/bench_tabular.py  → benchmarks/results/tabular.md
(needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import BEST, alternating_turns, stop_all
from bench_serve import PYTHON, ROOT, SERVERS, free_port, start
from machine import describe_machine

from modelcycle.config import load_config
from modelcycle.instances import instance_tensors, instances_dataset
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry

TURNS = 8
CALLS = 200
TURN_SECONDS = 3


def preprocessing(predictor: Predictor, rows: list[dict[str, float]]) -> list[str]:
    lines = [
        "| rows per request | DataFrame path µs | rows path µs | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for size in (1, 32):
        batch = rows[:size]

        def through_frame(batch: list[dict[str, float]] = batch) -> None:
            predictor.preprocessor.transform(instances_dataset(batch, predictor))

        def straight(batch: list[dict[str, float]] = batch) -> None:
            instance_tensors(batch, predictor)

        frame = min(timeit.repeat(through_frame, number=CALLS, repeat=5)) / CALLS
        direct = min(timeit.repeat(straight, number=CALLS, repeat=5)) / CALLS
        lines.append(f"| {size} | {frame * 1e6:.0f} | {direct * 1e6:.1f} | {frame / direct:.0f}× |")
    return lines


def serving(registry: Registry, ref: str, config: Path, body: dict) -> list[str]:
    commands = {
        "DataFrame path (before)": [PYTHON, str(SERVERS / "frame_path.py")],
        "rows path (now)": [PYTHON, "-m", "modelcycle"],
    }
    servers = {}
    path = "/v1/models/breast-cancer-mlp:predict"
    try:
        for name, command in commands.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            arguments = ["serve", ref, "--port", str(port), "--config", str(config)]
            servers[name] = (
                start(
                    [*command, *arguments], f"{url}/v2/health/ready", {"MODELCYCLE_HOME": str(registry.home)}
                ),
                url,
            )
        results = alternating_turns(servers, path, body, TURNS, TURN_SECONDS)
    finally:
        stop_all(servers)
    lines = [
        f"| server | c={BEST} req/s (turns' range) | c=1 p50 / p99 ms (median of turns) |",
        "| --- | --- | --- |",
    ]
    for name, measured in results.items():
        rates = measured.requests_per_second
        lines.append(
            f"| {name} | {statistics.mean(rates):.0f} ({min(rates):.0f}–{max(rates):.0f}) | "
            f"{statistics.median(measured.p50_ms):.2f} / {statistics.median(measured.p99_ms):.2f} |"
        )
    before, now = (statistics.mean(results[name].requests_per_second) for name in commands)
    p50_before, p50_now = (statistics.median(results[name].p50_ms) for name in commands)
    failed = sum(measured.failed for measured in results.values())
    lines += [
        "",
        f"- throughput at c={BEST}: **{now / before:.2f}×**; p50 at c=1: {p50_now:.2f} ms vs "
        f"{p50_before:.2f} ms (**{(p50_now - p50_before) * 1000:+.0f} µs**). Failed requests: {failed}.",
    ]
    return lines


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home))
        result = train(load_config(ROOT / "examples" / "breast-cancer-mlp.yaml"), registry)
        assert result is not None
        bundle = registry.open(result.ref)
        predictor = Predictor.load(bundle)
        dataset = training_split(bundle, "test")
        rows = dataset.frame[dataset.features].to_dict(orient="records")
        config = Path(home) / "serve.yaml"
        config.write_text(
            (ROOT / "examples" / "breast-cancer-mlp.yaml").read_text() + "\nmonitor:\n  enabled: false\n"
        )
        lines = [
            "# Tabular requests: rows straight to the tensor vs through a DataFrame",
            "",
            f"Machine: {describe_machine()}",
            "",
            "## Preprocessing alone (best of 5 × 200 calls, the request's checks included)",
            "",
            *preprocessing(predictor, rows),
            "",
            "## `modelcycle serve` breast-cancer-mlp, one row per request (simple JSON, monitoring off)",
            "",
            f"wrk, one thread, {TURNS} turns of {TURN_SECONDS} s per server and concurrency, 127.0.0.1.",
            "",
            *serving(registry, result.ref, config, {"instances": rows[:1]}),
        ]
    lines += ["", f"Run time: {time.perf_counter() - started:.0f} s, {time.strftime('%Y-%m-%d')}.", ""]
    out = ROOT / "benchmarks" / "results" / "tabular.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
