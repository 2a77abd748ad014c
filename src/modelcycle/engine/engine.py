"""The language-model engine of one served version: requests come in from the event loop (``submit``), one
thread runs the scheduler's steps while there is work, and each request reads its own events back. The
admission limits are checked at once: a prompt the model cannot hold, or one that could never fit the budget,
is the client's error (400); a full waiting queue is an overload (503 with ``Retry-After``)."""

from __future__ import annotations

import asyncio
import threading

import torch

from modelcycle.config import LlmConfig
from modelcycle.data.corpus import CorpusBlocks
from modelcycle.engine.generation import Generation, GenerationRequest
from modelcycle.engine.scheduler import Scheduler
from modelcycle.errors import OverloadedError, RequestError
from modelcycle.models.kv_cache import BatchDecoder

DRAIN_TIMEOUT_S = 60.0  # how long a closing version lets its generations run on


class Engine:
    """Continuous batching for one language model (see modelcycle.engine.scheduler)."""

    def __init__(
        self,
        model: BatchDecoder,
        preprocessor: CorpusBlocks,
        limits: LlmConfig,
        device: torch.device,
    ) -> None:
        self.preprocessor = preprocessor
        self.limits = limits
        self.context = model.context_limit()
        self.scheduler = Scheduler(model, limits, device)
        self.wake = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="modelcycle-engine", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest, *, max_wait_s: float | None = None) -> Generation:
        """Queue ``request``; its events come through the returned generation. Call from the event loop.
        ``max_wait_s``: the longest it may wait for room in the batch (an overload error beyond; None: no
        bound) — what is left of the request's time."""
        prompt = len(request.prompt)
        if self.closed:
            raise OverloadedError("the language model's engine has stopped (its version was replaced)")
        if prompt == 0:
            raise RequestError("the prompt holds no token", parameter="prompt")
        if prompt >= self.context:
            raise RequestError(
                f"{prompt} tokens, but the model's context holds {self.context} "
                "(the prompt and at least one new token)",
                parameter="prompt",
            )
        max_tokens = min(request.max_tokens, self.context - prompt)
        generation = Generation(
            request, self.preprocessor, max_tokens, asyncio.get_running_loop(), max_wait_s=max_wait_s
        )
        if generation.cost > self.limits.max_batch_tokens or request.n > self.limits.max_running:
            raise RequestError(
                f"{request.n} × ({prompt} prompt + {max_tokens} new) tokens can never fit the "
                f"engine's budget of {self.limits.max_batch_tokens} tokens and {self.limits.max_running} "
                "sequences (serve.llm)",
                parameter="n" if request.n > self.limits.max_running else "max_tokens",
            )
        with self.scheduler.lock:
            if len(self.scheduler.waiting) >= self.limits.max_waiting:
                raise OverloadedError(
                    f"the language model's waiting queue is full ({self.limits.max_waiting} requests)",
                    hint="retry later, or raise serve.llm.max_waiting",
                )
            self.scheduler.waiting.append(generation)
        with self.wake:
            self.wake.notify()
        return generation

    def waiting(self) -> int:
        return len(self.scheduler.waiting)

    def running(self) -> int:
        return self.scheduler.running()

    def cache_usage(self) -> float:
        """Positions the cache holds for the running sequences, as a share of the token budget."""
        return self.scheduler.cached_tokens / self.limits.max_batch_tokens

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Let the requests already in finish (within ``timeout_s``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.scheduler.busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the thread; the requests still in it get an overload error (503: retry elsewhere)."""
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=30)
        self.scheduler.fail_everything(OverloadedError("the language model's engine stopped"))

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.closed and not self.scheduler.busy():
                    self.wake.wait()
                if self.closed:
                    return
            try:
                self.scheduler.step()
            except Exception as error:  # the engine's own bookkeeping failed: nobody may wait for ever
                self.scheduler.fail_everything(error)
