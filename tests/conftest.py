"""Shared fixtures: an isolated registry home per test, and an in-process CLI runner that goes through the
real entry point (so error conversion and exit codes are what a user gets)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcycle.cli.main import main
from modelcycle.cli.state import STATE
from modelcycle.demo import DemoResult
from modelcycle.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# examples/tiny-gpt.yaml cut down to seconds: a few hundred lines, one small layer, one epoch.
TINY_GPT = [
    "data.max_rows=400",
    "data.preprocess.text.max_length=32",
    "model.params.context_length=32",
    "model.params.embed_dim=16",
    "model.params.num_layers=1",
    "model.params.num_heads=2",
    "train.epochs=1",
]


def train_into(home: Path, *runs: tuple[str, list[str]]) -> Path:
    """Train each (example file, overrides) into the registry at ``home`` (for module-scoped fixtures)."""
    from modelcycle.config import load_config
    from modelcycle.pipeline import train

    registry = Registry(home)
    try:
        for example, overrides in runs:
            train(load_config(EXAMPLES / example, overrides), registry)
    finally:
        registry.close()
    return home


@dataclass
class DemoRun:
    home: Path
    result: DemoResult
    lines: list[str]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo run once for the session (about a minute): its result, and the registry and store it left
    behind, which the dashboard's tests look at."""
    from modelcycle.demo import run_demo

    home = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    return DemoRun(home, run_demo(home, say=lines.append), lines)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("MODELCYCLE_HOME", str(path))
    return path


@pytest.fixture
def registry(home: Path) -> Registry:
    opened = Registry(home)
    yield opened
    opened.close()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``modelcycle ARGS`` in process through ``main()``; returns the exit code and captured output."""

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["modelcycle", *args])
        monkeypatch.setattr(STATE, "debug", False)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on once this returns: for a server a test starts, or for
    a test that wants a refused connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric_value(metrics: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly ``labels``, parsed as Prometheus does."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


# A real PostgreSQL server for the tests that run on it: the one `.ci/run` started (its URL in
# MODELCYCLE_TEST_POSTGRES_URL), else one started here from Debian's binaries through the same script; without
# either, those tests skip and say why.
POSTGRES_URL = "MODELCYCLE_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database (``postgres``)."""
    given = os.environ.get(POSTGRES_URL)
    if given:
        yield given
        return
    # directly under /tmp: run as root, the server runs as the postgres user, who cannot enter pytest's folder
    folder = Path(tempfile.mkdtemp(prefix="modelcycle-test-postgres-"))
    script = ROOT / ".ci" / "postgres"
    started = subprocess.run([str(script), "start", str(folder)], capture_output=True, text=True)
    if started.returncode != 0:
        reason = started.stderr.strip() or "the start failed"
        pytest.skip(f"no PostgreSQL server: {reason} (set {POSTGRES_URL})")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards: its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
