"""The prediction store in PostgreSQL: one database that server replicas on several machines write into
together, so feedback, live quality, drift, ``update`` and the report read every replica's traffic. Chosen
by ``open_database`` for a ``postgresql://`` URL (``modelcycle.monitor.location``).

Plain psycopg 3, not SQLAlchemy, on the writer's path, as ``database`` explains; psycopg is imported only
here (~0.13 s), so a SQLite store's writer never pays for it. The tables and columns are SQLite's, with
PostgreSQL's own marked where they are: ``window`` quoted; ``id``, an identity column, for the writing order
that SQLite's rowid gives (retention, the newest key); a score or value TEXT, since it holds a sealed value
when the store has keys (plain numbers are stored as their text and read back as floats); ``drifted``
BOOLEAN. A batch goes in by COPY into a temporary table and one upsert (``ON CONFLICT ... DO UPDATE``):
~65k rows/s against ~43k for ``executemany`` in pipeline mode (2000-row batches, benchmarks/results/
monitor.md).

Several processes may open it at once: the schema is created under a transaction-level advisory lock, and
retention runs in one process at a time (another that finds it running skips its turn)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import psycopg

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

CONNECT_TIMEOUT_S = 10
# advisory lock keys (any bigint): one for creating the schema, one for retention; rounds hash the model
SCHEMA_LOCK, RETENTION_LOCK = 7_202_516_001, 7_202_516_002

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    request_id TEXT NOT NULL, row INTEGER NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    protocol TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, latency_ms DOUBLE PRECISION NOT NULL,
    inputs TEXT, prediction TEXT, score TEXT, probabilities TEXT,
    PRIMARY KEY (request_id, row));
CREATE UNIQUE INDEX IF NOT EXISTS predictions_by_id ON predictions (id);
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (model, created);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, row INTEGER NOT NULL, label TEXT, value TEXT,
    created DOUBLE PRECISION NOT NULL, PRIMARY KEY (request_id, row));
CREATE TABLE IF NOT EXISTS quality (
    model TEXT NOT NULL, version INTEGER NOT NULL, "window" TEXT NOT NULL, metric TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, samples INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS quality_by_time ON quality (model, created);
CREATE TABLE IF NOT EXISTS drift (
    model TEXT NOT NULL, feature TEXT NOT NULL, method TEXT NOT NULL, score DOUBLE PRECISION NOT NULL,
    drifted BOOLEAN NOT NULL, rows INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS drift_by_time ON drift (model, created);
"""
COLUMNS = ", ".join(PREDICTION_COLUMNS)
# a session's own, emptied at each commit: where COPY puts a batch before the upsert
INCOMING = """
CREATE TEMPORARY TABLE IF NOT EXISTS incoming (
    request_id TEXT, row INTEGER, model TEXT, version INTEGER, protocol TEXT, created DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION, inputs TEXT, prediction TEXT, score TEXT, probabilities TEXT)
ON COMMIT DELETE ROWS"""
COPY_INCOMING = f"COPY incoming ({COLUMNS}) FROM STDIN"
# replacing as SQLite's INSERT OR REPLACE does, which also moves the row to the end of the writing order; in
# key order, so that two replicas' batches that share rows lock them in the same order (no deadlock)
UPSERT = (
    f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS} FROM incoming ORDER BY request_id, row "
    "ON CONFLICT (request_id, row) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in PREDICTION_COLUMNS[2:])
    + ", id = DEFAULT"
)
INSERT_FEEDBACK = (
    "INSERT INTO feedback (request_id, row, label, value, created) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (request_id, row) DO NOTHING"
)
NEWEST_INPUTS = "SELECT inputs FROM predictions ORDER BY id DESC LIMIT 1"
# a session-level lock a model, keyed by a 64-bit hash of its name (a collision, two models then led by one
# process, is as unlikely as it is harmless)
ROUND_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"


def postgres(statement: str) -> str:
    """A statement of ``tables`` (``?`` placeholders) as psycopg takes it (``%s``)."""
    return statement.replace("?", "%s")


def connect(location: StoreLocation, operation: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection in autocommit (each read its own transaction; writes open one), or a ``DatabaseError``
    naming the URL without its password and ``operation``."""
    try:
        return psycopg.connect(location.url or "", autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as error:
        raise DatabaseError(f"{location}: {operation}: {error}") from error


_translated = tables.translated(psycopg.Error)


class PostgresDatabase:
    """``PredictionDatabase`` over one PostgreSQL database (its tables created if absent), sealing what it
    stores about people when given ``keys``. Each instance holds one connection, usable from any thread but
    by one at a time."""

    def __init__(self, location: StoreLocation, keys: Keyring | None = None) -> None:
        self.location = location
        self.where = str(location)
        self.keys = keys
        self._session = self._open()

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A session with the schema in place (created if absent) and its table for incoming batches."""
        connection = connect(self.location, "open")
        try:
            with connection.transaction():
                # several replicas start at once: CREATE ... IF NOT EXISTS alone races on the catalog
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                connection.execute(SCHEMA)
            connection.execute(INCOMING)
        except psycopg.Error as error:
            connection.close()
            raise DatabaseError(f"{self.where}: open: {error}") from error
        return connection

    @property
    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The session, opened again when the last one was lost (the server restarted, the network broke):
        the operation that met the loss failed, the next one goes on. The writer holds one database for
        its whole life."""
        if self._session.closed:
            self._session = self._open()
        return self._session

    @_translated
    def append(self, rows: Iterable[tuple[Any, ...]]) -> None:
        # a row given twice: the last stands, as with SQLite (one upsert may not touch a row twice)
        batch = {(row[0], row[1]): row for row in tables.stored(rows, self.keys)}
        with self._connection.transaction(), self._connection.cursor() as cursor:
            with cursor.copy(COPY_INCOMING) as copy:
                for row in batch.values():
                    copy.write_row(row)
            cursor.execute(UPSERT)

    @_translated
    def retain(self, retention_seconds: float, max_rows: int, *, now: float) -> None:
        """Retention by ``id``, the writing order. One process at a time: two counting the excess at once
        would each delete it."""
        cutoff = now - retention_seconds
        with self._connection.transaction():
            taken = self._connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (RETENTION_LOCK,))
            if not _true(taken.fetchone()):
                return
            self._connection.execute("DELETE FROM predictions WHERE created < %s", (cutoff,))
            self._connection.execute(
                "DELETE FROM predictions WHERE id <= "
                "(SELECT id FROM predictions ORDER BY id DESC OFFSET %s LIMIT 1)",
                (max_rows,),
            )
            self._connection.execute(
                "DELETE FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                "p.request_id = f.request_id AND p.row = f.row)"
            )
            self._connection.execute("DELETE FROM quality WHERE created < %s", (cutoff,))
            self._connection.execute("DELETE FROM drift WHERE created < %s", (cutoff,))

    @_translated
    def find(self, request_id: str, row: int) -> tuple[str, int] | None:
        found = self._connection.execute(postgres(FIND), (request_id, row)).fetchone()
        return None if found is None else (str(found[0]), int(found[1]))

    @_translated
    def add_feedback(
        self, request_id: str, row: int, label: str | None, value: float | None, *, created: float
    ) -> tuple[str | None, float | None] | None:
        truth = tables.stored_truth(self.keys, request_id, row, label, value)
        added = self._connection.execute(INSERT_FEEDBACK, (request_id, row, *truth, created))
        if added.rowcount == 1:
            return None
        # given before (by this replica or another): the first answer stands
        earlier = self._connection.execute(postgres(FEEDBACK_OF), (request_id, row)).fetchone()
        if earlier is None:  # deleted in between, with its prediction, by retention
            raise DatabaseError(f"{self.where}: add_feedback: the prediction went meanwhile (retention)")
        return tables.revealed_truth(self.keys, request_id, row, (earlier[0], earlier[1]))

    @_translated
    def labelled(self, model: str, *, since: float, version: int | None = None) -> list[LabelledPrediction]:
        if version is None:
            rows = self._connection.execute(postgres(LABELLED), (model, since))
        else:
            rows = self._connection.execute(postgres(LABELLED_OF_VERSION), (model, since, version))
        return tables.labelled_predictions(self.keys, rows)

    @_translated
    def labelled_inputs(self, model: str, *, since: float) -> list[LabelledInput]:
        rows = self._connection.execute(postgres(LABELLED_INPUTS), (model, since))
        return tables.labelled_inputs(self.keys, rows)

    @_translated
    def recent_inputs(self, model: str, *, since: float, limit: int) -> list[StoredInput]:
        rows = self._connection.execute(postgres(RECENT_INPUTS), (model, since, limit))
        return tables.stored_inputs(self.keys, rows)

    @_translated
    def traffic(self, model: str, *, since: float) -> list[Traffic]:
        return tables.traffic(self.keys, self._connection.execute(postgres(TRAFFIC), (model, since)))

    @_translated
    def first_prediction(self, model: str, *, since: float) -> float | None:
        first = self._connection.execute(postgres(FIRST_PREDICTION), (model, since)).fetchone()
        return None if first is None or first[0] is None else float(first[0])

    @_translated
    def traffic_slices(self, model: str, *, edges: Sequence[float], per_slice: int) -> list[TrafficSlice]:
        return tables.traffic_slices(
            self.keys,
            lambda sql, args: self._connection.execute(postgres(sql), args),
            model,
            edges,
            per_slice,
        )

    @_translated
    def count_labelled(self, model: str, *, since: float) -> int:
        counted = self._connection.execute(postgres(COUNT_LABELLED), (model, since)).fetchone()
        return 0 if counted is None else int(counted[0])

    @_translated
    def add_quality(self, rows: Iterable[QualityRow]) -> None:
        with self._connection.transaction(), self._connection.cursor() as cursor:
            cursor.executemany(postgres(INSERT_QUALITY), list(rows))

    @_translated
    def quality(self, model: str, *, since: float) -> list[QualityRow]:
        return [QualityRow(*row) for row in self._connection.execute(postgres(QUALITY), (model, since))]

    @_translated
    def add_drift(self, rows: Iterable[DriftRow]) -> None:
        with self._connection.transaction(), self._connection.cursor() as cursor:
            cursor.executemany(postgres(INSERT_DRIFT), list(rows))

    @_translated
    def latest_drift(self, model: str, *, since: float) -> list[DriftRow]:
        return tables.drift_rows(self._connection.execute(postgres(LATEST_DRIFT), (model, model, since)))

    @_translated
    def sealing_key(self) -> str | None:
        newest = self._connection.execute(NEWEST_INPUTS).fetchone()
        return None if newest is None else key_id(newest[0])

    @_translated
    def reseal(self) -> Resealed:
        """Re-seal page by page. There is no log of this store's own to empty (``log_emptied``); the
        server's write-ahead log and the old row versions, until vacuumed and overwritten, may still hold
        the values as they were, which is the database administrator's to manage."""
        if self.keys is None:
            raise ConfigError(
                f"{self.where}: reseal: encryption is off, so there is no key to seal with", hint=GIVE_KEYS
            )
        predictions = self._reseal("predictions", SEALED_PREDICTION, self.keys)
        feedback = self._reseal("feedback", SEALED_FEEDBACK, self.keys)
        return Resealed(predictions, feedback)

    def _reseal(self, table: str, columns: tuple[str, ...], keys: Keyring) -> int:
        """Re-seal the rows of ``table`` not wholly sealed with the current key, a page a transaction in key
        order, the page's rows locked (``FOR UPDATE``) so that no writer replaces one between the read and
        the write. A crash leaves each row sealed with the old key or the new one, both readable."""
        read = (
            f"SELECT request_id, row, {', '.join(columns)}, request_id, row FROM {table} "
            "WHERE (request_id, row) > (%s, %s) ORDER BY request_id, row LIMIT %s FOR UPDATE"
        )
        write = (
            f"UPDATE {table} SET {', '.join(f'{column} = %s' for column in columns)} "
            "WHERE request_id = %s AND row = %s"
        )
        after: tuple[str, int] = ("", -1)
        resealed = 0
        while True:
            with self._connection.transaction(), self._connection.cursor() as cursor:
                page = cursor.execute(read, (*after, RESEAL_PAGE)).fetchall()
                changed = tables.resealed_page(keys, table, columns, page)
                cursor.executemany(write, changed)
            resealed += len(changed)
            if len(page) < RESEAL_PAGE:
                return resealed
            after = (page[-1][0], page[-1][1])

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class PostgresRoundLeader:
    """``RoundLeader`` (``modelcycle.monitor.leadership``) for a PostgreSQL store: a model's rounds are led by
    the process holding its advisory lock, taken with ``pg_try_advisory_lock`` on a connection of its own.
    The lock belongs to that session: when the process dies (or its connection does), the server frees it
    and another replica, on any machine, takes it at its next round."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None
        self._led: set[str] = set()
        self._guard = threading.Lock()  # rounds run in whichever executor thread is free

    def leads(self, model: str) -> bool:
        with self._guard:
            try:
                if self._connection is None:
                    self._connection = connect(self.location, "round lock")
                if model in self._led:
                    self._connection.execute("SELECT 1")  # the session, and so the lock, is still there
                    return True
                taken = self._connection.execute(ROUND_LOCK, (f"modelcycle rounds {model}",)).fetchone()
            except psycopg.Error as error:  # the session ended, and its locks with it: start again
                self._drop()
                raise DatabaseError(f"{self.location}: round lock of {model}: {error}") from error
            if _true(taken):
                self._led.add(model)
                return True
            return False

    def release(self) -> None:
        with self._guard:
            self._drop()

    def _drop(self) -> None:
        """Close the lock's session (the server frees its locks) and forget what it led."""
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._led.clear()


def _true(row: tuple[Any, ...] | None) -> bool:
    """Whether a one-value row read true (a lock taken)."""
    return row is not None and bool(row[0])
