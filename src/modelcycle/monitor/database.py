"""The prediction store in SQLite, and ``open_database``, which picks the backend by the store's location
(``PredictionDatabase`` in ``modelcycle.monitor.predictions`` is the API every caller uses;
``modelcycle.monitor.postgres`` is the PostgreSQL backend for a store that servers on several machines
share). One database file in WAL mode, so reports, feedback and the monitoring round read while the writer
process writes. Light on purpose (no numpy, no torch, no psycopg): the writer process imports it and should
start in a fraction of a second; and plain ``sqlite3``, not SQLAlchemy, on the writer's path: SQLAlchemy
Core inserted a batch 2.8× slower here (64k against 179k rows/s) and took 1.6 s to import.

The schema and what SQLite does its own way live here, marked where it is done: the replacing insert,
retention and re-sealing by rowid, the PRAGMAs, ``?`` placeholders and a sealed score or value stored as
text in a REAL column (SQLite's typing allows it). The reads both backends share, and which columns are
sealed, are in ``modelcycle.monitor.tables``.

Opened with keys (``modelcycle.monitor.encryption``), it seals the columns in ``SEALED_PREDICTION`` and
``SEALED_FEEDBACK`` on writing, and opens every sealed value it reads; plain values (rows stored while
encryption was off) read as they are."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from modelcycle.errors import ConfigError
from modelcycle.monitor import tables
from modelcycle.monitor.encryption import GIVE_KEYS, Keyring, key_id
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import (
    PREDICTION_COLUMNS,
    DatabaseError,
    DriftRow,
    LabelledInput,
    LabelledPrediction,
    PredictionDatabase,
    QualityRow,
    Resealed,
    StoredInput,
    Traffic,
    TrafficSlice,
)
from modelcycle.monitor.tables import (
    COUNT_LABELLED,
    FEEDBACK_OF,
    FIND,
    FIRST_PREDICTION,
    INSERT_DRIFT,
    INSERT_QUALITY,
    LABELLED,
    LABELLED_INPUTS,
    LABELLED_OF_VERSION,
    LATEST_DRIFT,
    QUALITY,
    RECENT_INPUTS,
    RESEAL_PAGE,
    SEALED_FEEDBACK,
    SEALED_PREDICTION,
    TRAFFIC,
)

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

# SQLite's own: OR REPLACE (PostgreSQL writes ON CONFLICT ... DO UPDATE)
INSERT_PREDICTION = (
    f"INSERT OR REPLACE INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in PREDICTION_COLUMNS)})"
)
INSERT_FEEDBACK = "INSERT INTO feedback (request_id, row, label, value, created) VALUES (?, ?, ?, ?, ?)"
NEWEST_INPUTS = "SELECT inputs FROM predictions ORDER BY rowid DESC LIMIT 1"  # rowid: SQLite's own


def _open(path: Path) -> sqlite3.Connection:
    """A connection to the store, created with its schema if absent: the one place the schema is made."""
    connection = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")  # SQLite's own, as is the next
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(SCHEMA)
    return connection


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to the store, committed on success: for tests and inspection by hand. The package
    itself goes through ``SQLiteDatabase``."""
    with closing(_open(path)) as connection, connection:
        yield connection


_translated = tables.translated(sqlite3.Error)


class SQLiteDatabase:
    """``PredictionDatabase`` over one SQLite file (created with its schema if absent), sealing what it stores
    about people when given ``keys``. Each instance holds one connection, usable from any thread but by one
    at a time."""

    def __init__(self, path: Path, keys: Keyring | None = None) -> None:
        self.path = path
        self.where = str(path)
        self.keys = keys
        try:
            self._connection = _open(path)
        except sqlite3.Error as error:
            raise DatabaseError(f"{path}: open: {error}") from error

    @_translated
    def append(self, rows: Iterable[tuple[Any, ...]]) -> None:
        # before the transaction, which then holds the lock briefly
        rows = list(tables.stored(rows, self.keys))
        with self._connection:
            self._connection.executemany(INSERT_PREDICTION, rows)

    @_translated
    def retain(self, retention_seconds: float, max_rows: int, *, now: float) -> None:
        """Retention by rowid, which follows writing order (SQLite's own: sorting a million rows by time
        took ~0.4 s). Quality and drift figures older than the period go too."""
        cutoff = now - retention_seconds
        with self._connection as connection:
            connection.execute("DELETE FROM predictions WHERE created < ?", (cutoff,))
            excess = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] - max_rows
            if excess > 0:
                oldest = "SELECT rowid FROM predictions ORDER BY rowid LIMIT ?"
                connection.execute(f"DELETE FROM predictions WHERE rowid IN ({oldest})", (excess,))
            connection.execute(
                "DELETE FROM feedback WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                "p.request_id = feedback.request_id AND p.row = feedback.row)"
            )
            connection.execute("DELETE FROM quality WHERE created < ?", (cutoff,))
            connection.execute("DELETE FROM drift WHERE created < ?", (cutoff,))

    @_translated
    def find(self, request_id: str, row: int) -> tuple[str, int] | None:
        found = self._connection.execute(FIND, (request_id, row)).fetchone()
        return None if found is None else (str(found[0]), int(found[1]))

    @_translated
    def add_feedback(
        self, request_id: str, row: int, label: str | None, value: float | None, *, created: float
    ) -> tuple[str | None, float | None] | None:
        truth = tables.stored_truth(self.keys, request_id, row, label, value)
        try:
            with self._connection:
                self._connection.execute(INSERT_FEEDBACK, (request_id, row, *truth, created))
        except sqlite3.IntegrityError:
            earlier = self._connection.execute(FEEDBACK_OF, (request_id, row)).fetchone()
            if earlier is None:  # not the primary key: something else refused it
                raise
            return tables.revealed_truth(self.keys, request_id, row, earlier)  # given before: it stands
        return None

    @_translated
    def labelled(self, model: str, *, since: float, version: int | None = None) -> list[LabelledPrediction]:
        if version is None:
            rows = self._connection.execute(LABELLED, (model, since))
        else:
            rows = self._connection.execute(LABELLED_OF_VERSION, (model, since, version))
        return tables.labelled_predictions(self.keys, rows)

    @_translated
    def labelled_inputs(self, model: str, *, since: float) -> list[LabelledInput]:
        return tables.labelled_inputs(self.keys, self._connection.execute(LABELLED_INPUTS, (model, since)))

    @_translated
    def recent_inputs(self, model: str, *, since: float, limit: int) -> list[StoredInput]:
        rows = self._connection.execute(RECENT_INPUTS, (model, since, limit))
        return tables.stored_inputs(self.keys, rows)

    @_translated
    def traffic(self, model: str, *, since: float) -> list[Traffic]:
        return tables.traffic(self.keys, self._connection.execute(TRAFFIC, (model, since)))

    @_translated
    def first_prediction(self, model: str, *, since: float) -> float | None:
        first = self._connection.execute(FIRST_PREDICTION, (model, since)).fetchone()
        return None if first is None or first[0] is None else float(first[0])

    @_translated
    def traffic_slices(self, model: str, *, edges: Sequence[float], per_slice: int) -> list[TrafficSlice]:
        return tables.traffic_slices(self.keys, self._connection.execute, model, edges, per_slice)

    @_translated
    def count_labelled(self, model: str, *, since: float) -> int:
        return int(self._connection.execute(COUNT_LABELLED, (model, since)).fetchone()[0])

    @_translated
    def add_quality(self, rows: Iterable[QualityRow]) -> None:
        with self._connection:
            self._connection.executemany(INSERT_QUALITY, rows)

    @_translated
    def quality(self, model: str, *, since: float) -> list[QualityRow]:
        return [QualityRow(*row) for row in self._connection.execute(QUALITY, (model, since))]

    @_translated
    def add_drift(self, rows: Iterable[DriftRow]) -> None:
        with self._connection:
            self._connection.executemany(INSERT_DRIFT, rows)

    @_translated
    def latest_drift(self, model: str, *, since: float) -> list[DriftRow]:
        return tables.drift_rows(self._connection.execute(LATEST_DRIFT, (model, model, since)))

    @_translated
    def sealing_key(self) -> str | None:
        newest = self._connection.execute(NEWEST_INPUTS).fetchone()
        return None if newest is None else key_id(newest[0])

    @_translated
    def reseal(self) -> Resealed:
        if self.keys is None:
            raise ConfigError(
                f"{self.path}: reseal: encryption is off, so there is no key to seal with", hint=GIVE_KEYS
            )
        # SQLite's own, both: what a rewritten row held is zeroed rather than left in the page's free space,
        # and the log that still holds the pages as they were is emptied
        self._connection.execute("PRAGMA secure_delete=ON")
        predictions = self._reseal("predictions", SEALED_PREDICTION, self.keys)
        feedback = self._reseal("feedback", SEALED_FEEDBACK, self.keys)
        busy, *_ = self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return Resealed(predictions, feedback, log_emptied=busy == 0)

    def _reseal(self, table: str, columns: tuple[str, ...], keys: Keyring) -> int:
        """Re-seal the rows of ``table`` not wholly sealed with the current key, by rowid (SQLite's own), a
        page a transaction; IMMEDIATE (SQLite's own too), so the writer cannot replace a row between its read
        and its write. A crash leaves each row sealed with the old key or the new one, both readable."""
        read = (
            f"SELECT request_id, row, {', '.join(columns)}, rowid FROM {table} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        write = f"UPDATE {table} SET {', '.join(f'{column} = ?' for column in columns)} WHERE rowid = ?"
        after, resealed = 0, 0
        while True:
            with self._connection as connection:
                connection.execute("BEGIN IMMEDIATE")
                page = connection.execute(read, (after, RESEAL_PAGE)).fetchall()
                changed = tables.resealed_page(keys, table, columns, page)
                connection.executemany(write, changed)
            resealed += len(changed)
            if len(page) < RESEAL_PAGE:
                return resealed
            after = page[-1][-1]

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SQLiteDatabase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_database(location: StoreLocation | str | Path, keys: Keyring | None = None) -> PredictionDatabase:
    """The prediction store at ``location``: a PostgreSQL database for a ``postgresql://`` (or SQLAlchemy's
    ``postgresql+psycopg://``) URL, else a SQLite file; either is created with its schema if absent. With
    ``keys`` it seals what it stores about people and reads what they sealed; without, a sealed value read
    is an EncryptionError naming its key."""
    place = StoreLocation.of(location)
    if place.path is not None:
        return SQLiteDatabase(place.path, keys)
    from modelcycle.monitor.postgres import PostgresDatabase  # psycopg only where a URL asks for it

    return PostgresDatabase(place, keys)


def dumps(value: Any) -> bytes:
    """Compact JSON (orjson: ~20× faster than the standard library on arrays), falling back to the standard
    library for what orjson refuses (integers beyond 64 bits, arrays that are not contiguous)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)  # numpy arrays and scalars
