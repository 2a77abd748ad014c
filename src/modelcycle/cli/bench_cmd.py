"""``modelcycle bench REF [--variants all|NAME,NAME] [--batch-sizes 1,8,32,128] [--sequence-length N]
[--seconds S]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, format_bytes, say, table
from modelcycle.cli.state import open_registry
from modelcycle.errors import ConfigError

if TYPE_CHECKING:
    from modelcycle.bench import BenchReport


def bench(
    ref: Annotated[str, typer.Argument(help="The version to benchmark, e.g. digits-cnn@3.")],
    variants: Annotated[
        str,
        typer.Option("--variants", help="'all', or variant names separated by commas (the base always runs)"),
    ] = "all",
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Batch sizes to measure throughput at, comma-separated.")
    ] = "1,8,32,128",
    sequence_length: Annotated[
        int | None,
        typer.Option("--sequence-length", min=1, help="Cut or stretch token inputs to N positions."),
    ] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="Time budget of each measurement.")] = 1.0,
    json_output: JsonFlag = False,
) -> None:
    """Measure the version and each of its variants side by side, each in a fresh process on the same rows:
    latency at batch 1, throughput per batch size, peak memory and metrics. The figures go into each
    variant.json and variants/bench.json, from which serving's `auto` picks the fastest passed variant."""
    from modelcycle.bench import bench as run_bench

    listed = [name.strip() for name in variants.split(",") if name.strip()]
    names = None if listed == ["all"] else listed
    report = run_bench(
        open_registry().open(ref),
        variants=names,
        batch_sizes=_integers(batch_sizes, "--batch-sizes"),
        sequence_length=sequence_length,
        seconds=seconds,
    )
    if json_output:
        emit_json(report)
        return
    _show(report)


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: '{text}' is not a comma-separated list of integers") from None


def _show(report: BenchReport) -> None:
    """Tables that fit a terminal: each form's latency, memory and metric, its throughput, and a language
    model's generation rate."""
    machine = report.machine
    sequence = f", sequence {report.sequence_length}" if report.sequence_length is not None else ""
    say(
        f"{report.ref} on the {report.data} ({report.rows} rows{sequence}), {machine.cpu}, "
        f"{machine.usable_cores} cores, torch {machine.torch}, onnxruntime {machine.onnxruntime}",
        style="bold",
    )
    chosen = report.auto[str(report.batch_sizes[0])]
    names = [result.variant + (" *" if result.variant == chosen else "") for result in report.results]
    metric = report.primary_metric
    metric_column = [metric] if any(metric in (result.metrics or {}) for result in report.results) else []
    table(
        f"latency in ms at batch 1, peak memory ({report.seconds:g} s per measurement)",
        ["variant", "runtime", "size", *metric_column, "p50", "p95", "p99", "RSS MB", "verdict"],
        [
            [
                name,
                result.runtime,
                format_bytes(result.size_bytes),
                *((result.metrics or {}).get(metric) for _ in metric_column),
                *(f"{result.latency_ms[key]:.3g}" for key in ("p50", "p95", "p99")),
                f"{result.peak_rss_mb:.0f}",
                result.verdict or "-",
            ]
            for name, result in zip(names, report.results, strict=True)
        ],
    )
    table(
        "throughput in rows/s by batch size",
        ["variant", *(str(size) for size in report.batch_sizes)],
        [
            [name, *(f"{result.throughput[str(size)]:,.0f}" for size in report.batch_sizes)]
            for name, result in zip(names, report.results, strict=True)
        ],
    )
    generated = [result.tokens_per_second for result in report.results if result.tokens_per_second]
    if generated:
        sizes = list(generated[0])
        table(
            "generation in tokens/s by sequences decoding together (what auto compares)",
            ["variant", *sizes],
            [
                [name, *(f"{(result.tokens_per_second or {}).get(size, 0):,.1f}" for size in sizes)]
                for name, result in zip(names, report.results, strict=True)
            ],
        )
    picks = ", ".join(f"{name} at batch {size}" for size, name in report.auto.items())
    say(f"* auto picks {picks}")
    say(f"chart: {report.chart}")
