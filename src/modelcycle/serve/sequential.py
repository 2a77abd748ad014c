"""Round one's generation path, kept as the engine's baseline (``serve.llm.engine: false``): one generation
at a time per version (a lock), the model's own token loop on a worker thread. It speaks the engine's events,
so the OpenAI routes render both alike; it has one choice (``n`` 1) and no log-probabilities."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import anyio

from modelcycle.engine import Event
from modelcycle.errors import ConfigError, OverloadedError, RequestError
from modelcycle.models.sampling import SamplingParams
from modelcycle.predictor import Predictor, TextStream, stream_text


class SequentialGeneration:
    """One generation of ``prompt`` that waits for the version's ``lock``."""

    def __init__(
        self,
        predictor: Predictor,
        lock: asyncio.Lock,
        prompt: str,
        prompt_tokens: int,
        max_tokens: int,
        sampling: SamplingParams,
        stop: list[str],
        queue_timeout_s: float,
    ) -> None:
        self.predictor, self.lock, self.queue_timeout_s = predictor, lock, queue_timeout_s
        self.prompt, self.max_tokens, self.sampling, self.stop = prompt, max_tokens, sampling, stop
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    async def events(self) -> AsyncIterator[Event]:
        """The pieces as the worker thread produces them, then the finish reason; the version stays locked
        until the thread has stopped (also when the client left). Waiting for the lock is bounded by
        ``queue_timeout_s``: beyond it an overload error (503), not a wait behind every long generation."""
        try:
            await asyncio.wait_for(self.lock.acquire(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise OverloadedError(
                f"waited {self.queue_timeout_s:g} s for the language model, which generates for one "
                "request at a time (serve.llm.engine: false)",
                hint="retry later, or serve with the engine (serve.llm.engine: true)",
            ) from None
        try:
            loop = asyncio.get_running_loop()
            stream = await loop.run_in_executor(None, self._start)
            queue: asyncio.Queue[str | None] = asyncio.Queue()

            def produce(pieces: Iterator[str]) -> None:
                try:
                    for piece in pieces:
                        if self.cancelled.is_set():  # the client went away: stop computing
                            return
                        loop.call_soon_threadsafe(queue.put_nowait, piece)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            worker = loop.run_in_executor(None, produce, iter(stream))
            try:
                while (piece := await queue.get()) is not None:
                    yield Event(0, piece)
                self.completion_tokens = stream.completion_tokens
                yield Event(0, "", finish_reason=stream.finish_reason)
            finally:
                self.cancelled.set()
                with anyio.CancelScope(shield=True):
                    await worker
        finally:
            self.lock.release()

    def _start(self) -> TextStream:
        try:
            return stream_text(
                self.predictor,
                self.prompt,
                max_new_tokens=self.max_tokens,
                temperature=self.sampling.effective_temperature,
                top_k=self.sampling.top_k,
                top_p=self.sampling.top_p,
                seed=self.sampling.seed,
                stop=self.stop,
            )
        except ConfigError as error:
            raise RequestError(error.message) from None
