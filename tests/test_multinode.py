"""Training across machines with torchrun: two "nodes" on 127.0.0.1 (two ``torchrun`` processes meeting
through c10d rendezvous) train exactly what one node with two processes trains; nodes that disagree on the
config, or cannot reach the registry, fail with a clear error instead of training or hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelcycle.registry import Registry
from tests.conftest import free_port
from tests.test_trainer import CANCER, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]
OVERRIDES = ["--set=train.epochs=2", "--set=train.checkpoint_every_steps=5"]


def start_node(
    rank: int, port: int, home: Path, arguments: list[str], **environment: str
) -> subprocess.Popen[str]:
    """One node of two: ``torchrun --nnodes 2 --node-rank RANK --rdzv-backend c10d`` with one process."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}"),
        *("--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"),
        *("--rdzv-id=modelcycle-test", "-m", "modelcycle", *arguments),
    ]
    env = {**os.environ, "MODELCYCLE_HOME": str(home), **environment}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )


def run_nodes(
    home: Path, first: list[str], second: list[str], *, second_home: Path | None = None, **environment: str
) -> list[tuple[int, str, str]]:
    """Both nodes to the end: (exit code, stdout, stderr) of each; the second node's registry folder is
    ``second_home`` when given (a folder the first node does not share)."""
    port = free_port()
    nodes = [
        start_node(0, port, home, first, **environment),
        start_node(1, port, second_home or home, second, **environment),
    ]
    finished = []
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=300)
            finished.append((node.returncode, stdout, stderr))
    finally:
        for node in nodes:
            node.kill()
    return finished


def assert_one_line_error(stderr: str) -> None:
    """modelcycle said what was wrong in its one line, with no traceback through its code (torchrun adds
    a traceback of its own, of the launcher, when a process fails)."""
    assert "error: " in stderr
    assert f"{os.sep}modelcycle{os.sep}" not in stderr


def test_two_nodes_train_the_weights_of_one_node_with_two_processes(tmp_path: Path) -> None:
    arguments = ["train", str(CANCER), *OVERRIDES, "--json"]
    # torchrun gives each of several processes on a node one thread; a node of one process would have all
    # the cores, and matrix products summed in another order differ in the last bits
    nodes = run_nodes(tmp_path / "nodes", arguments, arguments, OMP_NUM_THREADS="1")
    assert [code for code, _, _ in nodes] == [0, 0], [err[-2000:] for _, _, err in nodes]
    (printed,) = [json.loads(out) for _, out, _ in nodes if out.strip()]  # global rank 0 reports, once
    one_node = subprocess.run(
        [sys.executable, "-m", "modelcycle", *arguments, "--nproc", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELCYCLE_HOME": str(tmp_path / "one")},
        cwd=ROOT,
        timeout=300,
    )
    assert one_node.returncode == 0, one_node.stderr[-2000:]
    registry, reference = Registry(tmp_path / "nodes"), Registry(tmp_path / "one")
    assert len(registry.list_versions("breast-cancer-mlp")) == 1, "only global rank 0 registers"
    assert [run.status for run in registry.runs.recent()] == ["finished"]
    weights = registry.open(printed["ref"]).state_dict()
    expected = reference.open(json.loads(one_node.stdout)["ref"]).state_dict()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert not list((tmp_path / "nodes" / "checkpoints" / "breast-cancer-mlp").glob("[!.]*"))


def test_nodes_with_different_configs_fail_together(tmp_path: Path) -> None:
    first = ["train", str(CANCER), *OVERRIDES]
    nodes = run_nodes(tmp_path, first, [*first, "--set=train.optimizer.lr=0.5"])
    assert [code != 0 for code, _, _ in nodes] == [True, True]
    for _, _, stderr in nodes:
        assert "1 of 2 ranks have a different config than rank 0" in stderr
        assert_one_line_error(stderr)
    assert Registry(tmp_path).runs.recent() == []


def test_nodes_that_cannot_reach_the_registry_fail_clearly(tmp_path: Path) -> None:
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/registry"
    arguments = ["train", str(CANCER), *OVERRIDES]
    nodes = run_nodes(tmp_path, arguments, arguments, MODELCYCLE_DATABASE_URL=unreachable)
    assert [code != 0 for code, _, _ in nodes] == [True, True]
    for _, _, stderr in nodes:
        assert f"127.0.0.1:{unreachable.split(':')[-1].split('/')[0]}" in stderr
        assert_one_line_error(stderr)


def test_sharded_nodes_without_a_shared_folder_fail_together(tmp_path: Path) -> None:
    arguments = ["train", str(CANCER), *OVERRIDES, "--set=train.strategy=fsdp"]
    nodes = run_nodes(tmp_path / "first", arguments, arguments, second_home=tmp_path / "second")
    assert [code != 0 for code, _, _ in nodes] == [True, True]
    for _, _, stderr in nodes:
        assert "1 of 2 ranks: cannot see the checkpoint folder" in stderr
        assert_one_line_error(stderr)
