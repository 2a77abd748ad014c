"""The registry's tables and engine: SQLite in WAL mode by default, any SQLAlchemy URL (PostgreSQL for a
team). Version numbers are allocated inside write transactions, so concurrent writers never collide. The
tables here describe the newest schema revision; the revisions in ``migrations/versions`` make them in the
database (tests/test_migrations.py checks that the two agree)."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError

from modelcycle.errors import ConfigError, MissingDependencyError, RegistryError
from modelcycle.registry import migration

metadata = MetaData()
CONNECT_TIMEOUT_S = 10
_WAL_ATTEMPTS = 40

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
    # Numbers are never reused, even after a removal: a stored reference name@N always means one model.
    Column("next_version", Integer, nullable=False),
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
    Column("name", String(100), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    # An alias can only point at a version that exists; removing an aliased version fails in the database.
    ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"]),
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


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def create(url: str) -> Engine:
    """Create the engine and bring the schema to the newest revision (``migration``). For SQLite: WAL
    (readers never wait for writers), a 30 s busy timeout, and write transactions (``write``) that take the
    write lock at BEGIN, so that reading the next version number and inserting it cannot race. Database
    failures become RegistryError."""
    try:
        engine = create_engine(url, connect_args=_connect_arguments(url))
    except NoSuchModuleError as error:
        raise MissingDependencyError(
            f"registry database '{_safe(url)}': no driver ({error})",
            hint="install the database driver, e.g. psycopg for PostgreSQL",
        ) from None
    except (ArgumentError, ValueError) as error:
        raise ConfigError(f"registry database URL '{_safe(url)}' is invalid ({error})") from None
    event.listen(engine, "handle_error", _as_registry_error)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    with engine.connect() as connection:  # a read: opening an up-to-date registry never waits for a writer
        current = migration.revision(connection)
    if current != migration.HEAD:
        with write(engine) as connection:
            migration.upgrade(connection)
    return engine


def write(engine: Engine) -> AbstractContextManager[Connection]:
    """A write transaction: on SQLite it holds the write lock from BEGIN (``BEGIN IMMEDIATE``)."""
    return engine.execution_options(registry_write=True).begin()


@contextmanager
def exclusive(engine: Engine, name: str, folder: Path) -> Iterator[None]:
    """Hold the lock called ``name``, which every process using this registry shares, for the block: on
    PostgreSQL an advisory lock of a transaction of its own (other writes go on meanwhile); otherwise a lock
    file in ``folder``, the registry's home. Either is freed when its holder dies; either may be taken in one
    thread and released in another (an event loop's worker threads)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            lock = text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")
            connection.execute(lock, {"name": name})
            yield
        return
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    with FileLock(folder / f".{slug}.lock", thread_local=False):
        yield


def _begin_sqlite(connection: Connection) -> None:
    writing = connection.get_execution_options().get("registry_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the "begin" listener issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    # Switching a new database to WAL needs a moment alone with it and does not wait on the busy timeout:
    # processes that open one registry at once (e.g. the ranks of a distributed run) take turns here.
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _as_registry_error(context: ExceptionContext) -> Exception | None:
    """Operational failures (locked for too long, corrupt or unreachable database) get a clear message;
    integrity errors pass through, since the registry handles them itself."""
    original = context.original_exception
    if isinstance(context.sqlalchemy_exception, IntegrityError):
        return None
    if isinstance(context.sqlalchemy_exception, (OperationalError, DatabaseError)):
        url = context.engine.url.render_as_string(hide_password=True) if context.engine else "registry"
        return RegistryError(
            f"registry database '{url}': {original}",
            hint="check MODELCYCLE_HOME / MODELCYCLE_DATABASE_URL; retry if it was busy",
        )
    return None


def _connect_arguments(url: str) -> dict[str, Any]:
    """A bound on connecting to a PostgreSQL server (10 s, unless the URL sets ``connect_timeout``): a host
    that drops packets would otherwise hang every command until the operating system's TCP timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return {}  # create_engine names the fault
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_S}


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
