"""Language-model serving metrics, named as vLLM names them (with the ``modelcycle_`` prefix), so that
dashboards and alerts written for vLLM read ours: time to first token, time per output token, end-to-end
latency, prompt and generated tokens, running and waiting requests, and how much of the engine's token budget
the cache holds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
PER_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.first_token = Histogram(
            "modelcycle_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first token.",
            ["model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.per_token = Histogram(
            "modelcycle_time_per_output_token_seconds",
            "Time per generated token after the first (a request's mean).",
            ["model"],
            buckets=PER_TOKEN_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "modelcycle_e2e_request_latency_seconds",
            "Time from a generation request's arrival to its last token.",
            ["model"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "modelcycle_prompt_tokens", "Prompt tokens of generation requests.", ["model"], registry=registry
        )
        self.generation_tokens = Counter(
            "modelcycle_generation_tokens", "Tokens generated.", ["model"], registry=registry
        )
        self.running = Gauge(
            "modelcycle_num_requests_running",
            "Sequences in the engine's batch (prefilling or decoding).",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "modelcycle_num_requests_waiting",
            "Generation requests waiting for room in the engine's batch.",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_usage = Gauge(
            "modelcycle_kv_cache_usage_perc",
            "Positions held in the key / value cache, as a fraction of the engine's token budget.",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )

    def finished(
        self, model: str, *, first_token_s: float | None, total_s: float, prompt: int, generated: int
    ) -> None:
        """One generation done (or left by its client): its timings and token counts."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.generation_tokens.labels(model).inc(generated)
        self.end_to_end.labels(model).observe(total_s)
        if first_token_s is not None:
            self.first_token.labels(model).observe(first_token_s)
            if generated > 1:
                self.per_token.labels(model).observe((total_s - first_token_s) / (generated - 1))
