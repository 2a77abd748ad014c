"""The registry's schema migrations, on SQLite and PostgreSQL: an empty database and one made before
migrations both reach the newest revision with their rows, an up-to-date one is left alone (without
importing Alembic), and the revisions make exactly the tables the code uses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from modelcycle.errors import RegistryError
from modelcycle.registry import Registry, db, migration

# What `db.create` made before migrations, kept here and not in the package: the tables (db.metadata, the
# baseline's until a revision changes a table: then freeze a copy of the baseline's tables here) and, on
# SQLite, two triggers; no revision recorded.
BEFORE_MIGRATIONS_SQLITE = [
    f"CREATE TRIGGER IF NOT EXISTS events_no_{verb} BEFORE {verb} ON events "
    "BEGIN SELECT RAISE(ABORT, 'the events table is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]


def create_as_before_migrations(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        db.metadata.create_all(connection)
        if engine.dialect.name == "sqlite":
            for statement in BEFORE_MIGRATIONS_SQLITE:
                connection.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database's URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'registry.db'}"


def schema_of(url: str) -> dict[str, Any]:
    """The registry's tables as the database describes them (columns, keys, indexes) and its triggers."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = {
            table: {
                "columns": [
                    (column["name"], str(column["type"]), column["nullable"], column.get("default"))
                    for column in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table),
                "foreign_keys": inspector.get_foreign_keys(table),
                "indexes": inspector.get_indexes(table),
            }
            for table in sorted(set(inspector.get_table_names()) - {migration.VERSION_TABLE})
        }
        query = (
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            if engine.dialect.name == "sqlite"
            else "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
        )
        with engine.connect() as connection:
            triggers = sorted(tuple(row) for row in connection.exec_driver_sql(query))
        return {"tables": tables, "triggers": triggers}
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return migration.revision(connection)
    finally:
        engine.dispose()


def test_head_and_baseline_name_the_first_and_last_scripts() -> None:
    scripts = ScriptDirectory(str(migration.SCRIPTS))
    assert scripts.get_heads() == [migration.HEAD]
    assert scripts.get_bases() == [migration.BASELINE]


def test_an_empty_database_gets_the_tables_the_code_uses(database_url: str) -> None:
    engine = db.create(database_url)
    try:
        with engine.connect() as connection:
            assert migration.revision(connection) == migration.HEAD
            context = MigrationContext.configure(connection, opts={"version_table": migration.VERSION_TABLE})
            assert compare_metadata(context, db.metadata) == []
    finally:
        engine.dispose()


def test_the_baseline_is_the_schema_made_before_migrations(database_url: str) -> None:
    """From empty, and from what the release before migrations made (stamped, then upgraded), the revisions
    reach one schema, whose tables are those that release made."""
    engine = db.create(database_url)
    fresh = schema_of(database_url)
    with db.write(engine) as connection:  # back to an empty database (no revision either)
        command.downgrade(migration.alembic_config(connection), "base")
        connection.exec_driver_sql(f"DROP TABLE {migration.VERSION_TABLE}")
    engine.dispose()
    create_as_before_migrations(database_url)
    before = schema_of(database_url)
    db.create(database_url).dispose()
    assert schema_of(database_url) == fresh
    assert fresh["tables"] == before["tables"]
    if make_url(database_url).get_backend_name() == "sqlite":
        assert fresh["triggers"] == before["triggers"]
    else:  # the revision after the baseline adds PostgreSQL's trigger
        assert (before["triggers"], [name for name, _ in fresh["triggers"]]) == ([], ["events_append_only"])


def test_a_registry_made_before_migrations_keeps_its_rows(database_url: str, tmp_path: Path) -> None:
    create_as_before_migrations(database_url)
    engine = create_engine(database_url)
    at = db.utc_now()
    with engine.begin() as connection:
        connection.execute(insert(db.models).values(name="old", next_version=2, created_at=at))
        connection.execute(
            insert(db.versions).values(
                name="old",
                version=1,
                path="artifacts/old/1",
                sha256="0" * 64,
                task="regression",
                created_at=at,
            )
        )
        connection.execute(insert(db.aliases).values(name="old", alias="production", version=1))
        connection.execute(
            insert(db.events).values(
                at=at, name="old", version=1, kind="registered", actor="ci", details='{"run_id": "r1"}'
            )
        )
        connection.execute(
            insert(db.runs).values(id="r1", name="old", status="finished", params="{}", started_at=at)
        )
        connection.execute(insert(db.metrics).values(run_id="r1", step=1, key="loss", value=0.5))
    engine.dispose()

    registry = Registry(tmp_path / "home", database_url=database_url)
    try:
        assert registry.resolve("old").ref == "old@1"
        assert [(event.kind, event.details) for event in registry.history("old")] == [
            ("registered", {"run_id": "r1"})
        ]
        assert registry.runs.get("r1").final_metrics == {"loss": 0.5}
        assert revision_of(database_url) == migration.HEAD
        with pytest.raises(IntegrityError, match="append-only"), registry.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE events SET actor = 'someone else'")
        registry.set_alias("old@1", "candidate")  # writes work on the upgraded database
        assert registry.resolve("old@candidate").version == 1
    finally:
        registry.close()


def test_an_up_to_date_database_is_left_alone_without_alembic(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.create(database_url).dispose()
    before = schema_of(database_url)
    engine = db.create(database_url)
    with db.write(engine) as connection:  # the upgrade itself, under the lock, finds nothing to do
        migration.upgrade(connection)
    engine.dispose()
    monkeypatch.setitem(sys.modules, "alembic", None)  # any import of alembic now fails
    engine = db.create(database_url)
    try:
        with engine.connect() as connection:
            versions = connection.exec_driver_sql(f"SELECT version_num FROM {migration.VERSION_TABLE}")
            assert list(versions.scalars()) == [migration.HEAD]
    finally:
        engine.dispose()
    assert schema_of(database_url) == before


def test_every_revision_downgrades_and_upgrades_again(database_url: str) -> None:
    engine = db.create(database_url)
    try:
        before = schema_of(database_url)
        with db.write(engine) as connection:
            command.downgrade(migration.alembic_config(connection), "base")
        assert schema_of(database_url) == {"tables": {}, "triggers": []}
        with db.write(engine) as connection:
            migration.upgrade(connection)
        assert schema_of(database_url) == before
    finally:
        engine.dispose()


def test_a_database_from_a_newer_modelcycle_is_refused(database_url: str) -> None:
    engine = db.create(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {migration.VERSION_TABLE} SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(
        RegistryError, match=r"schema revision 9999 is not one this modelcycle knows"
    ) as raised:
        db.create(database_url)
    assert "upgrade modelcycle" in str(raised.value)


def test_an_optuna_study_shares_the_database(database_url: str, tmp_path: Path) -> None:
    """Optuna versions its tables in Alembic's default table; the registry keeps its own, so neither takes
    the other's revision for its own. The study gets the URL with its password (``str`` would mask it)."""
    import optuna

    from modelcycle.tuning import study_storage

    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password="s3cret")  # the test server trusts every connection, whatever its password
    registry = Registry(tmp_path / "home", database_url=url.render_as_string(hide_password=False))
    try:
        storage = study_storage(registry)
        assert storage.engine.url.password == url.password
        study = optuna.create_study(study_name="shared", storage=storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
        storage.engine.dispose()
        again = Registry(tmp_path / "home", database_url=registry.url)
        assert again.list_models() == []
        again.close()
        assert revision_of(registry.url) == migration.HEAD
        reloaded = optuna.load_study(study_name="shared", storage=study_storage(registry))
        assert len(reloaded.trials) == 1
    finally:
        registry.close()
