"""The prediction store: every answered request (or a sample), its masked inputs, outputs and latency, in an
embedded SQLite database (WAL, so reports and feedback read while the server writes).

Requests never wait for the disk: ``record`` puts a tuple on a bounded buffer and returns; one background
thread masks personal data, encodes JSON and writes batches in single transactions. When the buffer is full
the record is dropped and counted (``dropped``) rather than slowing the request. Retention by age and by row
count runs in the same thread. Feedback (a label or value that arrives later) lives in its own table and is
joined by request id and row.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelcycle.data import TargetEncoder
from modelcycle.monitor.pii import Masker
from modelcycle.tasks.classification import softmax

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL, row INTEGER NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    protocol TEXT NOT NULL, created REAL NOT NULL, latency_ms REAL NOT NULL,
    inputs TEXT, prediction TEXT, score REAL, probabilities TEXT,
    PRIMARY KEY (request_id, row));
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (model, created);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, row INTEGER NOT NULL, label TEXT, value REAL, created REAL NOT NULL,
    PRIMARY KEY (request_id, row));
CREATE TABLE IF NOT EXISTS quality (
    model TEXT NOT NULL, version INTEGER NOT NULL, window TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL NOT NULL, samples INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS drift (
    model TEXT NOT NULL, feature TEXT NOT NULL, method TEXT NOT NULL, score REAL NOT NULL,
    drifted INTEGER NOT NULL, rows INTEGER NOT NULL, created REAL NOT NULL);
"""


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


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the store (created with its schema if absent), committed on success."""
    with closing(sqlite3.connect(path, timeout=10.0, check_same_thread=False)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        with connection:
            yield connection


class PredictionStore:
    """The writer side of the store: a bounded buffer and the thread that drains it."""

    def __init__(
        self,
        path: Path,
        *,
        masker: Masker | None = None,
        buffer_size: int = 10_000,
        retention_days: float = 30.0,
        max_rows: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.masker = masker
        self.buffer_size = buffer_size
        self.retention_seconds = retention_days * 86_400
        self.max_rows = max_rows
        self.dropped = 0  # refused: the buffer was full
        self.failed = 0  # taken, but the write failed
        self.accepted = 0
        self.written = 0  # taken and handled (stored or failed): what flush waits for
        # A deque, not a queue.Queue: appending takes no lock and wakes no thread. The writer wakes on a
        # timer (or a flush), so serving pays neither a thread switch nor a GIL hand-over per request.
        self._buffer: collections.deque[PredictionRecord] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._committed = threading.Condition()
        with connect(self.path):
            pass  # the schema exists before the first reader looks
        self._thread = threading.Thread(target=self._drain, name="modelcycle-store", daemon=True)
        self._thread.start()

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
        """Write what is buffered, then stop the writer."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    def _drain(self) -> None:
        with closing(sqlite3.connect(self.path, timeout=10.0)) as connection:
            connection.execute("PRAGMA synchronous=NORMAL")
            last_retention = 0.0
            while True:
                self._wake.wait(WRITE_EVERY_S)
                self._wake.clear()
                closing_now = self._closing
                while self._buffer:
                    records = [self._buffer.popleft() for _ in range(min(len(self._buffer), BATCH_RECORDS))]
                    self._write(connection, records)
                if closing_now:
                    return
                if time.time() - last_retention > RETENTION_EVERY_S:
                    last_retention = time.time()
                    self.retain(connection)

    def _write(self, connection: sqlite3.Connection, records: list[PredictionRecord]) -> None:
        try:
            with connection:
                connection.executemany(INSERT, self._rows(records))
        except Exception:  # the writer thread is a boundary: if it died, storing would stop without a word
            logger.exception("prediction store %s: %d records lost", self.path, len(records))
            self.failed += len(records)
        with self._committed:
            self.written += len(records)
            self._committed.notify_all()

    def _rows(self, records: list[PredictionRecord]) -> Iterator[tuple[Any, ...]]:
        decoded = _decode_all(records)
        for record, predictions in zip(records, decoded, strict=True):
            if isinstance(record.inputs, dict):  # model-ready tensors: numbers, nothing personal to mask
                tensors = record.inputs
                rows: list[Any] = [
                    {name: array[row] for name, array in tensors.items()}
                    for row in range(len(record.outputs))
                ]
            elif self.masker is not None:
                rows = [self.masker.mask(row) for row in record.inputs]
            else:
                rows = record.inputs
            for row, inputs in enumerate(rows):
                prediction, score, probabilities = predictions[row] if predictions else (None, None, None)
                yield (
                    record.request_id,
                    row,
                    record.model,
                    record.version,
                    record.protocol,
                    record.created,
                    record.latency_ms,
                    _json(inputs),
                    prediction,
                    score,
                    None if probabilities is None else _json(probabilities),
                )

    def retain(self, connection: sqlite3.Connection | None = None) -> None:
        """Delete what is older than the retention period, then the oldest rows beyond ``max_rows``."""
        if connection is None:
            with connect(self.path) as own:
                self.retain(own)
            return
        cutoff = time.time() - self.retention_seconds
        with connection:
            connection.execute("DELETE FROM predictions WHERE created < ?", (cutoff,))
            connection.execute(
                "DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions ORDER BY created DESC "
                "LIMIT -1 OFFSET ?)",
                (self.max_rows,),
            )
            connection.execute(
                "DELETE FROM feedback WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                "p.request_id = feedback.request_id AND p.row = feedback.row)"
            )
            for table in ("quality", "drift"):
                connection.execute(f"DELETE FROM {table} WHERE created < ?", (cutoff,))


RETENTION_EVERY_S = 60
WRITE_EVERY_S = 0.2  # how long a record may wait in the buffer before it is written
BATCH_RECORDS = 2000  # records per transaction
INSERT = "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


Decoded = list[tuple[str | None, float, np.ndarray | None]]


def _decode_all(records: list[PredictionRecord]) -> list[Decoded]:
    """Per record, per row: (predicted label, its probability, every class's probability) for
    classification, (None, the value, None) for regression, nothing without a target. One softmax over all
    the records of one version, not one per request: numpy's per-call cost dominates arrays this small."""
    decoded: list[Decoded] = [[] for _ in records]
    groups: dict[int, list[int]] = {}
    for position, record in enumerate(records):
        if record.target is not None and np.ndim(record.outputs) == 2:
            groups.setdefault(id(record.target), []).append(position)
    for positions in groups.values():
        target = records[positions[0]].target
        assert target is not None
        outputs = np.concatenate(
            [np.asarray(records[position].outputs, dtype=np.float64) for position in positions]
        )
        rows = _decode(outputs, target)
        offset = 0
        for position in positions:
            size = len(records[position].outputs)
            decoded[position] = rows[offset : offset + size]
            offset += size
    return decoded


def _decode(outputs: np.ndarray, target: TargetEncoder) -> Decoded:
    if target.task != "classification":
        return [(None, float(row[0]), None) for row in target.inverse(outputs).reshape(len(outputs), -1)]
    labels = target.classes_ or [str(index) for index in range(outputs.shape[1])]
    probabilities = softmax(outputs)
    best = probabilities.argmax(axis=1)
    shares = np.round(probabilities, 6)
    return [
        (labels[index], float(probabilities[row, index]), shares[row])
        for row, index in enumerate(best.tolist())
    ]


def _json(value: Any) -> str:
    """Compact JSON (orjson: ~20× faster than the standard library on arrays), falling back to the standard
    library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)
