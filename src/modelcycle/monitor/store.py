"""The prediction store's server side: every answered request (or a sample) is handed to a writer process
(``modelcycle.monitor.writer``) that masks personal data and writes it to the store (``database``: a
SQLite file, or a PostgreSQL database that servers on several machines share), encrypted when the store
has keys (``encryption``).

Requests never wait for the disk: ``record`` appends to a bounded buffer and returns. A feeder thread wakes
every 0.2 s, decodes the outputs of what accumulated (one softmax per version), serialises it as one JSON
frame and sends it down a pipe; everything else happens in the writer process, outside this process's
GIL. A full buffer drops the record and counts it (``dropped``) rather than slowing the request; a batch
the writer could not store is counted in ``failed``. A writer that dies is started again.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.data import TargetEncoder
from modelcycle.monitor.database import dumps, open_database
from modelcycle.monitor.encryption import Keyring, check_readable
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.pii import Masker
from modelcycle.monitor.predictions import PredictionDatabase
from modelcycle.monitor.writer import RETENTION_EVERY_S, read_frame, write_frame
from modelcycle.tasks import TASKS
from modelcycle.tasks.base import StoredPrediction

logger = logging.getLogger(__name__)

WRITE_EVERY_S = 0.2  # how long a record may wait in the buffer before it is sent
BATCH_RECORDS = 2000  # records per frame (and per transaction)
RESTART_AFTER_S = 5.0  # a writer that died is started again no sooner (its batches meanwhile: failed)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs µs on the request path
class PredictionRecord:
    """One answered request as the server hands it over: raw inputs (JSON-ready, not yet masked), the
    model's outputs for its rows and the version's target encoder, which turns them into labels or values
    (None when the outputs are not predictions, e.g. generated text)."""

    request_id: str
    model: str
    version: int
    protocol: str
    created: float
    latency_ms: float
    inputs: list[Any] | dict[str, np.ndarray]  # one JSON value per row, or model-ready tensors by name
    outputs: np.ndarray  # (rows, outputs)
    target: TargetEncoder | None
    generated: str | None = None  # a language model's answer: stored as the prediction, always masked


def check_store(location: StoreLocation, keys: Keyring | None) -> None:
    """Create the store if absent, so that its tables exist before the first reader looks, and refuse
    (ConfigError) ``keys`` that cannot read its newest predictions: a server would store on but fail every
    monitoring round."""
    if location.path is not None:
        location.path.parent.mkdir(parents=True, exist_ok=True)
    with open_database(location, keys) as database:
        check_readable(database, keys, location)


class WriterGone(Exception):
    """The writer process ended or could not be started."""


class PredictionStore:
    """The server's side of the store: a bounded buffer, the feeder thread that drains it and the writer
    process it feeds. ``masking`` holds the keyword arguments of a ``Masker`` (None: store inputs as sent);
    ``keys`` encrypt what is stored about people (None: stored in plain)."""

    def __init__(
        self,
        location: StoreLocation | str | Path,
        *,
        masking: dict[str, Any] | None = None,
        keys: Keyring | None = None,
        buffer_size: int = 10_000,
        retention_days: float = 30.0,
        max_rows: int = 1_000_000,
    ) -> None:
        self.location = StoreLocation.of(location)
        if masking is not None:
            Masker(**masking)  # a bad rule or pattern is a configuration error now, not a dead writer later
        self.keys = keys
        self.settings = {
            "path": self.location.url or str(self.location.path),  # the writer's own pipe: the password too
            "masking": masking,
            "keys": None if keys is None else keys.text(),
            "retention_seconds": retention_days * 86_400,
            "max_rows": max_rows,
        }
        self.buffer_size = buffer_size
        self.dropped = 0  # refused: the buffer was full
        self.failed = 0  # taken, but not stored
        self.accepted = 0
        self.written = 0  # taken and handled (stored or failed): what flush waits for
        self.masked: collections.Counter[str] = collections.Counter()  # personal data found, by rule
        # A deque, not a queue.Queue: appending takes no lock and wakes no thread. The feeder wakes on a
        # timer (or a flush), so serving pays neither a thread switch nor a GIL hand-over per request.
        self._buffer: collections.deque[PredictionRecord] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._committed = threading.Condition()
        self._writer: subprocess.Popen[bytes] | None = None
        self._restart_at = 0.0
        check_store(self.location, keys)
        self._thread = threading.Thread(target=self._feed, name="modelcycle-store", daemon=True)
        self._thread.start()

    def open(self) -> PredictionDatabase:
        """The store's database, with its keys: how the server reads what it stored."""
        return open_database(self.location, self.keys)

    def record(self, record: PredictionRecord) -> bool:
        """Buffer a record for writing; False (and counted in ``dropped``) when the buffer is full."""
        if len(self._buffer) >= self.buffer_size:
            self.dropped += 1
            return False
        self._buffer.append(record)
        self.accepted += 1
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record accepted so far is committed; False on timeout."""
        target = self.accepted
        self._wake.set()
        with self._committed:
            return self._committed.wait_for(lambda: self.written >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, then stop the feeder and the writer."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        writer = self._writer
        if writer is not None and writer.poll() is None:  # stuck: it must not outlive the server
            writer.kill()
            writer.wait()

    def _feed(self) -> None:
        last_sent = time.monotonic()
        while True:
            self._wake.wait(WRITE_EVERY_S)
            self._wake.clear()
            closing_now = self._closing
            while self._buffer:
                self._send([self._buffer.popleft() for _ in range(min(len(self._buffer), BATCH_RECORDS))])
                last_sent = time.monotonic()
            if closing_now:
                self._stop_writer()
                return
            if self._writer is not None and time.monotonic() - last_sent > RETENTION_EVERY_S:
                self._send([])  # a heartbeat: retention runs in the writer when no traffic comes
                last_sent = time.monotonic()

    def _send(self, records: list[PredictionRecord]) -> None:
        try:
            writer = self._running_writer()
            assert writer.stdin is not None
            assert writer.stdout is not None
            write_frame(writer.stdin, _batch(records))
            outcome = read_frame(writer.stdout)
            if outcome is None:
                raise WriterGone(f"it ended (exit code {writer.poll()})")
            self.failed += outcome["failed"]
            self.masked.update(outcome["masked"])
        except (OSError, WriterGone) as error:
            lost = len(records)
            logger.error("prediction store %s: %d records lost, writer: %s", self.location, lost, error)
            self.failed += len(records)
            self._stop_writer()
        except Exception:  # the feeder is a boundary: if it died, storing would stop without a word
            logger.exception("prediction store %s: %d records lost", self.location, len(records))
            self.failed += len(records)
        with self._committed:
            self.written += len(records)
            self._committed.notify_all()

    def _running_writer(self) -> subprocess.Popen[bytes]:
        if self._writer is not None:
            return self._writer
        if time.monotonic() < self._restart_at:
            raise WriterGone("restarting soon")
        self._restart_at = time.monotonic() + RESTART_AFTER_S
        self._writer = subprocess.Popen(
            [sys.executable, "-m", "modelcycle.monitor.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Out of the server's process group: Ctrl-C must not stop the writer (even while it starts)
            # before the server hands it the last batch. It ends with its input, also if the server dies.
            start_new_session=True,
        )
        assert self._writer.stdin is not None
        write_frame(self._writer.stdin, self.settings)
        return self._writer

    def _stop_writer(self) -> None:
        """Close the writer's input (it finishes what it has and exits); kill it if it does not."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            assert writer.stdin is not None
            writer.stdin.close()
            writer.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            writer.kill()
            writer.wait()


def _batch(records: list[PredictionRecord]) -> list[list[Any]]:
    """A frame's records in the form ``writer.stored_rows`` reads. Model-ready tensors (numbers: nothing to
    mask) go as the JSON text each row is stored as: the writer then neither parses nor re-encodes their
    numbers, which was ~9 of its ~13 µs a digits record."""
    frame = []
    for record, decoded in zip(records, _decode_all(records), strict=True):
        inputs = record.inputs
        if isinstance(inputs, dict):
            rows: list[Any] = [
                dumps({name: array[row] for name, array in inputs.items()}).decode()
                for row in range(len(record.outputs))
            ]
        else:
            rows = inputs
        frame.append(
            [
                record.request_id,
                record.model,
                record.version,
                record.protocol,
                record.created,
                record.latency_ms,
                rows,
                isinstance(inputs, dict),
                decoded,
                record.generated,
            ]
        )
    return frame


Decoded = list[StoredPrediction]


def _decode_all(records: list[PredictionRecord]) -> list[Decoded]:
    """Per record, per row: what the task stores (for classification the predicted label, its probability
    and every class's probability; for regression None, the value, None), nothing without a target. One
    decoding over all the records of one version, not one per request: numpy's per-call cost dominates
    arrays this small."""
    decoded: list[Decoded] = [[] for _ in records]
    groups: dict[int, list[int]] = {}
    for position, record in enumerate(records):
        if record.target is not None and np.ndim(record.outputs) == 2:
            groups.setdefault(id(record.target), []).append(position)
    for positions in groups.values():
        target = records[positions[0]].target
        assert target is not None
        outputs = np.concatenate([records[position].outputs for position in positions]).astype(np.float64)
        rows = _decode(outputs, target)
        offset = 0
        for position in positions:
            size = len(records[position].outputs)
            decoded[position] = rows[offset : offset + size]
            offset += size
    return decoded


def _decode(outputs: np.ndarray, target: TargetEncoder) -> Decoded:
    return TASKS.get(target.task)().stored(outputs, target.coding)
