"""The registry's tables and engine: SQLite in WAL mode by default, any SQLAlchemy URL (e.g. PostgreSQL)
for a team. Version numbers are allocated inside write transactions, so concurrent writers never collide."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("params", Text, nullable=False),
    Column("config_hash", String(64)),
    Column("data_fingerprint", String(64)),
    Column("model_ref", String(120)),
    Column("error", Text),
    Column("started_at", String(32), nullable=False),
    Column("ended_at", String(32)),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("step", Integer, nullable=False),
    Column("key", String(100), nullable=False),
    Column("value", Float, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("created_at", String(32), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("name", String(100), ForeignKey("models.name"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("task", String(32), nullable=False),
    Column("parent", String(120)),
    Column("run_id", String(32)),
    Column("created_at", String(32), nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("name", String(100), ForeignKey("models.name"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(32), nullable=False),
    Column("name", String(100), nullable=False, index=True),
    Column("version", Integer),
    Column("kind", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("reason", Text),
    Column("details", Text, nullable=False),
)

# The audit log is append-only in the database itself, not only by convention.
_SQLITE_APPEND_ONLY = [
    f"CREATE TRIGGER IF NOT EXISTS events_no_{verb} BEFORE {verb} ON events "
    "BEGIN SELECT RAISE(ABORT, 'the events table is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def create(url: str) -> Engine:
    """Create the engine and the tables. For SQLite: WAL, a 30 s busy timeout, and ``BEGIN IMMEDIATE`` so
    that a transaction holds the write lock from its start (reads of max(version) cannot race)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    with engine.begin() as connection:
        metadata.create_all(connection)
        if engine.dialect.name == "sqlite":
            for statement in _SQLITE_APPEND_ONLY:
                connection.exec_driver_sql(statement)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" listener issues BEGIN IMMEDIATE itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()
