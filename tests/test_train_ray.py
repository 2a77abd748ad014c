"""``modelcycle train CONFIG --ray ADDRESS --workers N``: on a local two-node Ray cluster on 127.0.0.1 it
registers one version whose metrics are torchrun's (``--nproc 2``, same seed); options that cannot work fail
at once, in one line naming the flag, without a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelcycle.cli.train_ray import scale
from modelcycle.errors import ConfigError
from modelcycle.registry import Registry
from modelcycle.testing.ray_cluster import local_ray_cluster
from tests.conftest import EXAMPLES, ROOT, free_port
from tests.test_trainer import run_two_processes

CANCER = EXAMPLES / "breast-cancer-mlp.yaml"
EPOCHS = "--set=train.epochs=10"  # seconds of training: the rest is Ray starting workers


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ray", "127.0.0.1:{closed}"], "--ray: nothing answers at '127.0.0.1:{closed}'"),
        (["--ray", "nonsense"], "--ray: 'nonsense' is not HOST:PORT of a Ray head node"),
        (["--workers", "2"], "--workers: needs --ray ADDRESS"),
        (["--ray", "127.0.0.1:{closed}", "--nproc", "2"], "--nproc: trains on this machine"),
    ],
)
def test_ray_options_that_cannot_work_fail_at_once_naming_the_flag(
    cli: Callable[..., Any], arguments: list[str], message: str
) -> None:
    closed = free_port()
    result = cli("train", str(CANCER), *[argument.format(closed=closed) for argument in arguments])
    assert result.exit_code == 2
    assert message.format(closed=closed) in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_default_to_the_cluster_s_gpus_else_its_cpus_and_never_exceed_them() -> None:
    assert scale({"CPU": 3.0}, None, "head:6379") == (3, False)
    assert scale({"CPU": 16.0, "GPU": 2.0}, None, "head:6379") == (2, True)
    assert scale({"CPU": 3.0}, 2, "head:6379") == (2, False)
    with pytest.raises(ConfigError, match="3 workers need 3 CPUs; the cluster at head:6379 has 2"):
        scale({"CPU": 2.0}, 3, "head:6379")


@pytest.mark.slow
@pytest.mark.integration
def test_ray_train_registers_one_version_with_torchrun_s_metrics(tmp_path: Path) -> None:
    pytest.importorskip("ray.train", reason="the ray extra is not installed (pip install 'modelcycle[ray]')")
    home = tmp_path / "ray"
    with ThreadPoolExecutor(max_workers=1) as background:
        with contextlib.ExitStack() as cluster:
            address = cluster.enter_context(local_ray_cluster(nodes=2, cpus_per_node=1))
            arguments = ["train", str(CANCER), EPOCHS, "--json", "--ray", address, "--workers", "2"]
            on_ray = subprocess.run(
                [sys.executable, "-m", "modelcycle", *arguments],
                capture_output=True,
                text=True,
                env={**os.environ, "MODELCYCLE_HOME": str(home)},
                cwd=ROOT,
                timeout=300,
            )
            # the head node takes about 30 s to stop after Ray Train (an actor of Ray's own lingers): torchrun
            # trains meanwhile
            stopped = background.submit(cluster.pop_all().close)
        on_torchrun, _ = run_two_processes(["train", str(CANCER), EPOCHS, "--json"], tmp_path / "torchrun")
        stopped.result()
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert on_torchrun.returncode == 0, on_torchrun.stderr[-2000:]
    ray_payload, torchrun_payload = json.loads(on_ray.stdout), json.loads(on_torchrun.stdout)
    assert ray_payload["ref"] == "breast-cancer-mlp@1"
    assert (home / "artifacts" / "breast-cancer-mlp" / "1").resolve() == Path(ray_payload["path"])
    ray_test, torchrun_test = ray_payload["metrics"]["test"], torchrun_payload["metrics"]["test"]
    assert ray_test.keys() == torchrun_test.keys()
    assert ray_test == pytest.approx(torchrun_test, abs=1e-6, rel=0)
    assert len(Registry(home).list_versions("breast-cancer-mlp")) == 1, "only rank 0 registers"
    (run,) = Registry(home).runs.recent()
    assert (run.id, run.status) == (ray_payload["run_id"], "finished")
    assert list((home / "ray-train").iterdir()) == [], "Ray Train's own state is removed"
