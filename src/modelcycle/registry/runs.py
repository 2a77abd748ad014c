"""Training runs and their per-step metrics, so that runs can be listed, inspected and compared."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, or_, select, update

from modelcycle.errors import NotFoundError
from modelcycle.plugins import did_you_mean
from modelcycle.registry import db

logger = logging.getLogger(__name__)
RunStatus = Literal["running", "finished", "failed", "pruned"]


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    status: str
    params: dict[str, Any]
    config_hash: str | None
    data_fingerprint: str | None
    model_ref: str | None
    error: str | None
    started_at: str
    ended_at: str | None
    final_metrics: dict[str, float] = field(default_factory=dict)


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted keys (``train.optimizer.lr``), so that two runs line up key by key."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class ActiveRun:
    """The run a ``with runs.recording(...)`` block records: its id, the metrics it logs, and the model it
    registered (``model_ref``, set by the block, is recorded when the block ends)."""

    id: str
    store: RunStore
    model_ref: str | None = None

    def log_metrics(self, values: dict[str, float], *, step: int) -> None:
        self.store.log_metrics(self.id, values, step=step)


class RunStore:
    """Writes and reads runs; each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(
        self,
        name: str,
        params: dict[str, Any],
        *,
        config_hash: str | None = None,
        data_fingerprint: str | None = None,
    ) -> str:
        run_id = uuid.uuid4().hex
        with db.write(self.engine) as connection:
            connection.execute(
                insert(db.runs).values(
                    id=run_id,
                    name=name,
                    status="running",
                    params=json.dumps(params, sort_keys=True),
                    config_hash=config_hash,
                    data_fingerprint=data_fingerprint,
                    started_at=db.utc_now(),
                )
            )
        return run_id

    @contextmanager
    def recording(
        self,
        name: str,
        params: dict[str, Any],
        *,
        config_hash: str | None = None,
        data_fingerprint: str | None = None,
        statuses: Mapping[type[BaseException], RunStatus] | None = None,
    ) -> Iterator[ActiveRun]:
        """Record the block as a new run: ``finished`` when it returns, ``failed`` (with the error) when it
        raises, Ctrl-C included, or the status ``statuses`` gives the exception's type (a pruned trial); the
        exception always propagates, so a run row never stays ``running``."""
        run_id = self.start(name, params, config_hash=config_hash, data_fingerprint=data_fingerprint)
        with self._ended(run_id, statuses or {}) as run:
            yield run

    @contextmanager
    def resuming(self, run_id: str, *, after_step: int) -> Iterator[ActiveRun]:
        """Record the block as the continuation of an interrupted run (see ``reopen``), ended as
        ``recording`` ends a new one."""
        self.reopen(run_id, after_step=after_step)
        with self._ended(run_id, {}) as run:
            yield run

    @contextmanager
    def _ended(self, run_id: str, statuses: Mapping[type[BaseException], RunStatus]) -> Iterator[ActiveRun]:
        run = ActiveRun(run_id, self)
        try:
            yield run
        except BaseException as error:
            status: RunStatus = next(
                (value for kind, value in statuses.items() if isinstance(error, kind)), "failed"
            )
            self.finish(run_id, status, error=str(error) or type(error).__name__)
            raise
        self.finish(run_id, "finished", model_ref=run.model_ref)

    def log_metrics(self, run_id: str, values: dict[str, float], *, step: int) -> None:
        finite = {key: float(value) for key, value in values.items() if math.isfinite(value)}
        if len(finite) < len(values):
            logger.warning(
                "run %s step %d: not logging non-finite %s", run_id, step, sorted(set(values) - set(finite))
            )
        if not finite:
            return
        rows = [{"run_id": run_id, "step": step, "key": key, "value": value} for key, value in finite.items()]
        with db.write(self.engine) as connection:
            connection.execute(insert(db.metrics), rows)

    def reopen(self, run_id: str, *, after_step: int) -> None:
        """Mark an interrupted run as running again and forget the metrics it logged after ``after_step`` (the
        resumed run logs those steps anew)."""
        with db.write(self.engine) as connection:
            connection.execute(
                update(db.runs)
                .where(db.runs.c.id == run_id)
                .values(status="running", error=None, ended_at=None)
            )
            connection.execute(
                delete(db.metrics).where(db.metrics.c.run_id == run_id, db.metrics.c.step > after_step)
            )

    def finish(
        self, run_id: str, status: RunStatus, *, model_ref: str | None = None, error: str | None = None
    ) -> None:
        with db.write(self.engine) as connection:
            connection.execute(
                update(db.runs)
                .where(db.runs.c.id == run_id)
                .values(status=status, model_ref=model_ref, error=error, ended_at=db.utc_now())
            )

    def get(self, run_id_or_prefix: str) -> RunRecord:
        """A run by id or by a unique prefix of its id (as shown by ``runs list``)."""
        with self.engine.connect() as connection:
            rows = (
                connection.execute(
                    select(db.runs).where(db.runs.c.id.startswith(run_id_or_prefix, autoescape=True)).limit(2)
                )
                .mappings()
                .all()
            )
        if len(rows) != 1:
            problem = "is ambiguous" if rows else "matches no run"
            raise NotFoundError(f"run '{run_id_or_prefix}' {problem}", hint="see `modelcycle runs list`")
        return self._records(rows)[0]

    def recent(self, name: str | None = None, *, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, optionally only those of one config name."""
        query = select(db.runs).order_by(db.runs.c.started_at.desc()).limit(limit)
        if name is not None:
            query = query.where(db.runs.c.name == name)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        if name is not None and not rows:
            raise NotFoundError(f"no runs named '{name}'{did_you_mean(name, self.names())}")
        return self._records(rows)

    def search(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[RunRecord], int]:
        """One page of the runs matching every filter given (``text``: a piece of the id, the parameters'
        JSON, the model registered or the error), newest first, and how many match in all."""
        conditions = []
        if name:
            conditions.append(db.runs.c.name == name)
        if status:
            conditions.append(db.runs.c.status == status)
        if text:
            conditions.append(
                or_(
                    *(
                        column.contains(text, autoescape=True)
                        for column in (db.runs.c.id, db.runs.c.params, db.runs.c.model_ref, db.runs.c.error)
                    )
                )
            )
        page = select(db.runs).where(*conditions).order_by(db.runs.c.started_at.desc(), db.runs.c.id)
        counting = select(func.count()).select_from(db.runs).where(*conditions)
        with self.engine.connect() as connection:
            rows = connection.execute(page.limit(limit).offset(offset)).mappings().all()
            total = int(connection.execute(counting).scalar_one())
        return self._records(rows), total

    def curves(self, run_ids: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Every metric of each run as (step, value) pairs in step order: what a comparison overlays."""
        found: dict[str, dict[str, list[tuple[int, float]]]] = {run_id: {} for run_id in run_ids}
        query = (
            select(db.metrics.c.run_id, db.metrics.c.key, db.metrics.c.step, db.metrics.c.value)
            .where(db.metrics.c.run_id.in_(run_ids))
            .order_by(db.metrics.c.step, db.metrics.c.id)
        )
        with self.engine.connect() as connection:
            for run_id, key, step, value in connection.execute(query):
                found[run_id].setdefault(key, []).append((int(step), float(value)))
        return found

    def names(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(db.runs.c.name).distinct()).scalars())

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        query = (
            select(db.metrics.c.step, db.metrics.c.value)
            .where(db.metrics.c.run_id == run_id, db.metrics.c.key == key)
            .order_by(db.metrics.c.step, db.metrics.c.id)
        )
        with self.engine.connect() as connection:
            return [(int(step), float(value)) for step, value in connection.execute(query)]

    def _records(self, rows: Any) -> list[RunRecord]:
        """Runs with each metric's last logged value (one grouped read, not every step of every run)."""
        ids = [row["id"] for row in rows]
        final: dict[str, dict[str, float]] = {run_id: {} for run_id in ids}
        last = (
            select(func.max(db.metrics.c.id))
            .where(db.metrics.c.run_id.in_(ids))
            .group_by(db.metrics.c.run_id, db.metrics.c.key)
            .scalar_subquery()
        )
        query = select(db.metrics.c.run_id, db.metrics.c.key, db.metrics.c.value).where(
            db.metrics.c.id.in_(last)
        )
        with self.engine.connect() as connection:
            for run_id, key, value in connection.execute(query):
                final[run_id][key] = float(value)
        return [
            RunRecord(**{**row, "params": json.loads(row["params"]), "final_metrics": final[row["id"]]})
            for row in rows
        ]
