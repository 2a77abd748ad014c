"""The prediction store's on-disk form: one SQLite database in WAL mode, so reports, feedback and the
monitoring round read while the writer process writes. Light on purpose (no numpy, no torch): the writer
process imports it and should start in a fraction of a second."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson

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

INSERT_PREDICTION = "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the store (created with its schema if absent), committed on success."""
    with closing(sqlite3.connect(path, timeout=10.0, check_same_thread=False)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        with connection:
            yield connection


def retain(connection: sqlite3.Connection, retention_seconds: float, max_rows: int) -> None:
    """Delete what is older than the retention period, then the first written predictions beyond
    ``max_rows`` (by rowid, which follows writing order: sorting a million rows by time took ~0.4 s),
    then feedback whose prediction is gone."""
    cutoff = time.time() - retention_seconds
    with connection:
        connection.execute("DELETE FROM predictions WHERE created < ?", (cutoff,))
        excess = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] - max_rows
        if excess > 0:
            oldest = "SELECT rowid FROM predictions ORDER BY rowid LIMIT ?"
            connection.execute(f"DELETE FROM predictions WHERE rowid IN ({oldest})", (excess,))
        connection.execute(
            "DELETE FROM feedback WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
            "p.request_id = feedback.request_id AND p.row = feedback.row)"
        )
        for table in ("quality", "drift"):
            connection.execute(f"DELETE FROM {table} WHERE created < ?", (cutoff,))


def dumps(value: Any) -> bytes:
    """Compact JSON (orjson: ~20× faster than the standard library on arrays), falling back to the standard
    library for what orjson refuses (integers beyond 64 bits, arrays that are not contiguous)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)  # numpy arrays and scalars
