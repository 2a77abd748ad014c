"""Reading the registry inside a caller's connection, so that a write can check and change in one
transaction (no gap for another process to slip into)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from modelcycle.errors import NotFoundError
from modelcycle.plugins import did_you_mean
from modelcycle.registry import db
from modelcycle.registry.refs import ModelRef

PRODUCTION, PREVIOUS, LATEST = "production", "previous", "latest"


@dataclass(frozen=True)
class VersionRecord:
    """A version's row. ``path`` is informational, as written when it was registered (relative to the home
    since the home may move; absolute in older registries): ``Registry.folder`` is where its files are."""

    name: str
    version: int
    path: str
    sha256: str
    task: str
    parent: str | None
    run_id: str | None
    created_at: str
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def require_model(connection: Connection, name: str) -> None:
    names = list(connection.execute(select(db.models.c.name)).scalars())
    if name not in names:
        raise NotFoundError(
            f"model '{name}' is not registered{did_you_mean(name, names)}",
            hint="see `modelcycle models list`",
        )


def lock_model(connection: Connection, name: str) -> None:
    """Hold the model's row until the transaction ends, so that writes to one model take turns on a server
    database (PostgreSQL reads committed rows, so two promotions could each keep the same ``previous``), as
    every writer already does on SQLite (``BEGIN IMMEDIATE``). Raises NotFoundError for an unknown model."""
    query = select(db.models.c.name).where(db.models.c.name == name).with_for_update()
    if connection.execute(query).first() is None:
        require_model(connection, name)


def aliases_of(connection: Connection, name: str) -> dict[str, int]:
    query = select(db.aliases.c.alias, db.aliases.c.version).where(db.aliases.c.name == name)
    return {alias: int(version) for alias, version in connection.execute(query)}


def aliases_by_version(connection: Connection, name: str) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(aliases_of(connection, name).items()):
        by_version.setdefault(version, []).append(alias)
    return by_version


def version_number(connection: Connection, ref: ModelRef) -> int:
    """The number a reference names: explicit, an alias, latest, or (bare name) production else latest."""
    if ref.version is not None:
        return ref.version
    aliases = aliases_of(connection, ref.name)
    if ref.alias not in (None, LATEST):
        if ref.alias not in aliases:
            require_model(connection, ref.name)
            raise NotFoundError(
                f"{ref}: no alias '{ref.alias}'{did_you_mean(ref.alias or '', aliases)}",
                hint=f"aliases: {', '.join(sorted(aliases)) or 'none'}",
            )
        return aliases[ref.alias or ""]
    if ref.alias is None and PRODUCTION in aliases:
        return aliases[PRODUCTION]
    latest = connection.execute(select(func.max(db.versions.c.version)).where(db.versions.c.name == ref.name))
    number = latest.scalar()
    if number is None:
        require_model(connection, ref.name)
        raise NotFoundError(f"{ref.name}: the model has no versions left")
    return int(number)


def find_version(connection: Connection, ref: ModelRef) -> VersionRecord:
    version = version_number(connection, ref)
    row = (
        connection.execute(
            select(db.versions).where(db.versions.c.name == ref.name, db.versions.c.version == version)
        )
        .mappings()
        .first()
    )
    if row is None:
        require_model(connection, ref.name)
        known = [str(number) for number in version_numbers(connection, ref.name)]
        raise NotFoundError(f"{ref.name}@{version}: no such version", hint=f"versions: {', '.join(known)}")
    return VersionRecord(**row, aliases=tuple(aliases_by_version(connection, ref.name).get(version, [])))


def version_numbers(connection: Connection, name: str) -> list[int]:
    query = select(db.versions.c.version).where(db.versions.c.name == name).order_by(db.versions.c.version)
    return [int(number) for number in connection.execute(query).scalars()]
