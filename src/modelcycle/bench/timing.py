"""Timing a network on the CPU: latency per call at batch 1 and rows per second at larger batches, and for a
language model the tokens it generates per second with that many sequences decoding together. Each
measurement is bounded by a call count and by a time budget, keeps a floor of calls so its percentiles mean
something, and turns the inputs into tensors before the clock starts."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from modelcycle.models.kv_cache import BatchDecoder, KVCache

MIN_LATENCY_CALLS = 20
MIN_THROUGHPUT_CALLS = 3
PROMPT_TOKENS = 32  # of each row, prefilled before the generation is timed
MAX_GENERATED = 64  # decoding steps timed at most


def batch_tensors(inputs: dict[str, np.ndarray], batch_size: int) -> list[torch.Tensor]:
    """``batch_size`` rows of every input in the model's argument order; the real rows are repeated when
    there are fewer of them than the batch holds."""
    rows = len(next(iter(inputs.values())))
    take = np.arange(batch_size) % rows
    return [torch.from_numpy(np.ascontiguousarray(array[take])) for array in inputs.values()]


def call_seconds(
    model: nn.Module,
    tensors: list[torch.Tensor],
    *,
    warmup: int,
    min_calls: int,
    max_calls: int,
    max_seconds: float,
) -> np.ndarray:
    """Seconds taken by each timed call: at least ``min_calls`` of them (unless ``max_calls`` is lower), then
    more until ``max_seconds`` have passed or ``max_calls`` were made."""
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*tensors)
        start = time.perf_counter()
        while len(times) < max_calls and (
            len(times) < min_calls or time.perf_counter() - start < max_seconds
        ):
            before = time.perf_counter()
            model(*tensors)
            times.append(time.perf_counter() - before)
    return np.asarray(times)


def latency_ms(
    model: nn.Module,
    inputs_one_row: dict[str, np.ndarray],
    *,
    warmup: int = 5,
    max_calls: int = 10_000,
    max_seconds: float = 1.0,
) -> dict[str, float]:
    """Milliseconds per call at batch 1: p50 / p95 / p99 / mean, and how many calls they summarise."""
    seconds = call_seconds(
        model,
        batch_tensors(inputs_one_row, 1),
        warmup=warmup,
        min_calls=MIN_LATENCY_CALLS,
        max_calls=max_calls,
        max_seconds=max_seconds,
    )
    p50, p95, p99 = np.percentile(seconds * 1e3, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(seconds.mean() * 1e3),
        "calls": float(len(seconds)),
    }


def throughput(
    model: nn.Module,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    *,
    max_seconds: float = 1.0,
    max_calls: int = 1_000,
) -> float:
    """Rows per second at ``batch_size``, from the median call (the machine is shared and noisy)."""
    seconds = call_seconds(
        model,
        batch_tensors(inputs, batch_size),
        warmup=1,
        min_calls=MIN_THROUGHPUT_CALLS,
        max_calls=max_calls,
        max_seconds=max_seconds,
    )
    return batch_size / float(np.median(seconds))


def tokens_per_second(
    model: BatchDecoder, inputs: dict[str, np.ndarray], batch_size: int, *, max_seconds: float = 1.0
) -> float:
    """Tokens generated per second by ``batch_size`` sequences decoding together, as the serving engine
    decodes them (one batched step over a shared cache per token), greedily, after their first
    ``PROMPT_TOKENS`` tokens (at most half the context) were prefilled; at least ``MIN_THROUGHPUT_CALLS``
    steps, then more until ``max_seconds`` or ``MAX_GENERATED`` steps (or the model's context)."""
    (token_ids,) = batch_tensors(inputs, batch_size)
    context = model.context_limit()
    prompt = token_ids[:, : min(PROMPT_TOKENS, context // 2)]  # leave the context room to generate
    rows, length = prompt.shape
    room = min(MAX_GENERATED, context - length)
    with torch.inference_mode():
        cache = KVCache(model.decode_layers())
        logits = model.decode(prompt, torch.arange(length).expand(rows, length), cache)[:, -1]
        steps, start = 0, time.perf_counter()
        while steps < room and (steps < MIN_THROUGHPUT_CALLS or time.perf_counter() - start < max_seconds):
            chosen = logits.argmax(dim=-1, keepdim=True)
            logits = model.decode(chosen, torch.full_like(chosen, length + steps), cache)[:, -1]
            steps += 1
        elapsed = time.perf_counter() - start
    return rows * steps / elapsed
