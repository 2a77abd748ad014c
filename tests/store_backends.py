"""The prediction store's backends for tests that should hold on each: ``store_location`` is a new, empty
store's location, a SQLite file or a PostgreSQL database (skipped, with the reason, where no server can be
started). A test module names this module in its ``pytest_plugins`` (and does not import it) to run its
tests once per backend; ``tests.store_inspection`` looks into a store by hand on either."""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file path, or a PostgreSQL URL (SQLAlchemy's form, as the configuration may give it)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "monitor.db")
