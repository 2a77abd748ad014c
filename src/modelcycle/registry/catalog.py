"""The registry proper: models, their numbered versions (bundles under the artifact root) and aliases.

Every change checks what it depends on and commits together with its audit event, in one write
transaction that holds the model's row (SQLite's write lock already makes all writers take turns; on
PostgreSQL the row lock makes writers to one model take turns). Registration hashes the bundle before
taking the write lock, then takes the model's next number, inserts the row and renames the bundle into
place last: a crash at any point leaves either a whole version or none, and numbers are never reused.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelcycle.bundle import Bundle, BundleBuilder, BundleManifest
from modelcycle.bundle.files import remove_tree, sweep_stale_temporaries
from modelcycle.bundle.io import manifest_text
from modelcycle.errors import ConfigError, NotFoundError, RegistryError
from modelcycle.registry import db
from modelcycle.registry.events import (
    EventRecord,
    list_events,
    newest_event_of_each_model,
    recent_events,
    record_event,
)
from modelcycle.registry.lookup import (
    PREVIOUS,
    PRODUCTION,
    VersionRecord,
    aliases_by_version,
    aliases_of,
    find_version,
    lock_model,
    require_model,
)
from modelcycle.registry.refs import ModelRef, check_alias, parse_ref
from modelcycle.registry.runs import RunStore

_ALLOCATION_ATTEMPTS = 5


def default_home() -> Path:
    return Path(os.environ.get("MODELCYCLE_HOME", ".modelcycle"))


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int
    version_count: int
    aliases: dict[str, int]
    task: str


class Registry:
    """One registry home: ``registry.db`` (or ``$MODELCYCLE_DATABASE_URL``) and ``artifacts/<name>/<v>/``.
    The database is opened on first use, so a process that only needs the folder (a non-zero rank of a
    distributed run) never touches it."""

    def __init__(self, home: str | Path | None = None, *, database_url: str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.artifacts = self.home / "artifacts"
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RegistryError(
                f"{self.home}: cannot use as the registry folder ({error.strerror})",
                hint="set MODELCYCLE_HOME to a writable directory",
                parameter="home",
            ) from None
        url = database_url or os.environ.get("MODELCYCLE_DATABASE_URL")
        self.url = url or f"sqlite:///{(self.home / 'registry.db').resolve()}"
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.create(self.url)
        return self._engine

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """A lock called ``name`` that every process using this registry shares, held for the block (e.g.
        one change of a cluster's serving configuration at a time)."""
        return db.exclusive(self.engine, name, self.home)

    @property
    def runs(self) -> RunStore:
        return RunStore(self.engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # -- registration --------------------------------------------------------------------------------

    def builder(self, name: str) -> BundleBuilder:
        """A builder whose temp directory sits beside the model's versions (so publishing is a rename)."""
        return BundleBuilder(self.artifacts / parse_ref(name).name)

    def register(
        self,
        builder: BundleBuilder,
        manifest: BundleManifest,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Bundle:
        """Give the built bundle the next version number of ``manifest.name`` and publish it."""
        name = parse_ref(manifest.name).name
        builder.seal()  # hashing and fsync happen before the write lock is taken
        sweep_stale_temporaries(self.artifacts / name, keep=builder.path)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._publish_next_version(builder, manifest, name, actor=actor, reason=reason)
            except IntegrityError:
                # SQLite's BEGIN IMMEDIATE serialises writers, so only a server database (where the first
                # registration of a new name can race) gets here; the loser simply tries again.
                if attempt == _ALLOCATION_ATTEMPTS:
                    raise RegistryError(f"{name}: no free version number after {attempt} tries") from None

    def _publish_next_version(
        self,
        builder: BundleBuilder,
        manifest: BundleManifest,
        name: str,
        *,
        actor: str | None,
        reason: str | None,
    ) -> Bundle:
        published: Bundle | None = None
        try:
            with db.write(self.engine) as connection:
                version = self._take_version_number(connection, name)
                target = self.artifacts / name / str(version)
                final = manifest.model_copy(
                    update={"name": name, "version": version, "files": builder.seal()}
                )
                connection.execute(
                    insert(db.versions).values(
                        name=name,
                        version=version,
                        path=str(target.relative_to(self.home)),  # the home may move
                        sha256=hashlib.sha256(manifest_text(final).encode()).hexdigest(),
                        task=final.task,
                        parent=final.lineage.parent,
                        run_id=final.lineage.run_id,
                        created_at=db.utc_now(),
                    )
                )
                details = {"run_id": final.lineage.run_id, "metrics": final.metrics}
                record_event(
                    connection,
                    name=name,
                    version=version,
                    kind="registered",
                    actor=actor,
                    reason=reason,
                    details=details,
                )
                remove_tree(target)  # left by a crash between rename and commit: the database is the truth
                published = builder.publish(target, final)
                return published  # the transaction commits on the way out of the block
        except BaseException:
            if published is not None:
                remove_tree(published.path)
            raise

    def _take_version_number(self, connection: Connection, name: str) -> int:
        """The model's next number (creating the model on its first version), incremented for the next."""
        row = connection.execute(
            select(db.models.c.next_version).where(db.models.c.name == name).with_for_update()
        ).first()
        if row is None:
            connection.execute(insert(db.models).values(name=name, next_version=2, created_at=db.utc_now()))
            return 1
        connection.execute(update(db.models).where(db.models.c.name == name).values(next_version=row[0] + 1))
        return int(row[0])

    # -- lookup --------------------------------------------------------------------------------------

    def resolve(self, ref: str | ModelRef) -> VersionRecord:
        """The version a reference names; a bare name means production if set, else the latest."""
        with self.engine.connect() as connection:
            return find_version(connection, parse_ref(ref) if isinstance(ref, str) else ref)

    def open(self, ref: str | ModelRef) -> Bundle:
        """The verified bundle a reference names."""
        return self.bundle(self.resolve(ref))

    def bundle(self, record: VersionRecord) -> Bundle:
        """The version's bundle, its files and its manifest checked against the hashes registered."""
        return Bundle(self.folder(record), manifest_sha256=record.sha256)

    def folder(self, record: VersionRecord) -> Path:
        """Where the version's files are: ``artifacts/<name>/<version>`` under this home, wherever the home
        was when it was registered (a copied or moved home reads its own files)."""
        return self.artifacts / record.name / str(record.version)

    def list_models(self) -> list[ModelSummary]:
        summaries = []
        with self.engine.connect() as connection:
            for name in connection.execute(select(db.models.c.name).order_by(db.models.c.name)).scalars():
                rows = connection.execute(
                    select(db.versions.c.version, db.versions.c.task)
                    .where(db.versions.c.name == name)
                    .order_by(db.versions.c.version.desc())
                ).all()
                if rows:
                    latest, task = rows[0]
                    summaries.append(
                        ModelSummary(name, int(latest), len(rows), aliases_of(connection, name), task)
                    )
        return summaries

    def list_versions(self, name: str) -> list[VersionRecord]:
        name = parse_ref(name).name
        with self.engine.connect() as connection:
            require_model(connection, name)
            aliases = aliases_by_version(connection, name)
            rows = (
                connection.execute(
                    select(db.versions).where(db.versions.c.name == name).order_by(db.versions.c.version)
                )
                .mappings()
                .all()
            )
            return [VersionRecord(**row, aliases=tuple(aliases.get(row["version"], []))) for row in rows]

    def history(self, name: str, *, limit: int | None = None) -> list[EventRecord]:
        name = parse_ref(name).name
        with self.engine.connect() as connection:
            require_model(connection, name)
        return list_events(self.engine, name, limit=limit)

    def events(
        self,
        *,
        name: str | None = None,
        version: int | None = None,
        kinds: tuple[str, ...] = (),
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """The audit log of every model, or of ``name`` (and its ``version``), newest first; ``before_id``
        pages back."""
        return recent_events(
            self.engine, name=name, version=version, kinds=kinds, before_id=before_id, limit=limit
        )

    def newest_events(self) -> dict[str, EventRecord]:
        """Each model's newest event, by model name."""
        return newest_event_of_each_model(self.engine)

    def children(self, ref: str) -> list[VersionRecord]:
        """The versions, of any model, whose parent is ``ref`` (``name@N``): fine-tuned, updated or distilled
        from it."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(db.versions).where(db.versions.c.parent == ref)).mappings().all()
            return [
                VersionRecord(
                    **row, aliases=tuple(aliases_by_version(connection, row["name"]).get(row["version"], []))
                )
                for row in rows
            ]

    # -- aliases and removal -------------------------------------------------------------------------

    def set_alias(
        self, ref: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> VersionRecord:
        """Point ``alias`` at the version ``ref`` names. Moving ``production`` keeps the old one as
        ``previous``, so a rollback is one alias away."""
        check_alias(alias)
        parsed = parse_ref(ref)
        with db.write(self.engine) as connection:
            lock_model(connection, parsed.name)
            record = find_version(connection, parsed)
            old = aliases_of(connection, record.name).get(alias)
            self._upsert_alias(connection, record.name, alias, record.version)
            if alias == PRODUCTION and old is not None and old != record.version:
                self._upsert_alias(connection, record.name, PREVIOUS, old)
            kind = "promoted" if alias == PRODUCTION else "aliased"
            record_event(
                connection,
                name=record.name,
                version=record.version,
                kind=kind,
                actor=actor,
                reason=reason,
                details={"alias": alias, "from_version": old},
            )
            return find_version(connection, ModelRef(record.name, version=record.version))

    def log_event(
        self,
        name: str,
        kind: str,
        *,
        version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an event that changes nothing in the registry itself (e.g. a canary started on a server)."""
        with db.write(self.engine) as connection:
            require_model(connection, name)
            record_event(
                connection, name=name, kind=kind, version=version, actor=actor, reason=reason, details=details
            )

    def _upsert_alias(self, connection: Connection, name: str, alias: str, version: int) -> None:
        where = (db.aliases.c.name == name) & (db.aliases.c.alias == alias)
        if connection.execute(update(db.aliases).where(where).values(version=version)).rowcount == 0:
            connection.execute(insert(db.aliases).values(name=name, alias=alias, version=version))

    def remove_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        name = parse_ref(name).name
        with db.write(self.engine) as connection:
            lock_model(connection, name)
            old = aliases_of(connection, name).get(alias)
            if old is None:
                raise NotFoundError(f"{name}: no alias '{alias}'")
            connection.execute(
                delete(db.aliases).where(db.aliases.c.name == name, db.aliases.c.alias == alias)
            )
            record_event(
                connection,
                name=name,
                version=old,
                kind="unaliased",
                actor=actor,
                reason=reason,
                details={"alias": alias},
            )

    def remove_version(
        self, ref: str, *, actor: str | None = None, reason: str | None = None
    ) -> VersionRecord:
        """Delete a version and its files. The reference must name the number (``name@3``), and the removal is
        refused while any alias points at it; its number is never given to another version."""
        parsed = parse_ref(ref)
        if parsed.version is None:
            raise ConfigError(f"'{ref}': name the version to remove by number, e.g. {parsed.name}@3")
        with db.write(self.engine) as connection:
            lock_model(connection, parsed.name)
            record = find_version(connection, parsed)
            if record.aliases:
                raise RegistryError(
                    f"{record.ref}: refusing to remove a version that aliases point at "
                    f"({', '.join(record.aliases)})",
                    hint=f"move or delete the aliases first (`modelcycle models alias {record.name}@N …`)",
                )
            connection.execute(
                delete(db.versions).where(
                    db.versions.c.name == record.name, db.versions.c.version == record.version
                )
            )
            record_event(
                connection,
                name=record.name,
                version=record.version,
                kind="removed",
                actor=actor,
                reason=reason,
                details={"path": str(self.folder(record))},
            )
        # After the commit: a crash here leaves files no row points at, never a row without files.
        remove_tree(self.folder(record))
        return record
