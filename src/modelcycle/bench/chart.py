"""``variants/bench.png``: throughput per batch size per variant (grouped bars, log scale) beside p50 latency
at batch 1 (whiskers to p95), so a reader sees at a glance which form of the model is fastest where."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelcycle.bench.report import VariantBench
from modelcycle.bundle.files import temp_path


def draw_chart(ref: str, results: Sequence[VariantBench], batch_sizes: Sequence[int], path: Path) -> Path:
    """Draw the chart and write it atomically (a temp file beside ``path``, then a rename)."""
    from matplotlib.figure import Figure  # heavy: imported when a chart is drawn, not when bench is

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    rates, latency = figure.subplots(1, 2, width_ratios=[3, 2])
    width = 0.8 / len(results)
    positions = np.arange(len(batch_sizes))
    for index, result in enumerate(results):
        values = [result.throughput[str(size)] for size in batch_sizes]
        rates.bar(positions + (index - (len(results) - 1) / 2) * width, values, width, label=result.variant)
    rates.set_yscale("log")
    rates.set_xticks(positions, [str(size) for size in batch_sizes])
    rates.set_xlabel("batch size")
    rates.set_ylabel("rows / s (log)")
    rates.set_title(f"{ref}: throughput")
    rates.legend(fontsize="small")
    p50 = [result.latency_ms["p50"] for result in results]
    p95 = [result.latency_ms["p95"] for result in results]
    names = [result.variant for result in results]
    colours = [f"C{index}" for index in range(len(results))]
    latency.bar(names, p50, color=colours, yerr=[np.zeros(len(p50)), np.subtract(p95, p50)], capsize=4)
    latency.set_yscale("log")
    latency.set_ylabel("ms (log)")
    latency.set_title("latency at batch 1 (p50, whisker to p95)")
    latency.tick_params(axis="x", labelrotation=20)
    temp = temp_path(path.parent, path.name)
    try:
        figure.savefig(temp, format="png", dpi=100)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
