"""The registry database's schema revision, and bringing it to the newest one with Alembic
(``migrations/``).

Opening an up-to-date registry reads the revision and stops there: Alembic is imported only when there is
something to do. The upgrade runs inside the caller's write transaction, under a lock every process takes
(SQLite: the write lock of ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory lock), so processes
that open one new database at once (the ranks of a distributed run, a server's replicas) take turns: the
first upgrades, the others find the newest revision and do nothing. DDL is transactional on both, so a
failed upgrade leaves the database as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from modelcycle.errors import RegistryError

if TYPE_CHECKING:
    from alembic.config import Config

# Not Alembic's default ``alembic_version``: Optuna keeps its study in the same database and versions its
# own tables in that one.
VERSION_TABLE = "registry_schema_version"
BASELINE = "0001"  # the schema registries had before migrations: stamped on such a database, then upgraded
HEAD = "0002"  # the newest file in migrations/versions (tests/test_migrations.py checks that they agree)
SCRIPTS = Path(__file__).with_name("migrations")
# Any fixed number, the same in every process; pg_advisory_xact_lock releases it at commit or rollback.
_POSTGRES_LOCK_KEY = 0x6D6F64656C6379  # "modelcy"


def revision(connection: Connection) -> str | None:
    """The database's schema revision; None where the registry has not stamped one (empty, or made
    before migrations)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    # plain SQL: a new engine compiles every Core statement once, which would cost more than the read
    found = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()
    return None if found is None else str(found)


def upgrade(connection: Connection) -> None:
    """Bring the database to ``HEAD`` inside ``connection``'s write transaction (which the caller commits).
    A database made before migrations (the registry's tables, no revision) is first stamped ``BASELINE``."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
    current = revision(connection)  # again, under the lock: another process may have upgraded meanwhile
    if current == HEAD:
        return
    from alembic import command  # only here: opening an up-to-date registry never imports it
    from alembic.script import ScriptDirectory

    config = alembic_config(connection)
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        url = connection.engine.url.render_as_string(hide_password=True)
        raise RegistryError(
            f"registry database '{url}': schema revision {current} is not one this modelcycle knows "
            f"(its newest is {HEAD})",
            hint="a newer modelcycle upgraded this database: upgrade modelcycle",
        )
    if current is None and inspect(connection).has_table("models"):
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for the registry's scripts, run on ``connection`` (``migrations/env.py``
    reads it from the attributes)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config
