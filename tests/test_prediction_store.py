"""The prediction store's one API (``PredictionDatabase``): what each method returns, run over every backend
(SQLite and PostgreSQL), that a store written by round one's code still opens and reads, that servers on
several machines share one PostgreSQL store (each record stored once, one leader of a model's rounds), and
that no SQL is written anywhere else in the package."""

from __future__ import annotations

import io
import logging
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tokenize
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelcycle.data import TargetEncoder
from modelcycle.errors import ConfigError, OverloadedError
from modelcycle.monitor import writer
from modelcycle.monitor.database import connect, open_database
from modelcycle.monitor.leadership import round_leader
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import (
    PREDICTION_COLUMNS,
    DatabaseError,
    DriftRow,
    LabelledInput,
    LabelledPrediction,
    PredictionDatabase,
    QualityRow,
    StoredInput,
    Traffic,
)
from modelcycle.monitor.store import PredictionRecord, PredictionStore
from tests.conftest import free_port

pytest_plugins = ["tests.store_backends"]  # store_location: every test that takes it runs on each backend
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "modelcycle"
# the modules allowed to hold SQL: the prediction store's backends and what they share, and the registry (its
# own database)
SQL_HOMES = ("monitor/database.py", "monitor/postgres.py", "monitor/tables.py", "registry/")
SQL_STATEMENT = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|"
    r"(UNIQUE\s+)?INDEX|VIEW|TRIGGER))\b",
    re.DOTALL,
)
CLASSIFIER = TargetEncoder("classification")
CLASSIFIER.classes_ = ["no", "yes"]
EXECUTE = re.compile(r"\.(execute|executemany|executescript|exec_driver_sql)\(")


@pytest.fixture
def database(store_location: str) -> Iterator[PredictionDatabase]:
    with open_database(store_location) as opened:
        yield opened


def _row(
    request_id: str, created: float, *, row: int = 0, model: str = "m", version: int = 1
) -> tuple[object, ...]:
    values = {
        "request_id": request_id,
        "row": row,
        "model": model,
        "version": version,
        "protocol": "v1",
        "created": created,
        "latency_ms": 2.0,
        "inputs": '{"x": 1.5, "email": "<email>"}',
        "prediction": "yes",
        "score": 0.75,
        "probabilities": "[0.25,0.75]",
    }
    return tuple(values[column] for column in PREDICTION_COLUMNS)


def test_appended_predictions_are_found_and_read_back_decoded(database: PredictionDatabase) -> None:
    database.append([_row("a", 100.0), _row("a", 100.0, row=1), _row("b", 200.0, version=2)])
    database.append([_row("c", 300.0, model="other")])
    assert database.find("a", 1) == ("m", 1)
    assert database.find("b", 0) == ("m", 2)
    assert database.find("a", 2) is None
    assert database.traffic("m", since=150.0) == [Traffic(200.0, 2.0, 2, "yes")]
    assert [row.created for row in database.traffic("m", since=0.0)] == [100.0, 100.0, 200.0]
    recent = database.recent_inputs("m", since=0.0, limit=2)
    assert recent[0] == StoredInput({"x": 1.5, "email": "<email>"}, "yes")
    assert len(recent) == 2
    assert database.recent_inputs("m", since=250.0, limit=10) == []


def test_traffic_in_slices_counts_every_prediction_and_keeps_the_newest_of_each(
    database: PredictionDatabase,
) -> None:
    database.append([_row(f"r{second}", 100.0 + second, version=1 + second % 2) for second in range(30)])
    database.append([_row("elsewhere", 105.0, model="other")])
    assert database.first_prediction("m", since=0.0) == 100.0
    assert database.first_prediction("m", since=120.0) == 120.0
    assert database.first_prediction("m", since=500.0) is None
    slices = database.traffic_slices("m", edges=[100.0, 110.0, 120.0, 140.0, 150.0], per_slice=3)
    assert [(piece.start, piece.end, piece.predictions) for piece in slices] == [
        (100.0, 110.0, 10),
        (110.0, 120.0, 10),
        (120.0, 140.0, 10),
        (140.0, 150.0, 0),
    ]
    assert [row.created for row in slices[0].sample] == [107.0, 108.0, 109.0]  # the newest, oldest first
    assert slices[0].sample[-1] == Traffic(109.0, 2.0, 2, "yes")
    assert slices[3].sample == []


def test_a_replayed_request_replaces_its_rows(database: PredictionDatabase) -> None:
    database.append([_row("a", 100.0)])
    database.append([_row("a", 150.0, version=3)])
    assert database.find("a", 0) == ("m", 3)
    assert len(database.traffic("m", since=0.0)) == 1


def test_a_generated_answer_counts_as_traffic_but_not_as_a_class(database: PredictionDatabase) -> None:
    generated = dict(zip(PREDICTION_COLUMNS, _row("g", 10.0), strict=True))
    generated.update(prediction="an answer", score=None, probabilities=None)
    database.append([tuple(generated.values())])
    assert database.traffic("m", since=0.0) == [Traffic(10.0, 2.0, 1, None)]


def test_feedback_joins_labels_to_predictions(database: PredictionDatabase) -> None:
    database.append([_row("a", 100.0), _row("b", 200.0, version=2), _row("c", 300.0)])
    assert database.add_feedback("a", 0, "no", None, created=400.0) is None
    assert database.add_feedback("b", 0, "yes", None, created=401.0) is None
    # a second answer does not replace the first: the database says what stands
    assert database.add_feedback("b", 0, "no", None, created=402.0) == ("yes", None)
    assert sorted(database.labelled("m", since=0.0)) == [
        LabelledPrediction("no", None, 0.75, [0.25, 0.75]),
        LabelledPrediction("yes", None, 0.75, [0.25, 0.75]),
    ]
    assert database.labelled("m", since=0.0, version=2) == [
        LabelledPrediction("yes", None, 0.75, [0.25, 0.75])
    ]
    assert database.labelled("m", since=150.0, version=1) == []
    assert database.count_labelled("m", since=0.0) == 2
    assert database.count_labelled("m", since=150.0) == 1
    assert database.labelled_inputs("m", since=0.0) == [
        LabelledInput({"x": 1.5, "email": "<email>"}, "no", None),
        LabelledInput({"x": 1.5, "email": "<email>"}, "yes", None),
    ]
    database.add_feedback("c", 0, None, 2.5, created=403.0)
    assert database.labelled_inputs("m", since=250.0)[0].value == 2.5


def test_quality_and_drift_figures_read_back_by_model_and_time(database: PredictionDatabase) -> None:
    database.add_quality(
        [
            QualityRow("m", 1, "1h", "accuracy", 0.9, 40, 100.0),
            QualityRow("m", 2, "1h", "accuracy", 0.8, 10, 200.0),
            QualityRow("other", 1, "1h", "accuracy", 0.1, 5, 200.0),
        ]
    )
    assert database.quality("m", since=150.0) == [QualityRow("m", 2, "1h", "accuracy", 0.8, 10, 200.0)]
    assert [row.value for row in database.quality("m", since=0.0)] == [0.9, 0.8]
    database.add_drift(
        [
            DriftRow("m", "x", "ks", 0.5, False, 100, 100.0),
            DriftRow("m", "x", "ks", 0.001, True, 120, 200.0),
            DriftRow("m", "y", "psi", 0.3, True, 120, 200.0),
        ]
    )
    assert database.latest_drift("m", since=0.0) == [  # the latest check only, lowest score first
        DriftRow("m", "x", "ks", 0.001, True, 120, 200.0),
        DriftRow("m", "y", "psi", 0.3, True, 120, 200.0),
    ]
    assert database.latest_drift("m", since=250.0) == []
    assert database.latest_drift("other", since=0.0) == []


def test_retention_keeps_the_period_and_the_newest_rows(database: PredictionDatabase) -> None:
    database.append([_row(f"r{index}", 1000.0 + index) for index in range(6)])
    database.append([_row("old", 10.0)])
    database.add_feedback("old", 0, "yes", None, created=11.0)
    database.add_feedback("r5", 0, "yes", None, created=1006.0)
    database.add_quality([QualityRow("m", 1, "1h", "accuracy", 0.9, 40, 10.0)])
    database.add_drift([DriftRow("m", "x", "ks", 0.5, False, 100, 10.0)])
    database.retain(retention_seconds=500.0, max_rows=4, now=1100.0)
    # older than the period: gone with its feedback; then the first written beyond max_rows
    assert [row.created for row in database.traffic("m", since=0.0)] == [1002.0, 1003.0, 1004.0, 1005.0]
    assert database.count_labelled("m", since=0.0) == 1
    assert database.find("old", 0) is None
    assert database.quality("m", since=0.0) == []
    assert database.latest_drift("m", since=0.0) == []


def test_a_failed_retention_is_logged_and_the_writer_goes_on_writing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "monitor.db"
    with open_database(path) as database:
        database.append([_row("old", 10.0)])
    with connect(path) as connection:  # a database that refuses every delete
        connection.execute(
            "CREATE TRIGGER kept BEFORE DELETE ON predictions BEGIN SELECT RAISE(ABORT, 'kept'); END"
        )
    with open_database(path) as database, pytest.raises(DatabaseError, match="retain: kept"):
        database.retain(retention_seconds=60.0, max_rows=10, now=1000.0)
    frames = io.BytesIO()
    writer.write_frame(
        frames, {"path": str(path), "masking": None, "retention_seconds": 60.0, "max_rows": 10}
    )
    writer.write_frame(
        frames, [["new", "m", 1, "v1", 2000.0, 1.0, [{"x": 1}], False, [["yes", 0.9, [0.1, 0.9]]], None]]
    )
    answers = io.BytesIO()
    with caplog.at_level(logging.ERROR, logger="modelcycle.monitor.writer"):
        writer.serve(io.BytesIO(frames.getvalue()), answers)
    assert "retention failed" in caplog.text
    assert writer.read_frame(io.BytesIO(answers.getvalue())) == {"failed": 0, "masked": {}}
    with open_database(path) as database:
        assert database.find("new", 0) == ("m", 1)
        assert database.find("old", 0) == ("m", 1)


def test_every_failure_of_the_database_is_a_database_error_the_server_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    with open_database(path) as database:
        database.append([_row("a", 10.0)])
    with connect(path) as connection:  # a database that refuses feedback, as a locked or full one would
        connection.execute(
            "CREATE TRIGGER refused BEFORE INSERT ON feedback BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with (
        open_database(path) as database,
        pytest.raises(DatabaseError, match="add_feedback: refused") as raised,
    ):
        database.add_feedback("a", 0, "yes", None, created=20.0)
    assert isinstance(raised.value, OverloadedError)  # unavailable for now: 503 with Retry-After, not a 500
    assert raised.value.http_status == 503
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseError, match=f"{re.escape(str(garbage))}: open: file is not a database"):
        open_database(garbage)


ROUND_ONE_SCHEMA = """
CREATE TABLE predictions (
    request_id TEXT NOT NULL, row INTEGER NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    protocol TEXT NOT NULL, created REAL NOT NULL, latency_ms REAL NOT NULL,
    inputs TEXT, prediction TEXT, score REAL, probabilities TEXT,
    PRIMARY KEY (request_id, row));
CREATE INDEX predictions_by_time ON predictions (model, created);
CREATE TABLE feedback (
    request_id TEXT NOT NULL, row INTEGER NOT NULL, label TEXT, value REAL, created REAL NOT NULL,
    PRIMARY KEY (request_id, row));
CREATE TABLE quality (
    model TEXT NOT NULL, version INTEGER NOT NULL, window TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL NOT NULL, samples INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE drift (
    model TEXT NOT NULL, feature TEXT NOT NULL, method TEXT NOT NULL, score REAL NOT NULL,
    drifted INTEGER NOT NULL, rows INTEGER NOT NULL, created REAL NOT NULL);
"""


def test_a_store_written_by_round_one_opens_unchanged_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    with sqlite3.connect(path) as connection:  # as round one's writer and monitoring round wrote it
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(ROUND_ONE_SCHEMA)
        connection.execute(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("a", 0, "m", 1, "v1", 100.0, 2.0, '{"x": 1}', "yes", 0.75, "[0.25,0.75]"),
        )
        connection.execute(
            "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?)", ("a", 0, "yes", None, 101.0)
        )
        connection.execute(
            "INSERT INTO quality VALUES (?, ?, ?, ?, ?, ?, ?)", ("m", 1, "1h", "f1", 0.5, 3, 102.0)
        )
        connection.execute(
            "INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?, ?)", ("m", "x", "ks", 0.01, 1, 50, 103.0)
        )
        schema = connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    with open_database(path) as database:
        assert database.labelled("m", since=0.0) == [LabelledPrediction("yes", None, 0.75, [0.25, 0.75])]
        assert database.labelled_inputs("m", since=0.0) == [LabelledInput({"x": 1}, "yes", None)]
        assert database.quality("m", since=0.0) == [QualityRow("m", 1, "1h", "f1", 0.5, 3, 102.0)]
        assert database.latest_drift("m", since=0.0) == [DriftRow("m", "x", "ks", 0.01, True, 50, 103.0)]
        database.append([_row("b", 200.0)])
        assert database.count_labelled("m", since=0.0) == 1
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
        assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 2


def _sql_in(source: str) -> list[str]:
    """The SQL statements in a module's string literals and the ``.execute(`` calls in its code."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and SQL_STATEMENT.search(token.string):
            found.append(f"line {token.start[0]}: {token.string[:60]}")
    found += [
        f"line {source.count(chr(10), 0, match.start()) + 1}: {match.group()}"
        for match in EXECUTE.finditer(source)
    ]
    return found


def test_the_check_finds_sql_where_it_is() -> None:
    assert _sql_in('rows = connection.execute("SELECT a FROM t WHERE b = ?", (1,))\n')
    assert _sql_in('QUERY = "INSERT OR REPLACE INTO feedback VALUES (?, ?)"\n')
    assert _sql_in('STATEMENT = """\nDELETE FROM drift\n"""\n')
    assert not _sql_in('"""Select the rows from the store; insert them into a report."""\n')


def test_no_sql_outside_the_store_implementation_and_the_registry() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if not str(path.relative_to(PACKAGE).as_posix()).startswith(SQL_HOMES)
        and (found := _sql_in(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "SQL belongs in modelcycle.monitor.database (PredictionDatabase)"


def test_a_store_location_is_a_postgres_url_or_a_file_and_never_shows_the_password() -> None:
    location = StoreLocation("postgresql+psycopg://ann:s3cret@db.example:5432/store?sslmode=require")
    assert location.url == "postgresql://ann:s3cret@db.example:5432/store?sslmode=require"
    assert location.path is None
    assert str(location) == "postgresql+psycopg://ann:***@db.example:5432/store?sslmode=require"
    assert "s3cret" not in str(StoreLocation("postgresql://db.example/store?user=ann&password=s3cret"))
    assert StoreLocation("/srv/monitor.db").path == Path("/srv/monitor.db")
    assert StoreLocation("/srv/monitor.db").url is None
    with pytest.raises(ConfigError, match="neither a file path nor a PostgreSQL URL") as raised:
        StoreLocation("mysql://ann:s3cret@db.example/store")
    assert "s3cret" not in str(raised.value)


def test_an_unreachable_postgres_store_is_a_database_error_naming_it_without_the_password() -> None:
    port = free_port()  # nothing listens on it
    url = f"postgresql+psycopg://ann:s3cret@127.0.0.1:{port}/store"
    with pytest.raises(DatabaseError, match=rf"ann:\*\*\*@127\.0\.0\.1:{port}/store: open: ") as raised:
        open_database(url)
    assert "s3cret" not in str(raised.value)
    assert raised.value.http_status == 503


def test_replicas_opening_one_new_postgres_store_at_once_all_find_its_tables(postgres_url: str) -> None:
    def first_read(_: int) -> int:
        with open_database(postgres_url) as database:
            return database.count_labelled("m", since=0.0)

    with ThreadPoolExecutor(4) as pool:  # each its own connection: the schema is created once, under a lock
        assert list(pool.map(first_read, range(4))) == [0, 0, 0, 0]


def _records(store: PredictionStore, request_ids: list[str]) -> None:
    for request_id in request_ids:
        store.record(
            PredictionRecord(
                request_id, "m", 1, "v1", time.time(), 1.0, [{"x": 1}], np.array([[0.2, 0.8]]), CLASSIFIER
            )
        )


def test_two_replicas_write_into_one_postgres_store_each_record_once(postgres_url: str) -> None:
    """Two servers' stores (each with its writer process), as two Ray Serve replicas on two machines would;
    a request retried on both (the same id) is stored once, its later copy standing."""
    replicas = [PredictionStore(postgres_url), PredictionStore(postgres_url)]
    shared = [f"shared-{index}" for index in range(50)]
    for number, replica in enumerate(replicas):
        _records(replica, [f"replica{number}-{index}" for index in range(300)] + shared)
    try:
        assert all(replica.flush(timeout=30) for replica in replicas)
        assert [replica.failed for replica in replicas] == [0, 0]
    finally:
        for replica in replicas:
            replica.close()
    with open_database(postgres_url) as database:
        assert len(database.traffic("m", since=0.0)) == 2 * 300 + 50
        assert database.add_feedback("shared-7", 0, "yes", None, created=time.time()) is None
        assert database.add_feedback("shared-7", 0, "no", None, created=time.time()) == ("yes", None)


HOLD_THE_LEAD = """
import sys, time
from modelcycle.monitor.leadership import round_leader
from modelcycle.monitor.location import StoreLocation
leader = round_leader(StoreLocation(sys.argv[1]))
print(leader.leads("m"), flush=True)
time.sleep(60)
"""


def test_one_process_leads_a_models_rounds_until_it_dies(store_location: str) -> None:
    """The lock file beside a SQLite store, an advisory lock for a PostgreSQL one: a second process does not
    lead while the first lives, and leads once it is killed (the system or the server frees the lock)."""
    if StoreLocation(store_location).path is not None:
        open_database(store_location).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LEAD, store_location], stdout=subprocess.PIPE, text=True
    )
    leader = round_leader(StoreLocation(store_location))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "True"
        assert not leader.leads("m")
        assert leader.leads("other")  # a lock a model
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10
        while not leader.leads("m") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leader.leads("m")
    finally:
        holder.kill()
        holder.wait()
        leader.release()


def test_a_failure_of_postgres_is_a_database_error_naming_the_operation(postgres_url: str) -> None:
    import psycopg

    with open_database(postgres_url) as database:
        database.append([_row("a", 10.0)])
    with psycopg.connect(str(StoreLocation(postgres_url).url), autocommit=True) as connection:
        connection.execute(  # a database that refuses feedback, as a full or read-only one would
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'refused'; END $$"
        )
        connection.execute("CREATE TRIGGER refused BEFORE INSERT ON feedback EXECUTE FUNCTION refuse()")
    with open_database(postgres_url) as database:
        with pytest.raises(DatabaseError, match="add_feedback: refused"):
            database.add_feedback("a", 0, "yes", None, created=20.0)
        assert database.find("a", 0) == ("m", 1)  # the connection goes on serving


def test_a_postgres_store_that_lost_its_session_fails_once_then_goes_on(postgres_url: str) -> None:
    """The writer holds one database for its life: a server restart must not fail every later batch."""
    import psycopg

    with open_database(postgres_url) as database:
        database.append([_row("a", 10.0)])
        with psycopg.connect(str(StoreLocation(postgres_url).url), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(DatabaseError, match="append: "):
            database.append([_row("b", 20.0)])
        database.append([_row("b", 20.0)])
        assert [row.created for row in database.traffic("m", since=0.0)] == [10.0, 20.0]
