"""Benchmarking: every form of a version (the base and its variants) timed side by side on the same rows,
each in its own process — latency at batch 1, throughput per batch size, peak memory, metrics — and the
measured choice serving's ``auto`` makes from those figures."""

from modelcycle.bench.report import BenchReport, VariantBench
from modelcycle.bench.run import BATCH_SIZES, bench, choose_variant

__all__ = ["BATCH_SIZES", "BenchReport", "VariantBench", "bench", "choose_variant"]
