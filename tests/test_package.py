"""The package surface: exported names resolve, the real entry points behave, and nothing heavy or
side-effecting happens at import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import pytest

import modelcycle
from tests.conftest import ROOT


def test_all_exports_resolve() -> None:
    for name in modelcycle.__all__:
        assert getattr(modelcycle, name) is not None, name


def test_import_is_light() -> None:
    code = "import sys, modelcycle; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELCYCLE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_module_entry_point_errors_and_debug(tmp_path: Path) -> None:
    assert run("--version", home=tmp_path).stdout.strip() == f"modelcycle {modelcycle.__version__}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [\n")
    plain = run("config", "validate", str(bad), home=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.startswith("error: ")
    assert "YAML syntax error" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = run("--debug", "config", "validate", str(bad), home=tmp_path)
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("modelcycle")
    assert script.exists()
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "models" in result.stdout


def import_cycles(package: str) -> list[list[str]]:
    """The package's import cycles, each as the sorted modules of one strongly connected component of the
    import graph (every import grimp finds, those inside functions too)."""
    graph = grimp.build_graph(package, cache_dir=None)
    cycles: set[tuple[str, ...]] = set()
    for module in graph.modules:
        upstream = graph.find_upstream_modules(module)
        component = {other for other in upstream if module in graph.find_upstream_modules(other)}
        if component:
            cycles.add(tuple(sorted(component | {module})))
    return sorted(list(cycle) for cycle in cycles)


def test_the_import_graph_has_no_cycle() -> None:
    assert import_cycles("modelcycle") == []


@pytest.mark.slow
def test_the_wheel_ships_py_typed(tmp_path: Path) -> None:
    """Type checkers read modelcycle's hints only if ``py.typed`` is in the installed package (PEP 561);
    built from a copy, so the build leaves nothing in the checkout."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("modelcycle-*.whl")
    assert "modelcycle/py.typed" in zipfile.ZipFile(wheel).namelist()
