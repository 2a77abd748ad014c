"""The registry proper: models, their numbered versions (bundles under the artifact root) and aliases.

Every change commits together with its audit event. Registration hashes the bundle before taking the write
lock, then allocates the next version number, renames the bundle into place and inserts the row in one
transaction: a crash at any point leaves either a whole version or none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelcycle.bundle import Bundle, BundleBuilder, BundleManifest
from modelcycle.bundle.io import TEMP_PREFIX, manifest_text
from modelcycle.errors import NotFoundError, RegistryError
from modelcycle.plugins import did_you_mean
from modelcycle.registry import db
from modelcycle.registry.events import EventRecord, list_events, record_event
from modelcycle.registry.refs import ModelRef, check_alias, parse_ref
from modelcycle.registry.runs import RunStore

PRODUCTION, PREVIOUS = "production", "previous"
_ALLOCATION_ATTEMPTS = 5


def default_home() -> Path:
    return Path(os.environ.get("MODELCYCLE_HOME", ".modelcycle"))


@dataclass(frozen=True)
class VersionRecord:
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


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int
    version_count: int
    aliases: dict[str, int]
    task: str


class Registry:
    """One registry home: ``registry.db`` (or ``$MODELCYCLE_DATABASE_URL``) and ``artifacts/<name>/<v>/``."""

    def __init__(self, home: str | Path | None = None, *, database_url: str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.artifacts = self.home / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        url = database_url or os.environ.get("MODELCYCLE_DATABASE_URL")
        self.engine = db.create(url or f"sqlite:///{(self.home / 'registry.db').resolve()}")
        self.runs = RunStore(self.engine)

    def close(self) -> None:
        self.engine.dispose()

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
        _sweep_stale_temporaries(self.artifacts / name, keep=builder.path)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._publish_next_version(builder, manifest, name, actor=actor, reason=reason)
            except IntegrityError:
                # SQLite's BEGIN IMMEDIATE serialises writers, so only a server database (where the first
                # registration of a new name can race) gets here; the loser simply takes the next number.
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
        """In one transaction: lock the model, take max(version) + 1, insert the row and the event, and rename
        the bundle into place last, so that a failed commit can remove it again."""
        published: Bundle | None = None
        try:
            with self.engine.begin() as connection:
                self._lock_model(connection, name)
                latest = connection.execute(
                    select(func.max(db.versions.c.version)).where(db.versions.c.name == name)
                ).scalar()
                version = (latest or 0) + 1
                target = self.artifacts / name / str(version)
                final = manifest.model_copy(
                    update={"name": name, "version": version, "files": builder.seal()}
                )
                connection.execute(
                    insert(db.versions).values(
                        name=name,
                        version=version,
                        path=str(target.resolve()),
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
                _discard_orphan(target)
                published = builder.publish(target, final)
                return published  # the transaction commits on the way out of the block
        except BaseException:
            if published is not None:
                shutil.rmtree(published.path, ignore_errors=True)
            raise

    def _lock_model(self, connection: Connection, name: str) -> None:
        """Create the model row if needed and lock it (FOR UPDATE on server databases) until commit."""
        query = select(db.models.c.name).where(db.models.c.name == name).with_for_update()
        if connection.execute(query).first() is None:
            connection.execute(insert(db.models).values(name=name, created_at=db.utc_now()))

    # -- lookup --------------------------------------------------------------------------------------

    def resolve(self, ref: str | ModelRef) -> VersionRecord:
        """The version a reference names; a bare name means production if set, else the latest."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self.engine.connect() as connection:
            version = self._version_number(connection, parsed)
            row = (
                connection.execute(
                    select(db.versions).where(
                        db.versions.c.name == parsed.name, db.versions.c.version == version
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                self._require_model(connection, parsed.name)
                known = [str(v) for v in self._versions_of(connection, parsed.name)]
                raise NotFoundError(
                    f"{parsed.name}@{version}: no such version", hint=f"versions: {', '.join(known)}"
                )
            return VersionRecord(
                **row, aliases=tuple(self._aliases_of(connection, parsed.name).get(version, []))
            )

    def open(self, ref: str | ModelRef) -> Bundle:
        """The verified bundle a reference names."""
        return Bundle(self.resolve(ref).path)

    def _version_number(self, connection: Connection, ref: ModelRef) -> int:
        if ref.version is not None:
            return ref.version
        if ref.alias not in (None, "latest"):
            found = connection.execute(
                select(db.aliases.c.version).where(
                    db.aliases.c.name == ref.name, db.aliases.c.alias == ref.alias
                )
            ).scalar()
            if found is None:
                known = list(self._aliases_of_name(connection, ref.name))
                self._require_model(connection, ref.name)
                raise NotFoundError(
                    f"{ref}: no alias '{ref.alias}'{did_you_mean(ref.alias or '', known)}",
                    hint=f"aliases: {', '.join(known) or 'none'}",
                )
            return int(found)
        if ref.alias is None:
            production = connection.execute(
                select(db.aliases.c.version).where(
                    db.aliases.c.name == ref.name, db.aliases.c.alias == PRODUCTION
                )
            ).scalar()
            if production is not None:
                return int(production)
        latest = connection.execute(
            select(func.max(db.versions.c.version)).where(db.versions.c.name == ref.name)
        ).scalar()
        if latest is None:
            self._require_model(connection, ref.name)
            raise NotFoundError(f"{ref.name}: the model has no versions left")
        return int(latest)

    def _require_model(self, connection: Connection, name: str) -> None:
        names = list(connection.execute(select(db.models.c.name)).scalars())
        if name not in names:
            raise NotFoundError(
                f"model '{name}' is not registered{did_you_mean(name, names)}",
                hint="see `modelcycle models list`",
            )

    def _versions_of(self, connection: Connection, name: str) -> list[int]:
        query = (
            select(db.versions.c.version).where(db.versions.c.name == name).order_by(db.versions.c.version)
        )
        return [int(v) for v in connection.execute(query).scalars()]

    def _aliases_of_name(self, connection: Connection, name: str) -> dict[str, int]:
        query = select(db.aliases.c.alias, db.aliases.c.version).where(db.aliases.c.name == name)
        return {alias: int(version) for alias, version in connection.execute(query)}

    def _aliases_of(self, connection: Connection, name: str) -> dict[int, list[str]]:
        by_version: dict[int, list[str]] = {}
        for alias, version in sorted(self._aliases_of_name(connection, name).items()):
            by_version.setdefault(version, []).append(alias)
        return by_version

    def list_models(self) -> list[ModelSummary]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    db.versions.c.name,
                    func.max(db.versions.c.version),
                    func.count(),
                    func.max(db.versions.c.task),
                )
                .group_by(db.versions.c.name)
                .order_by(db.versions.c.name)
            ).all()
            return [
                ModelSummary(name, int(latest), int(count), self._aliases_of_name(connection, name), task)
                for name, latest, count, task in rows
            ]

    def list_versions(self, name: str) -> list[VersionRecord]:
        name = parse_ref(name).name
        with self.engine.connect() as connection:
            self._require_model(connection, name)
            aliases = self._aliases_of(connection, name)
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
            self._require_model(connection, name)
        return list_events(self.engine, name, limit=limit)

    # -- aliases and removal -------------------------------------------------------------------------

    def set_alias(
        self, ref: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> VersionRecord:
        """Point ``alias`` at the version ``ref`` names. Moving ``production`` keeps the old one as
        ``previous``, so a rollback is one alias away."""
        check_alias(alias)
        record = self.resolve(ref)
        with self.engine.begin() as connection:
            current = self._aliases_of_name(connection, record.name)
            old = current.get(alias)
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
        return self.resolve(ModelRef(record.name, version=record.version))

    def _upsert_alias(self, connection: Connection, name: str, alias: str, version: int) -> None:
        where = (db.aliases.c.name == name) & (db.aliases.c.alias == alias)
        if connection.execute(update(db.aliases).where(where).values(version=version)).rowcount == 0:
            connection.execute(insert(db.aliases).values(name=name, alias=alias, version=version))

    def remove_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        name = parse_ref(name).name
        with self.engine.begin() as connection:
            old = self._aliases_of_name(connection, name).get(alias)
            if old is None:
                self._require_model(connection, name)
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
        """Delete a version and its files; refused while any alias points at it."""
        record = self.resolve(ref)
        if record.aliases:
            raise RegistryError(
                f"{record.ref}: refusing to remove a version that aliases point at "
                f"({', '.join(record.aliases)})",
                hint=f"move or delete the aliases first (`modelcycle models alias {record.name}@N ALIAS`)",
            )
        path = Path(record.path)
        trash = path.parent / f"{TEMP_PREFIX}removed-{uuid.uuid4().hex}"
        try:
            with self.engine.begin() as connection:
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
                    details={"path": record.path},
                )
                if path.exists():  # moved aside last, so that a failed commit can put it back
                    os.rename(path, trash)
        except BaseException:
            if trash.exists() and not path.exists():
                os.rename(trash, path)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return record


def _discard_orphan(target: Path) -> None:
    """A directory at a version's path with no row is left by a crash between rename and commit; the row
    is the truth, so the directory is removed before the number is reused."""
    if target.exists():
        orphan = target.parent / f"{TEMP_PREFIX}orphan-{uuid.uuid4().hex}"
        os.rename(target, orphan)
        shutil.rmtree(orphan, ignore_errors=True)


def _sweep_stale_temporaries(model_dir: Path, *, keep: Path) -> None:
    """Remove ``.tmp-*`` directories left by processes that died mid-write (their pid is gone)."""
    for entry in model_dir.glob(f"{TEMP_PREFIX}*"):
        owner = entry.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        if entry != keep and not (owner.isdigit() and _process_alive(int(owner))):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
