"""The append-only audit log: registered, aliased, promoted, removed, … with who, why and when."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from modelcycle.registry import db


@dataclass(frozen=True)
class EventRecord:
    id: int
    at: str
    name: str
    version: int | None
    kind: str
    actor: str
    reason: str | None
    details: dict[str, Any]


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_event(
    connection: Connection,
    *,
    name: str,
    kind: str,
    version: int | None = None,
    actor: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one event inside the caller's transaction, so the event and the change commit together."""
    connection.execute(
        insert(db.events).values(
            at=db.utc_now(),
            name=name,
            version=version,
            kind=kind,
            actor=actor or default_actor(),
            reason=reason,
            details=json.dumps(details or {}, sort_keys=True),
        )
    )


def list_events(engine: Engine, name: str, *, limit: int | None = None) -> list[EventRecord]:
    """Events of one model, oldest first."""
    query = select(db.events).where(db.events.c.name == name).order_by(db.events.c.id)
    if limit is not None:
        query = query.order_by(None).order_by(db.events.c.id.desc()).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    records = [EventRecord(**{**row, "details": json.loads(row["details"])}) for row in rows]
    return sorted(records, key=lambda record: record.id)


def recent_events(
    engine: Engine,
    *,
    name: str | None = None,
    version: int | None = None,
    kinds: tuple[str, ...] = (),
    before_id: int | None = None,
    limit: int = 100,
) -> list[EventRecord]:
    """Events of every model (or one), newest first, a page at a time: ``before_id`` continues after the
    last one of the previous page, so a page costs the same however long the log is."""
    query = select(db.events).order_by(db.events.c.id.desc()).limit(limit)
    if name is not None:
        query = query.where(db.events.c.name == name)
    if version is not None:
        query = query.where(db.events.c.version == version)
    if kinds:
        query = query.where(db.events.c.kind.in_(kinds))
    if before_id is not None:
        query = query.where(db.events.c.id < before_id)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [EventRecord(**{**row, "details": json.loads(row["details"])}) for row in rows]


def newest_event_of_each_model(engine: Engine) -> dict[str, EventRecord]:
    """Each model's newest event (one grouped read of the log's index, however long the log is)."""
    newest = select(func.max(db.events.c.id)).group_by(db.events.c.name).scalar_subquery()
    query = select(db.events).where(db.events.c.id.in_(newest))
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return {row["name"]: EventRecord(**{**row, "details": json.loads(row["details"])}) for row in rows}
