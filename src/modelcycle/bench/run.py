"""``bench(bundle)``: every variant of a version measured side by side, each in a fresh worker process on the
same prepared rows; the figures go into each variant's ``variant.json`` and, whole, into
``variants/bench.json``. ``choose_variant`` reads that file: serving's ``auto`` is decided by measurement
alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.bench.chart import draw_chart
from modelcycle.bench.machine import describe_machine
from modelcycle.bench.report import BenchReport, VariantBench
from modelcycle.bench.rows import bench_rows, is_tokens
from modelcycle.bundle import Bundle
from modelcycle.bundle.files import write_json_atomic
from modelcycle.bundle.io import VARIANTS_DIR
from modelcycle.bundle.manifest import utc_now
from modelcycle.errors import ConfigError, ModelcycleError
from modelcycle.runtime import BASE
from modelcycle.tasks import TASKS

REPORT = "bench.json"
CHART = "bench.png"
BATCH_SIZES = (1, 8, 32, 128)
ELIGIBLE = "passed"  # the only verdict auto may serve; the base is always eligible


def bench(
    bundle: Bundle,
    *,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    sequence_length: int | None = None,
    seconds: float = 1.0,
) -> BenchReport:
    """Measure the base and ``variants`` (None: all of them). The base is always measured: it is what every
    variant is compared with, and what ``auto`` falls back to."""
    names = _names(bundle, variants)
    sizes = sorted(set(batch_sizes))
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"{list(batch_sizes)} must be positive integers", parameter="batch_sizes")
    if not seconds > 0:
        raise ConfigError(f"{seconds} must be positive", parameter="seconds")
    if sequence_length is not None and sequence_length < 1:
        raise ConfigError(f"{sequence_length} must be positive", parameter="sequence_length")
    rows = bench_rows(bundle, rows=sizes[-1], sequence_length=sequence_length)
    with tempfile.TemporaryDirectory(prefix="modelcycle-bench-") as scratch:
        inputs = Path(scratch) / "inputs.npz"
        arrays: dict[str, Any] = dict(rows.inputs)  # numpy's stub reads ** as its allow_pickle flag
        np.savez(inputs, **arrays)
        job = {"bundle": str(bundle.path), "inputs": str(inputs), "batch_sizes": sizes, "seconds": seconds}
        results = [_measure(bundle, name, {**job, "variant": name, "split": rows.split}) for name in names]
    for result in results:
        if result.variant != BASE:
            _record(bundle, result)
    folder = bundle.path / VARIANTS_DIR
    folder.mkdir(exist_ok=True)
    chart = draw_chart(bundle.ref, results, sizes, folder / CHART)
    tokens = [array.shape[1] for array in rows.inputs.values() if is_tokens(array)]
    report = BenchReport(
        ref=bundle.ref,
        task=bundle.manifest.task,
        primary_metric=TASKS.get(bundle.manifest.task).primary_metric,
        date=utc_now(),
        machine=describe_machine(),
        data=f"{rows.split} split" if rows.split else "sample text",
        rows=len(next(iter(rows.inputs.values()))),
        sequence_length=tokens[0] if tokens else None,
        batch_sizes=sizes,
        seconds=seconds,
        results=results,
        auto={str(size): _fastest(bundle, _throughputs(results, size)) for size in sizes},
        chart=str(chart),
    )
    write_json_atomic(folder / REPORT, dataclasses.asdict(report))
    return report


def choose_variant(bundle: Bundle, batch_size: int = 1) -> str:
    """What ``auto`` serves: the base or a variant whose verdict is "passed", whichever ``bench.json``
    measured fastest at ``batch_size`` (a language model: in generated tokens per second); the base when
    nothing was measured there."""
    try:
        stored = json.loads((bundle.path / VARIANTS_DIR / REPORT).read_text(encoding="utf-8"))
        speeds = {
            str(entry["variant"]): entry.get("tokens_per_second") or entry["throughput"]
            for entry in stored["results"]
        }
        measured = {
            name: float(speed[str(batch_size)]) for name, speed in speeds.items() if str(batch_size) in speed
        }
    except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: nothing was measured
        return BASE
    return _fastest(bundle, measured)


def _fastest(bundle: Bundle, measured: dict[str, float]) -> str:
    """The highest measured throughput among the base and the eligible variants that still exist (ties go
    to the base); without the base's own figure there is nothing to compare with, so the base."""
    if BASE not in measured:
        return BASE
    existing = set(bundle.variant_names())
    eligible = [
        name
        for name in measured
        if name != BASE and name in existing and bundle.variant(name).manifest.verdict == ELIGIBLE
    ]
    return max([BASE, *eligible], key=lambda name: (measured[name], name == BASE))


def _throughputs(results: list[VariantBench], batch_size: int) -> dict[str, float]:
    return {
        result.variant: result.speed()[str(batch_size)]
        for result in results
        if str(batch_size) in result.speed()
    }


def _names(bundle: Bundle, variants: Sequence[str] | None) -> list[str]:
    """The base first, then the variants, each checked to exist (NotFoundError lists the known ones)."""
    chosen = bundle.variant_names() if variants is None else list(dict.fromkeys(variants))
    for name in chosen:
        if name != BASE:
            bundle.variant(name)
    return [BASE, *(name for name in chosen if name != BASE)]


def _measure(bundle: Bundle, name: str, job: dict[str, Any]) -> VariantBench:
    """Run one worker; a failure names the variant and the worker's last words."""
    completed = subprocess.run(
        [sys.executable, "-m", "modelcycle.bench.worker"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
        if completed.returncode < 0:
            reason = f"killed by signal {-completed.returncode} (out of memory?)"
        else:
            reason = lines[-1] if lines else f"exit code {completed.returncode}"
        raise ModelcycleError(f"{bundle.ref}: benchmarking variant '{name}' failed: {reason}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if name == BASE:
        runtime, size, verdict = "torch", bundle.weights_bytes, None
    else:
        manifest = bundle.variant(name).manifest
        runtime, size, verdict = manifest.runtime, manifest.size_bytes, manifest.verdict
    return VariantBench(variant=name, runtime=runtime, size_bytes=size, verdict=verdict, **result)


def _record(bundle: Bundle, result: VariantBench) -> None:
    latency = {f"{key}_batch1": result.latency_ms[key] for key in ("p50", "p95", "p99")}
    metrics = {f"throughput_batch{size}": rate for size, rate in result.throughput.items()}
    for size, rate in (result.tokens_per_second or {}).items():
        metrics[f"tokens_per_second_batch{size}"] = rate
    metrics["peak_rss_mb"] = result.peak_rss_mb
    bundle.variant(result.variant).record(latency_ms=latency, metrics=metrics)
