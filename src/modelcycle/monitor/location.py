"""Where the prediction store lives (``monitor.store``): a SQLite file, or a PostgreSQL database named by its
URL, which many servers on several machines (Ray Serve replicas) write into together. A URL is
``postgresql://`` (libpq's form) or ``postgresql+psycopg://`` (SQLAlchemy's, as the registry's
``MODELCYCLE_DATABASE_URL`` has it); any other URL is refused, anything else is a file path. Light on
purpose (no psycopg): the writer process and every caller that only names the store import it.

A location prints without its password, so every message that names the store (errors, logs, the CLI) can
say where it is without giving the password away."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from modelcycle.errors import ConfigError

# the URL schemes of PostgreSQL: libpq's two and SQLAlchemy's with the driver psycopg talks to
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
HIDDEN = "***"


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database (a URL of one of ``POSTGRES_SCHEMES``)."""
    scheme, separator, _ = text.partition("://")
    return bool(separator) and scheme.lower() in POSTGRES_SCHEMES


def without_password(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.partition(':')[0]}:{HIDDEN}@{host}"
    query = [(name, HIDDEN if name == "password" else value) for name, value in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


class StoreLocation:
    """The prediction store's place: ``url`` (libpq's form, for psycopg) for PostgreSQL, else ``path`` for a
    SQLite file. ``str()`` gives it as configured but for the password."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        text = os.fspath(location)
        self.url: str | None = None
        self.path: Path | None = None
        if is_postgres_url(text):
            self.url = "postgresql://" + text.partition("://")[2]
            self._shown = without_password(text)
        elif "://" in text:  # checked here, not in the config, whose errors print the value given
            raise ConfigError(
                f"monitor.store: {without_password(text)} is neither a file path nor a PostgreSQL URL",
                hint="give postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or a SQLite file",
            )
        else:
            self.path = Path(text)
            self._shown = str(self.path)

    @classmethod
    def of(cls, location: StoreLocation | str | os.PathLike[str]) -> StoreLocation:
        """``location`` as a ``StoreLocation`` (as it is when it is one)."""
        return location if isinstance(location, StoreLocation) else cls(location)

    def exists(self) -> bool:
        """Whether something was stored there yet: the file exists. A database is taken to exist (opening it
        says otherwise, naming it)."""
        return self.path is None or self.path.exists()

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return f"StoreLocation({self._shown!r})"
