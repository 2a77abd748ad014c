"""What a server does beside answering requests, from start-up to shutdown: load the models, run the
monitoring rounds, share metrics between workers; on shutdown answer every accepted request first, then
store the last answers and close the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from modelcycle.config import MonitorConfig
from modelcycle.monitor.live import LiveMonitor
from modelcycle.serve.state import ServerState

logger = logging.getLogger(__name__)

SHARE_METRICS_EVERY_S = 1.0  # with --workers: how stale another worker's queue depth and counts may be


def lifespan(
    state: ServerState, monitoring: MonitorConfig
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The application's lifespan: monitoring is on unless ``monitoring.enabled`` is false."""

    @contextlib.asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        if monitoring.enabled:
            state.monitor = LiveMonitor(monitoring, state.registry, state.metrics)
        tasks = [asyncio.create_task(state.load_all())]
        if state.monitor is not None:
            tasks.append(asyncio.create_task(_watch(state, state.monitor, monitoring.interval_s)))
        if state.metrics.shared:
            tasks.append(asyncio.create_task(_share_metrics(state)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for served in state.models.values():
                await served.close()  # graceful: every accepted request is answered first
            if state.monitor is not None:
                state.monitor.close()  # after the drain, so the last answers are stored too
            state.metrics.sync_counts()  # the last records' outcomes, for the workers that stay
            state.metrics.close()

    return running


async def _share_metrics(state: ServerState) -> None:
    """With ``--workers``: a scrape reaches one worker, so each brings its shared values up to date itself."""
    while True:
        await asyncio.sleep(SHARE_METRICS_EVERY_S)
        try:
            state.refresh_metrics()
        except Exception:  # logged, and tried again: the worker's metrics must not stop for good
            logger.exception("sharing the metrics failed")


async def _watch(state: ServerState, monitor: LiveMonitor, interval_s: float) -> None:
    """Every ``interval_s``: live quality, drift and alerts, computed in a thread off the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        if not state.ready:
            continue
        try:
            await loop.run_in_executor(None, monitor.check, state.watched())
        except Exception:  # a failed round is logged and the next one tries again; serving goes on
            logger.exception("monitoring round failed")
