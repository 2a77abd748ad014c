"""What only a PostgreSQL registry does: a server that cannot be reached is a clear error that keeps the
password to itself, and the audit log refuses even the statements SQLite's row triggers cannot see."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy

from modelcycle.errors import RegistryError
from modelcycle.registry import Registry
from modelcycle.testing import tiny_bundle
from tests.conftest import CliResult, free_port


@pytest.fixture
def unreachable_url() -> str:
    """A PostgreSQL URL with a password, on a local port where nothing listens."""
    pytest.importorskip("psycopg")
    return f"postgresql+psycopg://modelcycle:s3cret@127.0.0.1:{free_port()}/registry"


def test_an_unreachable_server_is_a_registry_error_naming_the_url_without_its_password(
    unreachable_url: str, tmp_path: Path
) -> None:
    registry = Registry(tmp_path, database_url=unreachable_url)
    with pytest.raises(RegistryError) as raised:
        registry.list_models()
    shown = unreachable_url.replace("s3cret", "***")
    assert str(raised.value).startswith(f"registry database '{shown}': ")
    assert "s3cret" not in str(raised.value)


def test_the_cli_says_so_without_a_traceback(
    unreachable_url: str, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCYCLE_DATABASE_URL", unreachable_url)
    result = cli("models", "list")
    assert result.exit_code == RegistryError.exit_code
    assert unreachable_url.replace("s3cret", "***") in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "statement",
    ["TRUNCATE events", "DELETE FROM events WHERE id < 0", "UPDATE events SET id = id WHERE false"],
)
def test_the_audit_log_refuses_any_statement_that_would_change_it(
    postgres_url: str, home: Path, statement: str
) -> None:
    """A statement trigger: a TRUNCATE, or an UPDATE or DELETE that matches no row, is refused too."""
    registry = Registry(home, database_url=postgres_url)
    try:
        tiny_bundle(registry)
        with (
            pytest.raises(sqlalchemy.exc.IntegrityError, match="the events table is append-only"),
            registry.engine.begin() as connection,
        ):
            connection.exec_driver_sql(statement)
        assert len(registry.history("tiny")) == 1
    finally:
        registry.close()


def test_a_server_that_never_answers_is_an_error_within_the_connect_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that takes the connection but never speaks (a host behind a black hole looks the same to the
    client): without a bound, every command hung until the operating system's TCP timeout."""
    pytest.importorskip("psycopg")
    from modelcycle.registry import db

    monkeypatch.setattr(db, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"modelcycle:\*\*\*@127\.0\.0\.1"):
            Registry(
                tmp_path, database_url=f"postgresql+psycopg://modelcycle:s3cret@127.0.0.1:{port}/r"
            ).history("m")
        assert time.monotonic() - started < 10
