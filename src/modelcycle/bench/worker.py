"""``python -m modelcycle.bench.worker``: benchmarks one variant in a fresh process, so that its peak memory
is its own. Reads a JSON job on stdin — ``bundle`` (path), ``variant``, ``inputs`` (an .npz of the prepared
rows), ``batch_sizes``, ``seconds`` (budget per measurement) and ``split`` (the training split to measure
metrics on, or null) — and prints one JSON result as the last line of stdout. On failure it exits non-zero
with the reason as the last line of stderr."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from modelcycle.bench.timing import latency_ms, throughput, tokens_per_second
from modelcycle.bundle import Bundle
from modelcycle.errors import ModelcycleError
from modelcycle.memory import peak_rss_bytes
from modelcycle.models.kv_cache import BatchDecoder
from modelcycle.predictor import training_split
from modelcycle.runtime import load_predictor

MAX_GENERATION_BATCH = 32  # sequences decoding together, at most, when a language model's generation is timed


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Load, time at batch 1 and at each batch size (a language model's generation too), read the peak
    memory, then measure metrics (after the memory reading: the validation data is the benchmark's, not the
    model's)."""
    bundle = Bundle(job["bundle"])
    start = time.perf_counter()
    predictor = load_predictor(bundle, job["variant"])
    load_seconds = time.perf_counter() - start
    with np.load(job["inputs"], allow_pickle=False) as stored:
        inputs = {spec.name: stored[spec.name] for spec in bundle.manifest.inputs.tensors}
    model, seconds = predictor.model, float(job["seconds"])
    latency = latency_ms(model, {name: array[:1] for name, array in inputs.items()}, max_seconds=seconds)
    sizes = [int(size) for size in job["batch_sizes"]]
    rates = {str(size): throughput(model, inputs, size, max_seconds=seconds) for size in sizes}
    generated = (
        {
            str(size): tokens_per_second(model, inputs, size, max_seconds=seconds)
            for size in sizes
            if size <= MAX_GENERATION_BATCH
        }
        if isinstance(model, BatchDecoder)
        else None
    )
    peak = peak_rss_bytes() / 2**20  # MiB
    split = job["split"]
    metrics = predictor.measure(training_split(bundle, split)) if split is not None else None
    return {
        "load_seconds": load_seconds,
        "threads": torch.get_num_threads(),
        "latency_ms": latency,
        "throughput": rates,
        "peak_rss_mb": peak,
        "metrics": metrics,
        "tokens_per_second": generated,
    }


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result alone
            result = run_job(job)
    except ModelcycleError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
