"""``modelcycle tune --workers K [--ray ADDRESS]``: K worker processes (or Ray tasks) on one study in the
registry's database run exactly the study's number of trials between them, each recorded once as a run and
once as an Optuna trial, pruned ones counted; the best is registered once, by the command itself; a worker
that dies fails the command with one line naming it; a second call resumes the same study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelcycle.config import load_config
from modelcycle.errors import TrainingError
from modelcycle.registry import Registry
from modelcycle.tuning import study_name, study_storage, tune
from modelcycle.tuning.trials import SEARCH_ATTR
from modelcycle.tuning.workers import WorkerProcess, stop_processes, wait_for_processes
from tests.conftest import EXAMPLES, free_port

CANCER = EXAMPLES / "breast-cancer-mlp.yaml"
QUICK = ["train.epochs=3", "tune.startup_trials=2"]


def _study_trials(registry: Registry, overrides: list[str]) -> list[Any]:
    import optuna

    name = study_name(load_config(CANCER, overrides))
    return optuna.load_study(study_name=name, storage=study_storage(registry)).trials


def _check_search(registry: Registry, result: dict[str, Any], trials: int, overrides: list[str]) -> None:
    """``trials`` finished Optuna trials and as many trial runs with the same outcomes, and what the command
    said about them; the best registered once, by the command's own run."""
    study = _study_trials(registry, overrides)
    states = Counter(trial.state.name for trial in study)
    assert len(study) == trials
    assert states["COMPLETE"] + states["PRUNED"] == trials
    assert result["trials"] == {
        "complete": states["COMPLETE"],
        "pruned": states["PRUNED"],
        "failed": states["FAIL"],
    }
    runs = registry.runs.recent(limit=100)
    trial_runs = Counter(run.status for run in runs if run.model_ref is None)
    assert trial_runs == Counter({"finished": states["COMPLETE"], "pruned": states["PRUNED"]})
    assert next(run.model_ref for run in runs if run.model_ref is not None) == result["ref"]


@pytest.mark.slow
def test_workers_run_exactly_the_trials_between_them_and_resume(registry: Registry, cli) -> None:
    first = cli(
        "tune", str(CANCER), "--trials", "6", "--workers", "2", "--json", *(f"--set={o}" for o in QUICK)
    )
    assert first.exit_code == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["ref"] == "breast-cancer-mlp@1"
    _check_search(registry, result, 6, QUICK)
    assert len({trial.user_attrs[SEARCH_ATTR] for trial in _study_trials(registry, QUICK)}) == 1
    assert len(registry.runs.recent(limit=100)) == 6 + 1, "the trials' runs and the registered one"
    assert [(model.name, model.version_count) for model in registry.list_models()] == [
        ("breast-cancer-mlp", 1)
    ]

    again = cli(
        "tune", str(CANCER), "--trials", "7", "--workers", "2", "--json", *(f"--set={o}" for o in QUICK)
    )
    assert again.exit_code == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["study"] == result["study"], "more trials continue the same study"
    _check_search(registry, resumed, 7, QUICK)
    assert resumed["best_value"] >= result["best_value"]


def _worker(index: int, code: str, log: Path) -> WorkerProcess:
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)], stdout=output, stderr=subprocess.STDOUT, text=True
        )
    return WorkerProcess(index, process, log)


def test_a_failed_worker_is_one_line_with_its_exit_code_and_error(tmp_path: Path) -> None:
    sleeper = _worker(0, "import time; time.sleep(60)", tmp_path / "0.log")
    failing = _worker(
        1,
        """
        import sys
        print("Trial 3 started")
        print("error: registry.db: the database is locked", file=sys.stderr)
        print("hint: retry", file=sys.stderr)
        sys.exit(4)
        """,
        tmp_path / "1.log",
    )
    started = time.monotonic()
    try:
        with pytest.raises(TrainingError) as raised:
            wait_for_processes([sleeper, failing])
    finally:
        stop_processes([sleeper, failing])
    assert time.monotonic() - started < 20, "the failure is seen at once, and the other worker stopped"
    assert raised.value.parameter == "workers"
    assert raised.value.detail == "tune worker 1 failed (exit code 4): registry.db: the database is locked"
    assert sleeper.process.returncode == -signal.SIGTERM


def _worker_pids() -> list[int]:
    """This process's children that are tune workers (from /proc: Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"tune-worker" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_killed_worker_fails_the_search_and_stops_the_others(registry: Registry) -> None:
    config = load_config(CANCER, ["train.epochs=40", "tune.pruner=none"])
    outcome: list[BaseException] = []

    def search() -> None:
        try:
            tune(config, registry, trials=20, workers=2)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    thread = threading.Thread(target=search)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if [run.status for run in registry.runs.recent()].count("running") == 2:
            break  # both workers are inside a trial
        time.sleep(0.1)
    pids = _worker_pids()
    assert len(pids) == 2, "two worker processes"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the command does not hang on a dead worker"
    (error,) = outcome
    assert isinstance(error, TrainingError), error
    assert "failed (killed by SIGKILL)" in error.detail
    assert _worker_pids() == [], "the other worker was stopped"
    statuses = Counter(run.status for run in registry.runs.recent(limit=100))
    assert statuses["running"] == 1, f"only the killed worker's trial is left running: {statuses}"
    assert statuses["failed"] >= 1, "the stopped worker recorded its trial as failed"
    assert registry.list_models() == []


def test_an_unreachable_ray_head_is_named(cli) -> None:
    result = cli("tune", str(CANCER), "--workers", "2", "--ray", f"127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert "--ray: nothing answers at '127.0.0.1:" in result.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_workers_on_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch, home: Path, cli) -> None:
    monkeypatch.setenv("MODELCYCLE_DATABASE_URL", postgres_url)
    done = cli(
        "tune", str(CANCER), "--trials", "4", "--workers", "2", "--json", *(f"--set={o}" for o in QUICK)
    )
    assert done.exit_code == 0, done.stderr
    registry = Registry(home)
    try:
        assert registry.url == postgres_url
        _check_search(registry, json.loads(done.stdout), 4, QUICK)
    finally:
        registry.close()


@pytest.mark.slow
@pytest.mark.integration
def test_workers_as_ray_tasks(registry: Registry, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'modelcycle[ray]')")
    from modelcycle.testing.ray_cluster import local_ray_cluster
    from modelcycle.tuning import search

    def no_processes(_specs: object) -> None:
        raise AssertionError("with --ray the workers are Ray tasks, not processes here")

    monkeypatch.setattr(search, "run_processes", no_processes)
    with local_ray_cluster(nodes=2, cpus_per_node=1) as address:
        done = cli(
            "tune", str(CANCER), "--trials", "4", "--workers", "2", "--ray", address, "--json",
            *(f"--set={o}" for o in QUICK),
        )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    _check_search(registry, json.loads(done.stdout), 4, QUICK)
