"""The registry on both backends: every test that takes ``registry`` runs on SQLite (the default) and on a
new PostgreSQL database (skipped, saying why, where no server can be started)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from modelcycle.errors import BundleError, ConfigError, MissingDependencyError, NotFoundError, RegistryError
from modelcycle.registry import ModelRef, Registry, db, parse_ref
from modelcycle.testing import tiny_bundle

SQLITE_ONLY = pytest.mark.parametrize("registry", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, home: Path) -> Iterator[Registry]:
    """A new registry whose artifacts are under ``home``: its database SQLite beside them, or PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened = Registry(home, database_url=url)
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("digits", ModelRef("digits")),
        ("digits@3", ModelRef("digits", version=3)),
        ("digits@production", ModelRef("digits", alias="production")),
        ("digits@latest", ModelRef("digits", alias="latest")),
    ],
)
def test_parse_ref(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize("text", ["", "@3", "a@b@c", "bad name", "x@"])
def test_bad_refs_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a model reference"):
        parse_ref(text)


def test_versions_count_up_and_resolve(registry: Registry) -> None:
    first, second = tiny_bundle(registry), tiny_bundle(registry, seed=1)
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    assert registry.resolve("tiny").version == 2  # no production alias: latest
    assert registry.resolve("tiny@latest").version == 2
    assert registry.resolve("tiny@1").path == "artifacts/tiny/1"  # relative: the home may move
    assert registry.folder(registry.resolve("tiny@1")) == first.path
    registry.set_alias("tiny@1", "production")
    assert registry.resolve("tiny").version == 1  # a bare name means production once set
    assert registry.open("tiny@production").manifest.version == 1
    assert registry.resolve("tiny@1").aliases == ("production",)


def test_an_edited_manifest_is_refused_though_every_file_it_lists_is_intact(registry: Registry) -> None:
    """bundle.json holds the other files' hashes and what an answer means (labels, schema): the registry's
    record of its own hash catches an edit, such as two labels swapped."""
    bundle = tiny_bundle(registry)
    manifest = bundle.path / "bundle.json"
    text = manifest.read_text()
    labels = bundle.manifest.outputs.labels
    assert labels is not None
    assert len(labels) >= 2
    swapped = text.replace(f'"{labels[0]}"', '"@swap@"').replace(f'"{labels[1]}"', f'"{labels[0]}"')
    manifest.write_text(swapped.replace('"@swap@"', f'"{labels[1]}"'))
    with pytest.raises(BundleError, match=r"bundle\.json: sha256 differs from the registry's record"):
        registry.open("tiny@1")
    manifest.write_text(text)
    assert registry.open("tiny@1").manifest.outputs.labels == labels


def test_a_moved_home_reads_its_own_files(tmp_path: Path) -> None:
    old = Registry(tmp_path / "old")
    tiny_bundle(old)
    old.close()
    (tmp_path / "old").rename(tmp_path / "new")
    moved = Registry(tmp_path / "new")
    try:
        assert moved.open("tiny@1").path == tmp_path / "new" / "artifacts" / "tiny" / "1"
    finally:
        moved.close()


def test_moving_production_keeps_previous_and_logs_events(registry: Registry) -> None:
    tiny_bundle(registry)
    tiny_bundle(registry)
    registry.set_alias("tiny@1", "production", reason="first release")
    registry.set_alias("tiny@2", "production", actor="ci", reason="better")
    assert registry.resolve("tiny@production").version == 2
    assert registry.resolve("tiny@previous").version == 1
    events = registry.history("tiny")
    assert [event.kind for event in events] == ["registered", "registered", "promoted", "promoted"]
    assert events[-1].actor == "ci"
    assert events[-1].reason == "better"
    assert events[-1].details == {"alias": "production", "from_version": 1}


def test_removing_an_aliased_version_is_refused(registry: Registry) -> None:
    bundle = tiny_bundle(registry)
    registry.set_alias("tiny@1", "candidate")
    with pytest.raises(
        RegistryError, match=r"tiny@1: refusing to remove a version that aliases point at \(candidate\)"
    ):
        registry.remove_version("tiny@1")
    assert bundle.path.exists()
    registry.remove_alias("tiny", "candidate")
    registry.remove_version("tiny@1", reason="obsolete")
    assert not bundle.path.exists()
    with pytest.raises(NotFoundError, match="no versions left"):
        registry.resolve("tiny")
    assert [event.kind for event in registry.history("tiny")][-2:] == ["unaliased", "removed"]


def test_missing_things_are_named(registry: Registry) -> None:
    tiny_bundle(registry)
    with pytest.raises(NotFoundError, match=r"tiny@7: no such version"):
        registry.resolve("tiny@7")
    with pytest.raises(NotFoundError, match=r"tiny@prod: no alias 'prod'"):
        registry.resolve("tiny@prod")
    with pytest.raises(NotFoundError, match=r"model 'tinny' is not registered \(did you mean 'tiny'\?\)"):
        registry.resolve("tinny@1")


def test_reserved_alias_is_refused(registry: Registry) -> None:
    tiny_bundle(registry)
    with pytest.raises(ConfigError, match="cannot be an alias"):
        registry.set_alias("tiny@1", "latest")


@pytest.mark.parametrize("statement", ["UPDATE events SET reason = 'edited'", "DELETE FROM events"])
def test_events_are_append_only_in_the_database_itself(registry: Registry, statement: str) -> None:
    tiny_bundle(registry)
    with (
        pytest.raises(sqlalchemy.exc.IntegrityError, match="append-only"),
        registry.engine.begin() as connection,
    ):
        connection.exec_driver_sql(statement)
    assert [(event.kind, event.reason) for event in registry.history("tiny")] == [("registered", None)]


@SQLITE_ONLY
def test_database_is_in_wal_mode(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_list_models_summarises(registry: Registry) -> None:
    tiny_bundle(registry, "a")
    tiny_bundle(registry, "a")
    tiny_bundle(registry, "b")
    registry.set_alias("a@2", "production")
    summary = {model.name: model for model in registry.list_models()}
    assert summary["a"].latest_version == 2
    assert summary["a"].version_count == 2
    assert summary["a"].aliases == {"production": 2}
    assert summary["b"].task == "classification"
    assert [v.version for v in registry.list_versions("a")] == [1, 2]


KILLED_WRITER = """
import sys, time
from modelcycle.bundle import io
from modelcycle.registry import Registry
from modelcycle.testing import tiny_manifest, tiny_state_dict

registry = Registry(sys.argv[1])
stage = sys.argv[2]
def pause(*args, **kwargs):
    print("paused", flush=True)
    time.sleep(60)
if stage == "writing":
    with registry.builder("victim") as builder:
        builder.write_weights(tiny_state_dict())
        pause()
else:  # the bundle is renamed into place, the row is not committed yet
    publish = io.BundleBuilder.publish
    def publish_then_pause(self, target, manifest):
        bundle = publish(self, target, manifest)
        pause()
        return bundle
    io.BundleBuilder.publish = publish_then_pause
    with registry.builder("victim") as builder:
        builder.write_weights(tiny_state_dict())
        registry.register(builder, tiny_manifest("victim"))
"""


@pytest.mark.parametrize("stage", ["writing", "committing"])
def test_killed_process_leaves_no_version(registry: Registry, home: Path, tmp_path: Path, stage: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(KILLED_WRITER))
    assert registry.list_models() == []  # the database exists before the writer starts
    child = subprocess.Popen(
        [sys.executable, str(script), str(home), stage],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MODELCYCLE_DATABASE_URL": registry.url},
    )
    try:
        assert child.stdout.readline().strip() == "paused"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    with pytest.raises(NotFoundError):
        registry.resolve("victim")
    assert registry.list_models() == []
    bundle = tiny_bundle(registry, "victim")  # the number is free and the leftovers are cleaned up
    assert bundle.manifest.version == 1
    assert sorted(p.name for p in (home / "artifacts" / "victim").iterdir()) == ["1"]
    assert registry.open("victim@1").manifest.version == 1


def test_numbers_are_never_reused(registry: Registry) -> None:
    tiny_bundle(registry)
    tiny_bundle(registry)
    registry.remove_version("tiny@2")
    assert tiny_bundle(registry).manifest.version == 3
    assert [event.version for event in registry.history("tiny")] == [1, 2, 2, 3]


def test_removal_needs_an_explicit_number(registry: Registry) -> None:
    tiny_bundle(registry)
    for ref in ("tiny", "tiny@latest"):
        with pytest.raises(ConfigError, match="name the version to remove by number"):
            registry.remove_version(ref)
    assert registry.resolve("tiny@1").version == 1


def test_database_refuses_an_alias_without_its_version(registry: Registry) -> None:
    tiny_bundle(registry)
    registry.set_alias("tiny@1", "production")
    with pytest.raises(sqlalchemy.exc.IntegrityError), registry.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM versions")


def test_readers_do_not_wait_for_a_writer(registry: Registry, home: Path) -> None:
    tiny_bundle(registry)
    other = Registry(home, database_url=registry.url)
    with db.write(registry.engine) as connection:  # holds the write lock (on PostgreSQL, the row's)
        connection.exec_driver_sql("UPDATE models SET created_at = created_at")
        assert other.resolve("tiny").version == 1
        assert other.list_models()[0].name == "tiny"
    other.close()


def test_run_prefix_is_not_a_pattern(registry: Registry) -> None:
    registry.runs.start("x", {})
    with pytest.raises(NotFoundError, match="matches no run"):
        registry.runs.get("%")


class Pruned(Exception):
    """Stands in for a pruned Optuna trial."""


def test_a_recorded_block_that_returns_is_a_finished_run_with_its_metrics(registry: Registry) -> None:
    with registry.runs.recording("tiny", {"lr": 0.1}, config_hash="abc") as run:
        run.log_metrics({"loss": 0.9}, step=1)
        run.log_metrics({"loss": 0.4, "accuracy": 0.75}, step=2)
        run.model_ref = "tiny@1"
        assert registry.runs.get(run.id).status == "running"
    record = registry.runs.get(run.id)
    assert (record.status, record.model_ref, record.error) == ("finished", "tiny@1", None)
    assert record.params == {"lr": 0.1}
    assert record.config_hash == "abc"
    assert record.final_metrics == {"loss": 0.4, "accuracy": 0.75}
    assert registry.runs.history(run.id, "loss") == [(1, 0.9), (2, 0.4)]
    assert record.ended_at is not None


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ValueError("the loss became nan"), "failed", "the loss became nan"),
        (KeyboardInterrupt(), "failed", "KeyboardInterrupt"),
        (Pruned("pruned after epoch 2"), "pruned", "pruned after epoch 2"),
    ],
)
def test_a_recorded_block_that_raises_ends_its_run_and_the_error_propagates(
    registry: Registry, error: BaseException, status: str, message: str
) -> None:
    run_id = _run_that_raises(registry, error, steps=1, statuses={Pruned: "pruned"})
    record = registry.runs.get(run_id)
    assert (record.status, record.error, record.model_ref) == (status, message, None)
    assert record.final_metrics == {"loss": 1.0}


def test_a_resumed_run_forgets_the_steps_after_its_checkpoint_and_is_ended_again(registry: Registry) -> None:
    run_id = _run_that_raises(registry, KeyboardInterrupt(), steps=3)
    with registry.runs.resuming(run_id, after_step=2) as resumed:
        assert registry.runs.get(run_id).status == "running"
        resumed.log_metrics({"loss": 0.25}, step=3)
    record = registry.runs.get(run_id)
    assert (record.status, record.error) == ("finished", None)
    assert registry.runs.history(run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 0.25)]


def _run_that_raises(registry: Registry, error: BaseException, *, steps: int, **options: Any) -> str:
    """The id of a recorded run that logged ``loss`` = 1/step for ``steps`` steps, named a model, then raised
    ``error`` (which must reach the caller)."""
    started: list[str] = []

    def body() -> None:
        with registry.runs.recording("tiny", {}, **options) as run:
            started.append(run.id)
            for step in range(1, steps + 1):
                run.log_metrics({"loss": 1.0 / step}, step=step)
            run.model_ref = "tiny@1"  # a run that fails after this still produced nothing
            raise error

    with pytest.raises(type(error)):
        body()
    return started[0]


def test_huge_version_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="version numbers run from 1 to"):
        parse_ref("tiny@99999999999999999999999")


def test_unusable_registry_locations_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match="cannot use as the registry folder"):
        Registry(blocker)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "registry.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="registry database"):
        Registry(corrupt).list_models()
    with pytest.raises(ConfigError, match="registry database URL"):
        Registry(tmp_path / "h", database_url="::not a url::").list_models()
    with pytest.raises(MissingDependencyError, match="no driver"):
        Registry(tmp_path / "h", database_url="postgresql+nosuchdriver://u:secret@localhost/db").list_models()
    assert not (tmp_path / "h" / "registry.db").exists(), "nothing is opened before it is used"


def test_a_registered_version_whose_manifest_is_gone_is_a_bundle_error(registry: Registry) -> None:
    bundle = tiny_bundle(registry)
    (bundle.path / "bundle.json").unlink()
    with pytest.raises(BundleError, match=r"not a bundle \(bundle\.json is missing\)"):
        registry.open("tiny@1")


def test_an_exclusive_lock_is_held_by_one_user_of_the_registry_at_a_time(registry: Registry) -> None:
    """What a cluster's replicas serialise their changes with: taken in one thread, released in another
    (an event loop's worker threads), and other writes to the registry go on while it is held."""
    second = Registry(registry.home, database_url=None if registry.url.startswith("sqlite") else registry.url)
    order: list[str] = []
    holding = registry.exclusive("lineup")
    holding.__enter__()

    def contender() -> None:
        with second.exclusive("lineup"):
            order.append("second")

    thread = threading.Thread(target=contender)
    thread.start()
    time.sleep(0.3)
    tiny_bundle(registry)  # a registration: the registry's writes go on under the lock
    order.append("first still holds it")
    releasing = threading.Thread(target=holding.__exit__, args=(None, None, None))
    releasing.start()
    releasing.join(timeout=30)
    thread.join(timeout=30)
    second.close()
    assert order == ["first still holds it", "second"]
