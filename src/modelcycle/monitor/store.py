"""The prediction store: every answered request (or a sample), its masked inputs, outputs and latency, in an
embedded SQLite database (WAL, so reports and feedback read while the server writes).

Requests never wait for the disk: ``record`` puts a tuple on a bounded buffer and returns; one background
thread masks personal data, encodes JSON and writes batches in single transactions. When the buffer is full
the record is dropped and counted (``dropped``) rather than slowing the request. Retention by age and by row
count runs in the same thread. Feedback (a label or value that arrives later) lives in its own table and is
joined by request id and row.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
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
        batch_size: int = 512,
        retention_days: float = 30.0,
        max_rows: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.masker = masker
        self.batch_size = batch_size
        self.retention_seconds = retention_days * 86_400
        self.max_rows = max_rows
        self.dropped = 0
        self.accepted = 0
        self.written = 0
        self._buffer: queue.Queue[PredictionRecord | None] = queue.Queue(maxsize=buffer_size)
        self._committed = threading.Condition()
        with connect(self.path):
            pass  # the schema exists before the first reader looks
        self._thread = threading.Thread(target=self._drain, name="modelcycle-store", daemon=True)
        self._thread.start()

    def record(self, record: PredictionRecord) -> bool:
        """Queue a record for writing; False (and counted in ``dropped``) when the buffer is full."""
        try:
            self._buffer.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        self.accepted += 1
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record accepted so far is committed; False on timeout."""
        target = self.accepted
        with self._committed:
            return self._committed.wait_for(lambda: self.written >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._buffer.put(None)
        self._thread.join(timeout)

    def _drain(self) -> None:
        with closing(sqlite3.connect(self.path, timeout=10.0)) as connection:
            connection.execute("PRAGMA synchronous=NORMAL")
            last_retention = 0.0
            while True:
                batch = [self._buffer.get()]
                while len(batch) < self.batch_size and batch[-1] is not None:
                    try:
                        batch.append(self._buffer.get_nowait())
                    except queue.Empty:
                        break
                records = [item for item in batch if item is not None]
                try:
                    with connection:
                        connection.executemany(INSERT, [row for item in records for row in self._rows(item)])
                except sqlite3.Error as error:  # a full disk must not take the server down with it
                    logger.error("prediction store %s: %d records lost: %s", self.path, len(records), error)
                with self._committed:
                    self.written += len(records)
                    self._committed.notify_all()
                if batch[-1] is None:
                    return
                if time.time() - last_retention > RETENTION_EVERY_S:
                    last_retention = time.time()
                    self.retain(connection)

    def _rows(self, record: PredictionRecord) -> Iterator[tuple[Any, ...]]:
        decoded = _decode(np.asarray(record.outputs, dtype=np.float64), record.target)
        if isinstance(record.inputs, dict):  # model-ready tensors: numbers, nothing personal to mask
            tensors = record.inputs
            rows = [
                {name: array[row].tolist() for name, array in tensors.items()}
                for row in range(len(record.outputs))
            ]
        elif self.masker is not None:
            rows = [self.masker.mask(row) for row in record.inputs]
        else:
            rows = record.inputs
        for row, inputs in enumerate(rows):
            prediction, score, probabilities = decoded[row] if decoded else (None, None, None)
            yield (
                record.request_id,
                row,
                record.model,
                record.version,
                record.protocol,
                record.created,
                record.latency_ms,
                json.dumps(inputs, separators=(",", ":")),
                prediction,
                score,
                probabilities,
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
INSERT = "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _decode(outputs: np.ndarray, target: TargetEncoder | None) -> list[tuple[str | None, float, str | None]]:
    """Per row: (predicted label, its probability, JSON of every class's probability) for classification,
    (None, the value, None) for regression; nothing when there is no target."""
    if target is None or outputs.ndim != 2:
        return []
    if target.task != "classification":
        return [(None, float(row[0]), None) for row in target.inverse(outputs).reshape(len(outputs), -1)]
    labels = target.classes_ or [str(index) for index in range(outputs.shape[1])]
    rows: list[tuple[str | None, float, str | None]] = []
    for probabilities in softmax(outputs):
        best = int(probabilities.argmax())
        shares = json.dumps([round(float(value), 6) for value in probabilities], separators=(",", ":"))
        rows.append((labels[best], float(probabilities[best]), shares))
    return rows
