"""Adaptive batching per model version: a request on an idle queue runs at once; while a batch runs, new
requests gather and run together as the next batch (up to ``max_batch_size`` rows; under load a batch
waits at most ``max_queue_delay_ms`` more to fill). The queue is bounded — a full queue is
refused at once (503 + Retry-After) rather than growing latency — and inference runs off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from modelcycle.errors import OverloadedError, RequestError
from modelcycle.serve.deadlines import Deadlines

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors], np.ndarray]


@dataclass
class _Pending:
    inputs: Tensors
    rows: int
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)
    signature: tuple[tuple[str, tuple[int, ...], np.dtype], ...] = field(init=False)

    def __post_init__(self) -> None:
        # Requests batch together only when every input agrees beyond the batch axis. Computed once, and
        # with dtype objects: str(dtype) is Python code in numpy and showed up in request profiles.
        self.signature = tuple((name, array.shape[1:], array.dtype) for name, array in self.inputs.items())


@dataclass(frozen=True)
class BatchStats:
    """What one executed batch looked like (for metrics)."""

    rows: int
    requests: int
    queue_seconds: float
    run_seconds: float
    outputs: np.ndarray  # the batch's outputs, rows in order


class Batcher:
    """Runs ``runner`` over batches of requests on one worker thread."""

    def __init__(
        self,
        runner: Runner,
        *,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 2.0,
        max_queue: int = 256,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelcycle-batch")
        self.in_flight = 0
        self._deadlines = Deadlines()  # each waiting request's timeout, without a timer of its own

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, inputs: Tensors, *, timeout: float) -> np.ndarray:
        """The outputs for ``inputs`` (a request's rows), or OverloadedError when the queue is full or the
        answer takes longer than ``timeout`` seconds."""
        self.start()
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        rows = len(next(iter(inputs.values())))
        pending = _Pending(inputs, rows, loop.create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise OverloadedError(f"the queue is full ({self.max_queue} requests waiting)") from None

        def expire() -> None:  # not asyncio.wait_for: no extra task per request
            if not pending.future.done():
                message = f"no answer within the request's time ({timeout:.3g} s were left for the model)"
                pending.future.set_exception(OverloadedError(message))

        watched = self._deadlines.watch(timeout, expire)
        self.in_flight += 1
        try:
            return await pending.future
        finally:
            watched.discard(expire)
            self.in_flight -= 1

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every accepted request has been answered (before a version is unloaded)."""
        deadline = time.monotonic() + timeout
        while (self.in_flight or self.depth) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        carried: _Pending | None = None
        while True:
            first = carried or await queue.get()
            carried = None
            batch, rows = [first], first.rows
            idle = queue.empty()  # a request on an idle queue runs at once: no wait at low load
            deadline = time.perf_counter() + self.max_queue_delay
            while rows < self.max_batch_size:
                if not queue.empty():
                    candidate = queue.get_nowait()
                elif idle or time.perf_counter() >= deadline:
                    break
                else:  # under load: wait a little for the batch to fill
                    try:
                        candidate = await asyncio.wait_for(queue.get(), deadline - time.perf_counter())
                    except asyncio.TimeoutError:
                        break
                if candidate.signature != first.signature or rows + candidate.rows > self.max_batch_size:
                    carried = candidate
                    break
                batch.append(candidate)
                rows += candidate.rows
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.done()]  # a timed-out request is not computed
        if not live:
            return
        started = time.perf_counter()
        joined = {name: np.concatenate([item.inputs[name] for item in live]) for name in live[0].inputs}
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.runner, joined)
        except Exception as error:  # the runner's failure is every request's failure
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finished = time.perf_counter()
        finite = _finite_rows(outputs)
        offset = 0
        for item in live:
            if not item.future.done():
                part = slice(offset, offset + item.rows)
                if finite is None or finite[part].all():
                    item.future.set_result(outputs[part])
                else:
                    item.future.set_exception(_not_finite(finite[part]))
            offset += item.rows
        if self.on_batch is not None:
            queued = sum(started - item.queued_at for item in live) / len(live)
            rows = sum(item.rows for item in live)
            self.on_batch(BatchStats(rows, len(live), queued, finished - started, outputs[:rows]))


def _finite_rows(outputs: np.ndarray) -> np.ndarray | None:
    """Which rows of a batch's outputs are finite; None when all are (one pass over the batch, the common
    case, rather than one a request)."""
    if outputs.dtype.kind != "f" or np.isfinite(outputs).all():
        return None
    return np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)


def _not_finite(finite: np.ndarray) -> RequestError:
    """Inputs within float32 can still overflow inside the network (3e38 times a weight): such rows are the
    request's fault, answered 400 and counted so, never a 500 from rendering ``inf`` as JSON nor a stored
    prediction of nulls."""
    rows = ", ".join(str(row) for row in np.flatnonzero(~finite)[:10])
    return RequestError(
        f"row {rows}: the model's output is not finite (an input beyond the range the model can compute with)"
    )
