"""Writers in separate processes at once, on SQLite and on PostgreSQL (whose transactions read each other's
commits, so only locks keep them apart). Each test starts on a new, empty database: the processes also race
to create its tables. One pool of processes serves every test, since starting one costs seconds (it imports
torch); its idle workers take the tasks of one ``starmap`` together."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path

import pytest

from modelcycle.registry import Registry
from modelcycle.testing import tiny_bundle

pytestmark = pytest.mark.slow  # the pool starts in seconds
PROCESSES = 4


@pytest.fixture(scope="module")
def workers() -> Iterator[Pool]:
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        yield pool


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, home: Path) -> str:
    """A new database's URL: SQLite in the home, or a new PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{home / 'registry.db'}"


def _register(home: str, url: str, count: int) -> list[int]:
    registry = Registry(home, database_url=url)
    try:
        return [tiny_bundle(registry, "shared").manifest.version for _ in range(count)]
    finally:
        registry.close()


def test_registrations_at_once_get_every_number_once(workers: Pool, home: Path, database_url: str) -> None:
    batches = workers.starmap(_register, [(str(home), database_url, 25)] * PROCESSES)
    assert sorted(version for batch in batches for version in batch) == list(range(1, 101))
    registry = Registry(home, database_url=database_url)
    try:
        records = registry.list_versions("shared")
        assert [record.version for record in records] == list(range(1, 101))
        assert len({registry.folder(record) for record in records}) == 100
        assert all((registry.folder(record) / "bundle.json").is_file() for record in records)
        events = registry.history("shared")
        assert sorted(event.version or 0 for event in events) == list(range(1, 101))
        assert {event.kind for event in events} == {"registered"}
    finally:
        registry.close()


def _promote(home: str, url: str, worker: int, rounds: int) -> None:
    registry = Registry(home, database_url=url)
    try:
        registry.set_alias(f"shared@{worker % 3 + 1}", "candidate")  # every worker creates the alias first
        for round_ in range(rounds):
            registry.set_alias(f"shared@{(worker + round_) % 3 + 1}", "production")
    finally:
        registry.close()


def test_promotions_at_once_keep_one_chain_of_previous_versions(
    workers: Pool, home: Path, database_url: str
) -> None:
    """Each promotion records the production version it replaced: read inside a transaction that holds the
    model, that is always the one the promotion before it set."""
    registry = Registry(home, database_url=database_url)
    try:
        for _ in range(3):
            tiny_bundle(registry, "shared")
        workers.starmap(_promote, [(str(home), database_url, worker, 20) for worker in range(PROCESSES)])
        promotions = [event for event in registry.history("shared") if event.kind == "promoted"]
        assert len(promotions) == PROCESSES * 20
        replaced = [event.details["from_version"] for event in promotions]
        assert replaced == [None, *(event.version for event in promotions[:-1])]
        assert registry.resolve("shared@production").version == promotions[-1].version
        moved = [event for event in promotions if event.details["from_version"] not in (None, event.version)]
        assert registry.resolve("shared@previous").version == moved[-1].details["from_version"]
        assert len([event for event in registry.history("shared") if event.kind == "aliased"]) == PROCESSES
    finally:
        registry.close()


def _record_runs(home: str, url: str, count: int) -> list[str]:
    registry = Registry(home, database_url=url)
    try:
        ids = []
        for index in range(count):
            with registry.runs.recording("shared", {"index": index}) as run:
                for step in (1, 2, 4):
                    run.log_metrics({"loss": 1.0 / step}, step=step)
            ids.append(run.id)
        return ids
    finally:
        registry.close()


def test_runs_recorded_at_once_keep_their_own_metrics(workers: Pool, home: Path, database_url: str) -> None:
    batches = workers.starmap(_record_runs, [(str(home), database_url, 10)] * PROCESSES)
    ids = [run_id for batch in batches for run_id in batch]
    assert len(set(ids)) == PROCESSES * 10
    registry = Registry(home, database_url=database_url)
    try:
        assert {run.id for run in registry.runs.recent("shared", limit=100)} == set(ids)
        for run_id in ids:
            assert registry.runs.get(run_id).status == "finished"
            assert registry.runs.history(run_id, "loss") == [(1, 1.0), (2, 0.5), (4, 0.25)]
    finally:
        registry.close()
