"""Sharded training (``train.strategy: fsdp``) of a real pretrained language model, SmolLM2-135M-Instruct
in full, on two CPU processes (gloo): the same losses as one process, half the training state per rank,
and a rank killed mid-run resumed to the very weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modelcycle.config import load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.testing.pretrained import causal_lm_folder
from tests.test_trainer import ROOT

CONFIG = ROOT / "examples" / "smollm2-lora.yaml"
PER_RANK_BATCH = 2
# 96 lines of Hamlet: 24 blocks of 24 tokens to train on, 6 steps of 4 blocks (one process) or 2 x 2
SHARED = [
    "data.max_rows=96",
    "data.preprocess.text.max_length=24",
    "model.params.lora=null",
    "data.preprocess.text.tokenizer={folder}",
    "train.optimizer.lr=0.00005",
    "train.log_every_steps=1",
    "train.checkpoint_every_steps=3",
]
KILLED_AFTER_STEP = 4  # mid-epoch; the newest checkpoint is then step 3's

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return causal_lm_folder("builtin:smollm2", tmp_path_factory.mktemp("smollm2"))


def sharded_overrides(folder: Path) -> list[str]:
    """Two ranks of half the batch, sharded, recomputing activations (which must change no number)."""
    return overrides(
        folder,
        f"train.batch_size={PER_RANK_BATCH}",
        "train.strategy=fsdp",
        "train.activation_checkpointing=true",
    )


def overrides(folder: Path, *extra: str) -> list[str]:
    shared = [item.format(folder=folder) for item in SHARED]
    return [*shared, f"model.params.checkpoint={folder}", *extra]


def torchrun(script: list[str], home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 SCRIPT`` with the registry in ``home``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *script]
    environment = {**os.environ, "MODELCYCLE_HOME": str(home)}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=timeout)


def train_sharded(home: Path, arguments: list[str], *flags: str) -> subprocess.CompletedProcess[str]:
    sets = [f"--set={item}" for item in arguments]
    return torchrun(["-m", "modelcycle", "train", str(CONFIG), *sets, *flags, "--json"], home)


KILLING_TRAINER = """
import os, signal, sys
import torch.distributed as dist
from modelcycle.config import load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.testing.pretrained import causal_lm_folder
from modelcycle.train import loop

original = loop.Trainer._train_batch
def train_batch(self, train_set, targets, rows, progress, **options):
    original(self, train_set, targets, rows, progress, **options)
    if progress.global_step == int(sys.argv[3]) and options["boundary"] and dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
loop.Trainer._train_batch = train_batch
train(load_config(sys.argv[1], sys.argv[4:]), Registry(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def sharded_run(smollm2_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted sharded run on two ranks: its registry folder and its JSON output."""
    home = tmp_path_factory.mktemp("sharded")
    result = train_sharded(home, sharded_overrides(smollm2_folder))
    assert result.returncode == 0, result.stderr[-3000:]
    return home, json.loads(result.stdout)


def test_sharded_training_matches_one_process_with_half_the_state_per_rank(
    smollm2_folder: Path, sharded_run: tuple[Path, dict], tmp_path: Path
) -> None:
    home, output = sharded_run
    sharded = Registry(home)
    single = Registry(tmp_path / "single")
    one = train(
        load_config(CONFIG, overrides(smollm2_folder, f"train.batch_size={2 * PER_RANK_BATCH}")), single
    )
    assert one is not None
    steps = sharded.runs.history(output["run_id"], "train_loss_step")
    expected = single.runs.history(one.run_id, "train_loss_step")
    assert [step for step, _ in steps] == [1, 2, 3, 4, 5, 6] == [step for step, _ in expected]
    assert [loss for _, loss in steps] == pytest.approx([loss for _, loss in expected], abs=1e-4)
    # what one rank holds of parameters + gradients + AdamW moments: half, but for the padding of shards
    (per_rank,) = [value for _, value in sharded.runs.history(output["run_id"], "state_bytes_per_rank")]
    (whole,) = [value for _, value in single.runs.history(one.run_id, "state_bytes_per_rank")]
    assert whole == pytest.approx(4 * 4 * 134_515_008, rel=0.01)  # fp32: weights, gradients, two moments
    assert per_rank / whole == pytest.approx(0.5, abs=0.01)
    # the bundle is a plain, whole state dict: the same weights the single process has after the same steps
    weights = sharded.open(output["ref"]).state_dict()
    reference = single.open(one.ref).state_dict()
    assert weights.keys() == reference.keys()
    assert max(float((weights[k] - reference[k]).abs().max()) for k in weights) < 1e-3


def test_a_killed_rank_resumes_to_the_weights_of_an_uninterrupted_run(
    smollm2_folder: Path, sharded_run: tuple[Path, dict], tmp_path: Path
) -> None:
    arguments = sharded_overrides(smollm2_folder)
    script = tmp_path / "killing.py"
    script.write_text(textwrap.dedent(KILLING_TRAINER))
    home = tmp_path / "killed"
    killed = torchrun([str(script), str(CONFIG), str(home), str(KILLED_AFTER_STEP), *arguments], home)
    assert killed.returncode != 0
    assert f"exitcode  : -{signal.SIGKILL.value}" in killed.stderr
    (folder,) = (home / "checkpoints" / "smollm2-lora").glob("[!.]*")
    assert json.loads((folder / "latest.json").read_text())["checkpoint"].startswith("step-000000003")
    resumed = train_sharded(home, arguments, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = json.loads(resumed.stdout)
    straight_home, straight = sharded_run
    weights = Registry(home).open(output["ref"]).state_dict()
    expected = Registry(straight_home).open(straight["ref"]).state_dict()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert output["metrics"] == straight["metrics"]


def test_a_sharded_run_killed_after_its_best_epoch_resumes_only_on_as_many_ranks(tmp_path: Path) -> None:
    """Sharded checkpoints carry the best epoch's weights too (a small GPT with dropout, two epochs, killed
    in the second); one process cannot take over a sharded checkpoint."""
    config = ROOT / "examples" / "tiny-gpt.yaml"
    arguments = [
        *("data.max_rows=300", "model.params.num_layers=2", "model.params.dropout=0.1"),
        *("train.epochs=2", "train.batch_size=8", "train.checkpoint_every_steps=2", "train.strategy=fsdp"),
    ]
    sets = [f"--set={item}" for item in arguments]
    straight_home = tmp_path / "straight"
    straight = torchrun(["-m", "modelcycle", "train", str(config), *sets, "--json"], straight_home)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads(straight.stdout)
    registry = Registry(straight_home)
    steps_per_epoch = int(registry.runs.history(expected["run_id"], "epoch")[0][0])
    script = tmp_path / "killing.py"
    script.write_text(textwrap.dedent(KILLING_TRAINER))
    home = tmp_path / "killed"
    killed = torchrun([str(script), str(config), str(home), str(steps_per_epoch + 3), *arguments], home)
    assert killed.returncode != 0
    alone = subprocess.run(
        [sys.executable, "-m", "modelcycle", "train", str(config), *sets, "--resume"],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELCYCLE_HOME": str(home)},
        cwd=ROOT,
        timeout=300,
    )
    assert alone.returncode != 0
    assert "the checkpoint was written sharded (train.strategy: fsdp, several processes)" in alone.stderr
    resumed = torchrun(["-m", "modelcycle", "train", str(config), *sets, "--resume", "--json"], home)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = Registry(home).open(json.loads(resumed.stdout)["ref"]).state_dict()
    reference = registry.open(expected["ref"]).state_dict()
    assert all(torch.equal(weights[name], reference[name]) for name in reference)
