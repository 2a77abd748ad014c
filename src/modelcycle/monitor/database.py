"""The prediction store in SQLite: the one module that knows its schema and holds its SQL
(``PredictionDatabase`` in ``modelcycle.monitor.predictions`` is the API every caller uses). One database
file in WAL mode, so reports, feedback and the monitoring round read while the writer process writes.
Light on purpose (no numpy, no torch): the writer process imports it and should start in a fraction of a
second; and plain ``sqlite3``, not SQLAlchemy, on the writer's path: SQLAlchemy Core inserted a batch
2.8× slower here (64k against 179k rows/s) and took 1.6 s to import.

The statements are standard SQL but for what SQLite does its own way, marked where it is done: the
replacing insert, retention and re-sealing by rowid, the PRAGMAs and ``?`` placeholders. A second backend
writes its own behind the same methods and keeps these tables and columns (in PostgreSQL ``window`` is a
reserved word: quote it there; and a sealed score or value is text in a REAL column, which SQLite's typing
allows and PostgreSQL would store as text).

Opened with keys (``modelcycle.monitor.encryption``), it seals the columns in ``SEALED_PREDICTION`` and
``SEALED_FEEDBACK`` on writing, and opens every sealed value it reads; plain values (rows stored while
encryption was off) read as they are."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson

from modelcycle.errors import ConfigError, EncryptionError
from modelcycle.monitor.encryption import (
    GIVE_KEYS,
    Keyring,
    key_id,
    reveal,
    reveal_number,
    seal,
    stored_plain,
)
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
)

P = ParamSpec("P")
R = TypeVar("R")

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

# What a row says about one person: sealed when the database has keys. The rest stays plain for the joins,
# retention, the report's plots and alerts; NULL stays NULL (it only says that a model gives no score).
SEALED_PREDICTION = ("inputs", "prediction", "score", "probabilities")
SEALED_FEEDBACK = ("label", "value")
SEALED_AT = [(PREDICTION_COLUMNS.index(column), f"predictions.{column}") for column in SEALED_PREDICTION]
RESEAL_PAGE = 1000  # rows a transaction: the writer waits for one page at most (milliseconds)

# SQLite's own: OR REPLACE (PostgreSQL writes ON CONFLICT ... DO UPDATE)
INSERT_PREDICTION = (
    f"INSERT OR REPLACE INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in PREDICTION_COLUMNS)})"
)
INSERT_FEEDBACK = "INSERT INTO feedback (request_id, row, label, value, created) VALUES (?, ?, ?, ?, ?)"
FEEDBACK_OF = "SELECT label, value FROM feedback WHERE request_id = ? AND row = ?"
INSERT_QUALITY = (
    "INSERT INTO quality (model, version, window, metric, value, samples, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_DRIFT = (
    "INSERT INTO drift (model, feature, method, score, drifted, rows, created) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
FIND = "SELECT model, version FROM predictions WHERE request_id = ? AND row = ?"
LABELLED = (
    "SELECT p.request_id, p.row, f.label, f.value, p.score, p.probabilities "
    "FROM predictions p JOIN feedback f ON f.request_id = p.request_id AND f.row = p.row "
    "WHERE p.model = ? AND p.created >= ?"
)
LABELLED_INPUTS = (
    "SELECT p.request_id, p.row, p.inputs, f.label, f.value FROM predictions p JOIN feedback f "
    "ON f.request_id = p.request_id AND f.row = p.row WHERE p.model = ? AND p.created >= ? "
    "ORDER BY p.created"
)
COUNT_LABELLED = (
    "SELECT COUNT(*) FROM feedback f JOIN predictions p "
    "ON p.request_id = f.request_id AND p.row = f.row WHERE p.model = ? AND p.created >= ?"
)
RECENT_INPUTS = (
    "SELECT request_id, row, inputs, prediction FROM predictions WHERE model = ? AND created >= ? "
    "ORDER BY created DESC LIMIT ?"
)
# a class has a score; generated text (a language model's answer) is no class to count
TRAFFIC = (
    "SELECT request_id, row, created, latency_ms, version, "
    "CASE WHEN score IS NULL THEN NULL ELSE prediction END "
    "FROM predictions WHERE model = ? AND created >= ? ORDER BY created"
)
QUALITY = (
    "SELECT model, version, window, metric, value, samples, created FROM quality "
    "WHERE model = ? AND created >= ? ORDER BY created"
)
NEWEST_INPUTS = "SELECT inputs FROM predictions ORDER BY rowid DESC LIMIT 1"  # rowid: SQLite's own
LATEST_DRIFT = (
    "SELECT model, feature, method, score, drifted, rows, created FROM drift WHERE model = ? AND created = "
    "(SELECT MAX(created) FROM drift WHERE model = ? AND created >= ?) ORDER BY score"
)


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


def _translated(
    method: Callable[Concatenate[SQLiteDatabase, P], R],
) -> Callable[Concatenate[SQLiteDatabase, P], R]:
    """``method`` with SQLite's own errors raised as ``DatabaseError`` naming the file and the operation, so
    callers (the writer, the server, update) handle one error whatever the backend; a value that does not
    open names the file too."""

    def translated(self: SQLiteDatabase, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise DatabaseError(f"{self.path}: {method.__name__}: {error}") from error
        except EncryptionError as error:
            raise EncryptionError(f"{self.path}: {error.detail}", hint=error.hint) from None

    return translated


class SQLiteDatabase:
    """``PredictionDatabase`` over one SQLite file (created with its schema if absent), sealing what it stores
    about people when given ``keys``. Each instance holds one connection, usable from any thread but by one
    at a time."""

    def __init__(self, path: Path, keys: Keyring | None = None) -> None:
        self.path = path
        self.keys = keys
        try:
            self._connection = _open(path)
        except sqlite3.Error as error:
            raise DatabaseError(f"{path}: open: {error}") from error

    @_translated
    def append(self, rows: Iterable[tuple[Any, ...]]) -> None:
        # before the transaction, which then holds the lock briefly
        rows = list(_stored(rows, self.keys))
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
        truth: tuple[Any, ...] = (stored_plain(label), value)
        if self.keys is not None:
            truth = tuple(
                seal(self.keys, given, f"feedback.{column}", request_id, row)
                for column, given in zip(SEALED_FEEDBACK, (label, value), strict=True)
            )
        try:
            with self._connection:
                self._connection.execute(INSERT_FEEDBACK, (request_id, row, *truth, created))
        except sqlite3.IntegrityError:
            earlier = self._connection.execute(FEEDBACK_OF, (request_id, row)).fetchone()
            if earlier is None:  # not the primary key: something else refused it
                raise
            earlier_label, earlier_value = earlier  # given before: the first answer stands
            return (
                reveal(self.keys, earlier_label, "feedback.label", request_id, row),
                reveal_number(self.keys, earlier_value, "feedback.value", request_id, row),
            )
        return None

    @_translated
    def labelled(self, model: str, *, since: float, version: int | None = None) -> list[LabelledPrediction]:
        query, arguments = LABELLED, [model, since]
        if version is not None:
            query += " AND p.version = ?"
            arguments.append(version)
        keys = self.keys
        labelled = []
        for request_id, row, label, value, score, shares in self._connection.execute(query, arguments):
            probabilities = reveal(keys, shares, "predictions.probabilities", request_id, row)
            labelled.append(
                LabelledPrediction(
                    reveal(keys, label, "feedback.label", request_id, row),
                    reveal_number(keys, value, "feedback.value", request_id, row),
                    reveal_number(keys, score, "predictions.score", request_id, row),
                    json.loads(probabilities) if probabilities else None,
                )
            )
        return labelled

    @_translated
    def labelled_inputs(self, model: str, *, since: float) -> list[LabelledInput]:
        keys = self.keys
        return [
            LabelledInput(
                json.loads(reveal(keys, inputs, "predictions.inputs", request_id, row)),
                reveal(keys, label, "feedback.label", request_id, row),
                reveal_number(keys, value, "feedback.value", request_id, row),
            )
            for request_id, row, inputs, label, value in self._connection.execute(
                LABELLED_INPUTS, (model, since)
            )
        ]

    @_translated
    def recent_inputs(self, model: str, *, since: float, limit: int) -> list[StoredInput]:
        keys = self.keys
        return [
            StoredInput(
                json.loads(reveal(keys, inputs, "predictions.inputs", request_id, row)),
                reveal(keys, prediction, "predictions.prediction", request_id, row),
            )
            for request_id, row, inputs, prediction in self._connection.execute(
                RECENT_INPUTS, (model, since, limit)
            )
        ]

    @_translated
    def traffic(self, model: str, *, since: float) -> list[Traffic]:
        keys = self.keys
        return [
            Traffic(
                created, latency, version, reveal(keys, predicted, "predictions.prediction", request_id, row)
            )
            for request_id, row, created, latency, version, predicted in self._connection.execute(
                TRAFFIC, (model, since)
            )
        ]

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
        rows = self._connection.execute(LATEST_DRIFT, (model, model, since))
        return [
            DriftRow(name, feature, method, score, bool(drifted), count, created)
            for name, feature, method, score, drifted, count, created in rows
        ]

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
            f"SELECT rowid, request_id, row, {', '.join(columns)} FROM {table} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        write = f"UPDATE {table} SET {', '.join(f'{column} = ?' for column in columns)} WHERE rowid = ?"
        names = [f"{table}.{column}" for column in columns]
        after, resealed = 0, 0
        while True:
            with self._connection as connection:
                connection.execute("BEGIN IMMEDIATE")
                page = connection.execute(read, (after, RESEAL_PAGE)).fetchall()
                changed = [
                    (*_resealed(keys, names, request_id, row, values), rowid)
                    for rowid, request_id, row, *values in page
                    if any(value is not None and key_id(value) != keys.current for value in values)
                ]
                connection.executemany(write, changed)
            resealed += len(changed)
            if len(page) < RESEAL_PAGE:
                return resealed
            after = page[-1][0]

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


def open_database(location: str | Path, keys: Keyring | None = None) -> PredictionDatabase:
    """The prediction store at ``location``: today a SQLite file (created with its schema if absent); the
    place where a second backend is chosen by its URL. With ``keys`` it seals what it stores about people
    and reads what they sealed; without, a sealed value read is an EncryptionError naming its key."""
    return SQLiteDatabase(Path(location), keys)


def _resealed(
    keys: Keyring, columns: list[str], request_id: str, row: int, values: list[Any]
) -> list[str | None]:
    """One row's values sealed with the current key, opened first when sealed with another."""
    return [
        seal(keys, reveal(keys, value, column, request_id, row), column, request_id, row)
        for column, value in zip(columns, values, strict=True)
    ]


def _stored(rows: Iterable[tuple[Any, ...]], keys: Keyring | None) -> Iterator[tuple[Any, ...]]:
    """Stored predictions with their ``SEALED_PREDICTION`` values as they go to disk: sealed in place
    (request id and row) with ``keys``; without, as they are unless one would read as sealed
    (``encryption.stored_plain``)."""
    for row in rows:
        values = list(row)
        for position, column in SEALED_AT:
            value = values[position]
            values[position] = (
                stored_plain(value) if keys is None else seal(keys, value, column, values[0], values[1])
            )
        yield tuple(values)


def dumps(value: Any) -> bytes:
    """Compact JSON (orjson: ~20× faster than the standard library on arrays), falling back to the standard
    library for what orjson refuses (integers beyond 64 bits, arrays that are not contiguous)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)  # numpy arrays and scalars
