"""The trainer: schedules, accumulation, clipping, early stopping, precision, checkpoints with bitwise-exact
resume after SIGKILL, and data-parallel training in two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from pydantic import ValidationError

from modelcycle.config import OptimizerConfig, ScheduleConfig, TrainConfig, load_config
from modelcycle.errors import ConfigError, TrainingError
from modelcycle.pipeline import train
from modelcycle.pipeline.training import checkpoint_root
from modelcycle.registry import Registry
from modelcycle.tasks.classification import Classification
from modelcycle.train import TensorSet, Trainer
from modelcycle.train import checkpoint as checkpoints
from modelcycle.train.schedules import build_scheduler
from tests.conftest import EXAMPLES, ROOT

CANCER = EXAMPLES / "breast-cancer-mlp.yaml"


def learning_rates(
    config: ScheduleConfig, steps: int, *, steps_per_epoch: int = 10, epochs: int = 10
) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=steps_per_epoch, epochs=epochs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_schedules() -> None:
    assert learning_rates(ScheduleConfig(), 3) == [1.0, 1.0, 1.0]
    assert learning_rates(ScheduleConfig(name="step", step_epochs=1, gamma=0.5), 21)[::10] == [1.0, 0.5, 0.25]
    warm = learning_rates(ScheduleConfig(name="cosine", warmup_steps=4, min_lr=0.1), 100)
    assert warm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert warm[4] == pytest.approx(1.0)
    assert warm[52] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)  # half-way through the cosine
    assert warm[-1] == pytest.approx(0.1, abs=1e-3)
    cycle = learning_rates(ScheduleConfig(name="one_cycle"), 100)
    assert max(cycle) == pytest.approx(1.0, abs=1e-3)
    assert cycle[0] < 0.1
    assert cycle[-1] < 1e-3
    with pytest.raises(ConfigError, match="one_cycle has its own warm-up"):
        learning_rates(ScheduleConfig(name="one_cycle", warmup_steps=3), 1)


def tiny_classification(rows: int = 64, seed: int = 0) -> TensorSet:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 5)).astype(np.float32)
    return TensorSet({"features": features}, (features[:, 0] > 0).astype(np.int64))


def fitted_weights(config: TrainConfig, data: TensorSet) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    Trainer(model, Classification(), config, device=torch.device("cpu")).fit(
        data, torch.Generator().manual_seed(0)
    )
    return model.state_dict()


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    data = tiny_classification(rows=48)  # the epoch's last group holds a single micro-batch
    base = {"epochs": 3, "optimizer": OptimizerConfig(name="sgd", lr=0.1)}
    whole = fitted_weights(TrainConfig(batch_size=32, **base), data)
    halves = fitted_weights(TrainConfig(batch_size=16, accumulate_steps=2, **base), data)
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], atol=1e-6, rtol=1e-5)


def test_gradient_clipping_bounds_each_step() -> None:
    data = tiny_classification(rows=8)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
    config = TrainConfig(
        epochs=1, batch_size=8, grad_clip_norm=1e-3, optimizer=OptimizerConfig(name="sgd", lr=1.0)
    )
    Trainer(model, Classification(), config, device=torch.device("cpu")).fit(
        data, torch.Generator().manual_seed(0)
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.slow  # measured: 16 CPU-s on its own (training of up to 60 epochs inside the test)
def test_early_stopping_stops_and_keeps_the_best_epoch(registry: Registry) -> None:
    config = load_config(
        CANCER,
        ["train.epochs=60", "train.early_stopping.metric=valid_log_loss", "train.early_stopping.patience=3"],
    )
    result = train(config, registry)
    history = registry.open(result.ref).read_json("history.json")
    assert result.stopped_early
    assert len(history["epochs"]) == result.best_epoch + 3
    losses = [epoch["valid_log_loss"] for epoch in history["epochs"]]
    assert min(losses) == losses[result.best_epoch - 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.early_stopping.metric=accuracy"], "is not an epoch metric"),
        (["train.precision=fp16"], "fp16 needs a CUDA device"),
        (["train.optimizer.name=sgd", "train.optimizer.nesterov=true"], "nesterov needs momentum"),
    ],
)
def test_training_options_are_checked_before_work(
    registry: Registry, overrides: list[str], message: str
) -> None:
    with pytest.raises((ConfigError, ValidationError), match=message):
        train(load_config(CANCER, overrides), registry)
    assert registry.runs.recent() == []


def test_bf16_autocast_and_nesterov_train_on_cpu(registry: Registry) -> None:
    overrides = [
        "train.epochs=2",
        "train.precision=bf16",
        "train.optimizer.name=sgd",
        "train.optimizer.lr=0.05",
        "train.optimizer.momentum=0.9",
        "train.optimizer.nesterov=true",
        "train.schedule.name=cosine",
    ]
    result = train(load_config(CANCER, overrides), registry)
    assert result.metrics["test"]["accuracy"] > 0.8
    assert all(torch.isfinite(t).all() for t in registry.open(result.ref).state_dict().values())


def test_per_step_metrics_are_logged(registry: Registry) -> None:
    result = train(load_config(CANCER, ["train.epochs=2", "train.log_every_steps=4"]), registry)
    steps = registry.runs.history(result.run_id, "train_loss_step")
    assert [step for step, _ in steps] == list(range(4, 26, 4))  # 399 rows / 32 → 13 steps per epoch
    assert len(registry.runs.history(result.run_id, "lr")) == len(steps) + 2  # and one per epoch


PAUSED_TRAINER = """
import sys
from modelcycle.config import load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.train import loop

original = loop.Trainer._train_batch
def train_batch(self, train_set, targets, rows, progress, **options):
    original(self, train_set, targets, rows, progress, **options)
    boundary = options["boundary"]
    if progress.global_step == int(sys.argv[3]) and boundary:
        print("paused", flush=True)
        sys.stdin.readline()  # killed here, or told to go on
loop.Trainer._train_batch = train_batch
print(train(load_config(sys.argv[1], sys.argv[4:]), Registry(sys.argv[2])).run_id, flush=True)
"""


def start_paused(tmp_path: Path, home: Path, step: int, overrides: list[str]) -> subprocess.Popen[str]:
    """A training of CANCER into ``home`` that pauses once ``step`` optimizer steps are done, until it reads
    a line; it prints "paused", then (told to go on) its run id."""
    script = tmp_path / "paused.py"
    script.write_text(textwrap.dedent(PAUSED_TRAINER))
    return subprocess.Popen(
        [sys.executable, str(script), str(CANCER), str(home), str(step), *overrides],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def run_folders(home: Path, name: str) -> list[Path]:
    """The checkpoint folders of the runs of config ``name`` (one per run, named by its run id)."""
    return sorted((home / "checkpoints" / name).glob("[!.]*"))


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_equal(tmp_path: Path) -> None:
    overrides = [
        "train.epochs=4",
        "train.checkpoint_every_steps=5",
        "model.params.dropout=0.3",
        "train.schedule.name=cosine",
        "train.schedule.warmup_steps=3",
    ]
    config = load_config(CANCER, overrides)
    straight = Registry(tmp_path / "straight")
    expected = train(config, straight)

    home = tmp_path / "killed"
    # step 22 is mid-epoch 2 (13 steps per epoch); the newest checkpoint is then step 20
    child = start_paused(tmp_path, home, 22, overrides)
    try:
        assert child.stdout.readline().strip() == "paused"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    (checkpoint_dir,) = run_folders(home, config.name)
    latest = json.loads((checkpoint_dir / "latest.json").read_text())
    assert latest["checkpoint"] == "step-000000020-epoch-0001"
    assert latest["run_id"] == checkpoint_dir.name
    assert {path.suffix for path in (checkpoint_dir / latest["checkpoint"]).iterdir()} == {
        ".json",
        ".safetensors",
    }

    resumed_registry = Registry(home)
    resumed = train(config, resumed_registry, resume=True)
    expected_weights = straight.open(expected.ref).state_dict()
    resumed_weights = resumed_registry.open(resumed.ref).state_dict()
    assert expected_weights.keys() == resumed_weights.keys()
    for key, tensor in expected_weights.items():
        assert torch.equal(tensor, resumed_weights[key]), key
    assert resumed.metrics == expected.metrics
    (run,) = resumed_registry.runs.recent()
    assert (run.id, run.status) == (resumed.run_id, "finished")
    assert len(resumed_registry.runs.history(run.id, "train_loss")) == 4, "no epoch logged twice"
    assert not checkpoint_dir.exists(), "checkpoints are discarded once the version is registered"


@pytest.mark.slow  # measured: about 10 s on 2 cores (two processes that each import torch)
def test_a_killed_run_resumes_while_another_run_of_its_config_is_live(tmp_path: Path) -> None:
    overrides = ["train.epochs=2", "train.checkpoint_every_steps=5", "model.params.dropout=0.3"]
    config = load_config(CANCER, overrides)
    home = tmp_path / "home"
    live, killed = (start_paused(tmp_path, home, 17, overrides) for _ in range(2))
    try:
        assert [child.stdout.readline().strip() for child in (live, killed)] == ["paused", "paused"]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
        registry = Registry(home)
        before = {folder.name for folder in run_folders(home, config.name)}  # the live and the killed run
        resumed = train(config, registry, resume=True)  # takes the killed run's folder, not the live one's
        (left,) = run_folders(home, config.name)  # the live run's, untouched; the resumed run's is gone
        assert resumed.run_id in before
        assert left.name != resumed.run_id
        live.stdin.write("go on\n")
        live.stdin.flush()
        live_output, _ = live.communicate(timeout=60)
    finally:
        for child in (live, killed):
            child.kill()
    assert live.returncode == 0
    assert live_output.strip() == left.name
    assert {run.id: run.status for run in registry.runs.recent()} == {
        resumed.run_id: "finished",
        live_output.strip(): "finished",
    }
    assert len(registry.runs.history(resumed.run_id, "train_loss")) == 2, "no epoch logged twice"
    versions = [registry.open(version.ref).state_dict() for version in registry.list_versions(config.name)]
    assert len(versions) == 2
    for key, tensor in versions[0].items():
        assert torch.equal(tensor, versions[1][key]), f"{key}: the resumed run ends as the uninterrupted one"
    assert run_folders(home, config.name) == []


PARKED_CLI = """
import sys
from modelcycle.cli.main import main

print("ready", flush=True)
sys.stdin.readline()  # every process is started and imported: now they all train at once
sys.argv = ["modelcycle", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # measured: about 13 s on 2 cores (four processes that each import torch)
def test_trainings_of_one_config_at_once_each_register_a_version(tmp_path: Path) -> None:
    script = tmp_path / "parked.py"
    script.write_text(PARKED_CLI)
    home = tmp_path / "home"
    environment = {**os.environ, "MODELCYCLE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    overrides = ["--set", "train.epochs=2", "--set", "train.checkpoint_every_steps=1"]
    command = [sys.executable, str(script), "train", str(CANCER), *overrides, "--json"]
    options = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    children = [subprocess.Popen(command, env=environment, cwd=ROOT, **options) for _ in range(4)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            child.kill()
    failures = [
        f"exit {child.returncode}: {err[-600:]}"
        for child, (_, err) in zip(children, outcomes, strict=True)
        if child.returncode
    ]
    assert not failures, failures
    refs = {json.loads(out)["ref"] for out, _ in outcomes}
    assert refs == {f"breast-cancer-mlp@{version}" for version in range(1, 5)}
    assert run_folders(home, "breast-cancer-mlp") == [], "each run removed its own checkpoints"


def test_a_fresh_run_discards_interrupted_runs_checkpoints_and_keeps_live_ones(registry: Registry) -> None:
    config = load_config(CANCER, ["train.epochs=2"])
    root = checkpoint_root(registry, config)
    stale = root / "interrupted-run" / "step-000000013-epoch-0001"
    stale.mkdir(parents=True)
    with checkpoints.begin(root, "live-run") as live:
        result = train(config, registry)
        assert result is not None
        assert not stale.parent.exists()
        assert live.directory.is_dir(), "a live run's folder is not touched"
    assert run_folders(registry.home, config.name) == [live.directory]


def write_pointer(root: Path, run: str, *, config_hash: str, checkpoint: str = "x") -> Path:
    """A run folder under ``root`` whose ``latest.json`` names ``checkpoint``, as a killed run leaves."""
    (root / run).mkdir(parents=True)
    pointer = root / run / "latest.json"
    pointer.write_text(json.dumps({"checkpoint": checkpoint, "config_hash": config_hash, "run_id": run}))
    return pointer


def test_resume_needs_an_interrupted_run_of_the_same_config(registry: Registry) -> None:
    config = load_config(CANCER, ["train.epochs=2"])
    root = checkpoint_root(registry, config)
    with pytest.raises(ConfigError, match="no checkpoint of this config"):
        train(config, registry, resume=True)
    write_pointer(root, "live", config_hash=config.config_hash())
    with checkpoints.RunFolder(root / "live") as live:
        assert live.take()
        with pytest.raises(ConfigError, match="no checkpoint of this config"):
            train(config, registry, resume=True)  # a live run is not taken from its process
        write_pointer(root, "other-config", config_hash="0" * 64)
        with pytest.raises(ConfigError, match="written by a different config"):
            train(config, registry, resume=True)


def test_resume_takes_the_newest_interrupted_run_of_its_config(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for age, run in enumerate(["newest", "older", "oldest"]):
        pointer = write_pointer(root, run, config_hash="h")
        os.utime(pointer, ns=(10**18 - age * 10**9,) * 2)
    write_pointer(root, "other-config", config_hash="g")
    with (
        checkpoints.claim_interrupted(root, "h") as first,
        checkpoints.claim_interrupted(root, "h") as second,
    ):
        assert (first.directory.name, second.directory.name) == ("newest", "older")


def test_a_stuck_guard_is_a_clear_error(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(CANCER, ["train.epochs=1"])
    root = checkpoint_root(registry, config)
    monkeypatch.setattr(checkpoints, "GUARD_TIMEOUT", 0.1)
    with FileLock(root / checkpoints.GUARD), pytest.raises(TrainingError, match=r"\.lock stayed locked"):
        train(config, registry)


def run_two_processes(
    arguments: list[str], home: Path, prepare: Callable[[Path], None] = lambda registry_home: None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``modelcycle ARGS --nproc 2``, after ``prepare`` has set up the registry folder. Under a fully loaded
    2-core machine gloo was seen to abort a rank (SIGABRT, no message) about once in three suite runs; such a
    launcher-level crash is retried once with a fresh registry, while any modelcycle error fails at once."""
    for attempt in range(2):
        folder = home / f"attempt-{attempt}"
        prepare(folder)
        env = {**os.environ, "MODELCYCLE_HOME": str(folder)}
        result = subprocess.run(
            [sys.executable, "-m", "modelcycle", *arguments, "--nproc", "2"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        if "SIGABRT" not in result.stderr:
            break
    return result, folder


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_run_resumes_data_parallel(tmp_path: Path) -> None:
    overrides = ["train.epochs=3", "train.checkpoint_every_steps=5"]

    def kill_a_run(home: Path) -> None:
        child = start_paused(tmp_path, home, 17, overrides)
        try:
            assert child.stdout.readline().strip() == "paused"
        finally:
            child.kill()
            child.wait(timeout=60)

    arguments = ["train", str(CANCER), *(f"--set={item}" for item in overrides), "--resume", "--json"]
    result, home = run_two_processes(arguments, tmp_path, prepare=kill_a_run)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = Registry(home).runs.recent()
    assert (run.id, run.status) == (json.loads(result.stdout)["run_id"], "finished")
    assert run_folders(home, "breast-cancer-mlp") == []


@pytest.mark.slow
@pytest.mark.integration
def test_two_process_data_parallel_training_reaches_the_bar(tmp_path: Path) -> None:
    result, home = run_two_processes(["train", str(EXAMPLES / "digits-cnn.yaml"), "--json"], tmp_path)
    reasons = [line for line in result.stderr.splitlines() if "rror" in line or "terminate" in line]
    assert result.returncode == 0, "\n".join(reasons[:20]) or result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["ref"] == "digits-cnn@1"
    assert payload["metrics"]["test"]["accuracy"] >= 0.97
    assert len(Registry(home).list_versions("digits-cnn")) == 1, "only rank 0 registers"


def test_a_damaged_checkpoint_is_a_clear_error(registry: Registry) -> None:
    config = load_config(CANCER, ["train.epochs=2"])
    pointer = write_pointer(checkpoint_root(registry, config), "r", config_hash=config.config_hash())
    with pytest.raises(TrainingError, match="is damaged"):
        train(config, registry, resume=True)
    pointer.write_text("{not json")
    with pytest.raises(TrainingError, match="is unreadable"):
        train(config, registry, resume=True)


@pytest.mark.slow
@pytest.mark.integration
def test_a_diverging_data_parallel_run_fails_on_every_rank_without_hanging(tmp_path: Path) -> None:
    arguments = ["train", str(CANCER), "--set", "train.optimizer.lr=1e30", "--set", "train.epochs=2"]
    result, home = run_two_processes(arguments, tmp_path)
    assert result.returncode != 0
    (run,) = Registry(home).runs.recent()
    assert run.status == "failed"
    assert "the loss became" in (run.error or "")
