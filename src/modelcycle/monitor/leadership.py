"""Which of the servers sharing a prediction store runs a model's monitoring rounds: the first to take the
model's lock, for as long as it lives. Without it ``--workers N`` (or two servers, or N Ray Serve replicas, on
one store) computed every round N times and sent every alert N times. One interface, ``RoundLeader``, and a
lock chosen by the store's location: a lock file beside a SQLite file (the servers share its disk), a
PostgreSQL advisory lock for a database (the servers may be on several machines). Either is freed when its
holder dies, and another server takes it at its next round."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from modelcycle.monitor.location import StoreLocation


class RoundLeader(Protocol):
    """Whether this process leads a model's rounds (taking the lead when it is free), and giving up every
    lead it holds."""

    def leads(self, model: str) -> bool: ...

    def release(self) -> None: ...


class FileRoundLeader:
    """``RoundLeader`` for a SQLite store: the model's lock file beside the store, held by flock."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._locks: dict[str, FileLock] = {}

    def leads(self, model: str) -> bool:
        lock = self._locks.get(model)
        if lock is None:  # not thread-local: each round runs in whichever executor thread is free
            path = self.store.with_name(f"{self.store.name}.{model}.rounds.lock")
            # no soft (file-exists) lock where flock is missing: a leader that died would keep it forever
            lock = self._locks[model] = FileLock(path, thread_local=False, fallback_to_soft=False)
        if lock.is_locked:
            return True
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        for lock in self._locks.values():
            lock.release(force=True)


def round_leader(store: StoreLocation) -> RoundLeader:
    """The ``RoundLeader`` of ``store``'s backend."""
    if store.path is not None:
        return FileRoundLeader(store.path)
    from modelcycle.monitor.postgres import PostgresRoundLeader  # psycopg only for a database

    return PostgresRoundLeader(store)
