"""Looking into a prediction store by hand, on either backend (a SQLite file or a PostgreSQL URL), as a test
that inspects or tampers with what is stored does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcycle.monitor.database import connect
from modelcycle.monitor.location import StoreLocation, is_postgres_url


def run_sql(location: str, statement: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the store at ``location`` by hand, as an attacker with the
    database, or a test inspecting it, would; its rows, if any."""
    if not is_postgres_url(location):
        with connect(Path(location)) as connection:
            return connection.execute(statement, parameters).fetchall()
    import psycopg

    with psycopg.connect(str(StoreLocation(location).url), autocommit=True) as connection:
        cursor = connection.execute(statement.replace("?", "%s"), parameters)
        return cursor.fetchall() if cursor.description else []


def stored_text(location: str) -> str:
    """Everything the store at ``location`` holds, as text to search: for a file every byte of it (the
    database, its write-ahead log and index); for a database every row of its tables."""
    if not is_postgres_url(location):
        path = Path(location)
        return b"".join(part.read_bytes() for part in path.parent.glob(f"{path.name}*")).decode("latin-1")
    tables = ("predictions", "feedback", "quality", "drift")
    return "\n".join(str(row) for table in tables for row in run_sql(location, f"SELECT * FROM {table}"))
