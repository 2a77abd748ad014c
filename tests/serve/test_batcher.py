"""The adaptive batcher alone, on a stand-in runner: an idle request runs at once, requests batch under load
(only those of one shape), a full queue and a late answer are refused, a runner's failure fails its batch's
requests only, and closing answers everything accepted first."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from modelcycle.errors import OverloadedError
from modelcycle.serve.batcher import Batcher, BatchStats


def test_the_batcher_runs_an_idle_request_at_once_and_batches_under_load() -> None:
    sizes: list[int] = []

    def runner(inputs: dict[str, np.ndarray]) -> np.ndarray:
        sizes.append(len(inputs["x"]))
        time.sleep(0.01)  # a batch takes long enough for others to queue
        return inputs["x"] * 2

    async def scenario() -> None:
        batcher = Batcher(runner, max_batch_size=16, max_queue_delay_ms=2000)
        started = time.perf_counter()
        alone = await batcher.submit({"x": np.array([[1.0]])}, timeout=5)
        assert time.perf_counter() - started < 1.0  # did not wait the 2 s for company
        np.testing.assert_array_equal(alone, [[2.0]])
        sizes.clear()
        rows = [np.array([[float(i)], [float(i) + 0.5]]) for i in range(40)]
        answers = await asyncio.gather(*(batcher.submit({"x": row}, timeout=5) for row in rows))
        for row, got in zip(rows, answers, strict=True):
            np.testing.assert_array_equal(got, row * 2)  # every request gets its own rows back
        assert max(sizes) <= 16
        assert len(sizes) < 40 // 2  # batched
        await batcher.close()

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda inputs: (time.sleep(0.2), inputs["x"])[1], max_batch_size=1, max_queue=2)
        first = []
        for _ in range(3):  # one running, then two queued
            first.append(asyncio.ensure_future(batcher.submit({"x": np.ones((1, 1))}, timeout=5)))
            await asyncio.sleep(0.02)
        with pytest.raises(OverloadedError, match="queue is full"):
            await batcher.submit({"x": np.ones((1, 1))}, timeout=5)
        await asyncio.gather(*first)
        with pytest.raises(OverloadedError, match="no answer within"):
            await batcher.submit({"x": np.ones((1, 1))}, timeout=0.01)
        await batcher.close()

    asyncio.run(scenario())


def test_only_requests_of_one_shape_share_a_batch() -> None:
    shapes: list[tuple[int, ...]] = []

    def runner(inputs: dict[str, np.ndarray]) -> np.ndarray:
        shapes.append(inputs["x"].shape)
        time.sleep(0.01)
        return inputs["x"].sum(axis=1, keepdims=True)

    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(runner, max_batch_size=64, max_queue_delay_ms=50)
        rows = [np.ones((1, 2 + index % 2)) * index for index in range(12)]  # widths 2 and 3 alternate
        answers = await asyncio.gather(*(batcher.submit({"x": row}, timeout=5) for row in rows))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [float(answer[0, 0]) for answer in answers] == [index * (2 + index % 2) for index in range(12)]
    assert all(len(shape) == 2 and shape[1] in (2, 3) for shape in shapes)  # never a mixed batch


def test_a_failing_runner_fails_its_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    def runner(inputs: dict[str, np.ndarray]) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OverloadedError("out of memory")
        return inputs["x"]

    async def scenario() -> np.ndarray:
        batcher = Batcher(runner)
        with pytest.raises(OverloadedError, match="out of memory"):
            await batcher.submit({"x": np.ones((1, 1))}, timeout=5)
        answer = await batcher.submit({"x": np.full((1, 1), 3.0)}, timeout=5)
        await batcher.close()
        return answer

    np.testing.assert_array_equal(asyncio.run(scenario()), [[3.0]])


def test_each_batch_is_reported_with_its_rows_and_outputs() -> None:
    seen: list[BatchStats] = []

    async def scenario() -> None:
        batcher = Batcher(lambda inputs: inputs["x"] * 10, on_batch=seen.append)
        await batcher.submit({"x": np.array([[1.0], [2.0]])}, timeout=5)
        await batcher.close()

    asyncio.run(scenario())
    assert [(stats.rows, stats.requests) for stats in seen] == [(2, 1)]
    np.testing.assert_array_equal(seen[0].outputs, [[10.0], [20.0]])
    assert seen[0].queue_seconds >= 0
    assert seen[0].run_seconds >= 0


def test_close_answers_every_accepted_request_first() -> None:
    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(lambda inputs: (time.sleep(0.05), inputs["x"])[1], max_batch_size=1)
        pending = [asyncio.ensure_future(batcher.submit({"x": np.ones((1, 1))}, timeout=5)) for _ in range(4)]
        await asyncio.sleep(0.01)
        await batcher.close()
        assert all(future.done() for future in pending)
        return await asyncio.gather(*pending)

    assert len(asyncio.run(scenario())) == 4
