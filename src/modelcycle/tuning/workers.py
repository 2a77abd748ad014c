"""K trial workers on one study, and waiting for them: processes on this machine, or tasks on a Ray cluster.

On this machine each worker is ``python -m modelcycle tune-worker ORDERS``, its orders (a ``WorkerSpec``) in a
JSON file, rather than a ``multiprocessing`` child: nothing is pickled, the worker is the same entry point as
any command (errors converted to one line and an exit code), and a worker that dies (killed, out of memory,
a crash in native code) is simply an exit code the parent sees. On Ray, each worker is a task running the
same ``run_worker``; Ray ships the function and its one JSON argument to the node."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from modelcycle.errors import ConfigError, TrainingError
from modelcycle.tuning.trials import WorkerSpec, run_worker

logger = logging.getLogger(__name__)
POLL_S = 0.2
STOP_TIMEOUT_S = 30.0  # a worker told to stop ends its trial (run and Optuna trial marked failed) first


@dataclass(frozen=True)
class WorkerProcess:
    index: int
    process: subprocess.Popen[str]
    log: Path  # its stdout and stderr together


def run_processes(specs: list[WorkerSpec]) -> None:
    """Run one worker process per spec and wait for all of them; the first to fail stops the others and
    raises ``TrainingError`` with its exit code and its last error line."""
    # a folder only this user reads: the orders hold the database URL, which may hold a password
    with tempfile.TemporaryDirectory(prefix="modelcycle-tune-") as folder:
        started: list[WorkerProcess] = []
        try:
            for spec in specs:
                orders, log = (
                    Path(folder) / f"worker-{spec.index}.json",
                    Path(folder) / f"worker-{spec.index}.log",
                )
                orders.write_text(spec.to_json())
                with log.open("w") as output:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "modelcycle", "tune-worker", str(orders)],
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                started.append(WorkerProcess(spec.index, process, log))
            wait_for_processes(started)
        finally:
            stop_processes(started)


def wait_for_processes(workers: list[WorkerProcess]) -> None:
    """Return when every worker has exited with 0; raise ``TrainingError`` at the first that did not (the
    caller stops the others)."""
    running = list(workers)
    while running:
        for worker in list(running):
            code = worker.process.poll()
            if code is None:
                continue
            running.remove(worker)
            if code != 0:
                output = worker.log.read_text()
                logger.debug("tune worker %d's output:\n%s", worker.index, output)
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                raise TrainingError(
                    f"tune worker {worker.index} failed ({how}): {last_error(output)}",
                    hint="rerun with --debug for the workers' logs, or with --workers 1",
                    parameter="workers",
                )
        time.sleep(POLL_S)


def stop_processes(workers: list[WorkerProcess]) -> None:
    """Ask the workers still running to stop (SIGTERM, which a worker turns into Ctrl-C), then kill those
    that do not within ``STOP_TIMEOUT_S``."""
    alive = [worker.process for worker in workers if worker.process.poll() is None]
    for process in alive:
        process.terminate()
    for process in alive:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def last_error(output: str) -> str:
    """The line of a worker's output that says what went wrong: its last ``error:`` line, else its last
    line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1]


def run_ray_tasks(specs: list[WorkerSpec]) -> None:
    """Run one Ray task per spec on the cluster this process has joined (``ray.init``) and wait for all;
    the first to fail cancels the others and raises ``TrainingError``. Each task reserves one CPU and runs
    torch on one thread (its spec says so)."""
    import ray

    if not ray.is_initialized():
        raise ConfigError("join the Ray cluster (ray.init) before running tune workers on it")
    task = ray.remote(num_cpus=1, max_retries=0)(run_worker)
    pending = {task.remote(spec.to_json()): spec.index for spec in specs}
    try:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready)
            try:
                ray.get(ready)
            except ray.exceptions.RayError as error:
                cause = getattr(error, "cause", None) or error
                raise TrainingError(
                    f"tune worker {index} failed on the Ray cluster: {last_error(str(cause))}",
                    hint="see the task's log on the cluster (ray logs), or rerun without --ray",
                    parameter="workers",
                ) from None
    finally:
        for ref in pending:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.cancel(ref, force=True)
