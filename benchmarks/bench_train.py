"""Training benchmarks, each measured side by side in one run.

- Trainer overhead: samples/s of modelcycle's Trainer vs a minimal hand-written PyTorch loop, on the same
  model (digits-cnn), data, optimizer, batch size and seed. Goal: overhead <= 5 %.
  Run: .venv/bin/python benchmarks/bench_train.py  → benchmarks/results/train.md
- Strategies: a full fine-tune of SmolLM2-135M-Instruct on Hamlet in one process, data-parallel on two
  (DDP) and sharded on two (FSDP, with and without activation checkpointing), the same global batch:
  samples/s, training state and peak resident memory per rank.
  Run: .venv/bin/python benchmarks/bench_train.py strategies  → benchmarks/results/train-strategies.md
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from modelcycle.config import load_config  # noqa: E402
from modelcycle.data import load_dataset  # noqa: E402
from modelcycle.pipeline import prepare_data  # noqa: E402
from modelcycle.pipeline.resolve import validate  # noqa: E402
from modelcycle.registry import Registry  # noqa: E402
from modelcycle.tasks.classification import Classification  # noqa: E402
from modelcycle.testing.pretrained import causal_lm_folder  # noqa: E402
from modelcycle.train import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, REPEATS = 5, 5


def model_and_data() -> tuple[torch.nn.Module, dict[str, np.ndarray], np.ndarray, object]:
    config = load_config(ROOT / "examples" / "digits-cnn.yaml", [f"train.epochs={EPOCHS}"])
    resolved = validate(config)
    dataset = load_dataset(config.data, seed=config.seed)
    data = prepare_data(config, dataset, "classification")
    torch.manual_seed(0)
    model = resolved.architecture.build(data.preprocessor.input_schema(), 10, resolved.params)
    train_set = data.tensors["train"]
    return model, train_set.inputs, train_set.targets, config


def hand_written(
    model: torch.nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, config: object
) -> float:
    """What a user writes by hand: shuffle, slice, forward, loss, backward, step."""
    images, labels = torch.from_numpy(inputs["image"]), torch.from_numpy(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.optimizer.lr)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), config.train.batch_size):
            rows = order[start : start + config.train.batch_size]
            loss = torch.nn.functional.cross_entropy(model(images[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return EPOCHS * len(labels) / (time.perf_counter() - started)


def ours(model: torch.nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, config: object) -> float:
    from modelcycle.train import TensorSet

    trainer = Trainer(model, Classification(), config.train, device=torch.device("cpu"))
    started = time.perf_counter()
    trainer.fit(TensorSet(inputs, targets), torch.Generator().manual_seed(0))
    return EPOCHS * len(targets) / (time.perf_counter() - started)


def main() -> None:
    model, inputs, targets, config = model_and_data()
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    speeds: dict[str, list[float]] = {"hand-written loop": [], "modelcycle Trainer": []}
    for _ in range(REPEATS):  # interleaved, so both see the same machine noise
        for name, run in (("hand-written loop", hand_written), ("modelcycle Trainer", ours)):
            model.load_state_dict(initial)
            speeds[name].append(run(model, inputs, targets, config))
    baseline = statistics.median(speeds["hand-written loop"])
    measured = statistics.median(speeds["modelcycle Trainer"])
    overhead = 1 - measured / baseline
    lines = [
        "# Trainer overhead vs a hand-written loop",
        "",
        f"Machine: {describe_machine()}",
        "",
        f"digits-cnn, {len(targets)} training images, batch {config.train.batch_size}, AdamW, {EPOCHS} epochs,"
        f" fp32 on CPU; median of {REPEATS} interleaved repetitions (no validation, no checkpoints).",
        "",
        "| loop | samples/s (median) | all repetitions |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} |"
            for name, values in speeds.items()
        ),
        "",
        f"Trainer / hand-written = {measured / baseline:.3f} → overhead {overhead:.1%} (goal ≤ 5 %).",
        "",
    ]
    output = ROOT / "benchmarks" / "results" / "train.md"
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


GLOBAL_BATCH = 8
Variants = dict[str, tuple[int, list[str]]]  # name: (processes, overrides)
COMPARISONS: dict[str, tuple[int, int, Variants]] = {  # title: (Hamlet lines, tokens per block, variants)
    "Strategies": (
        400,
        64,
        {
            "one process": (1, []),
            "DDP, 2 processes": (2, ["train.strategy=ddp"]),
            "FSDP, 2 processes": (2, ["train.strategy=fsdp"]),
            "FSDP + activation checkpointing, 2 processes": (
                2,
                ["train.strategy=fsdp", "train.activation_checkpointing=true"],
            ),
        },
    ),
    "Activation checkpointing, longer sequences": (
        1000,
        256,
        {
            "one process": (1, []),
            "one process + activation checkpointing": (1, ["train.activation_checkpointing=true"]),
        },
    ),
}


def train_once(folder: Path, lines: int, tokens: int, processes: int, extra: list[str]) -> dict[str, float]:
    """One training in a fresh registry; what its epoch recorded, plus the command's wall time."""
    sets = [
        f"data.max_rows={lines}",
        f"data.preprocess.text.max_length={tokens}",
        f"data.preprocess.text.tokenizer={folder}",
        f"model.params.checkpoint={folder}",
        "model.params.lora=null",
        "train.epochs=1",
        f"train.batch_size={GLOBAL_BATCH // processes}",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as home:
        command = [sys.executable, "-m", "modelcycle", "train", str(ROOT / "examples" / "smollm2-lora.yaml")]
        command += [f"--set={item}" for item in sets] + ["--json", "--nproc", str(processes)]
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "MODELCYCLE_HOME": home}, check=False
        )
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        (epoch,) = (
            Registry(Path(home)).open(json.loads(done.stdout)["ref"]).read_json("history.json")["epochs"]
        )
    # the epoch's samples/s is one rank's; every rank trains as many rows
    return {**epoch, "samples_per_second": epoch["samples_per_second"] * processes, "wall": wall}


def comparison_table(runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """Medians per variant, each against the first variant."""
    first = next(iter(runs.values()))
    baseline = statistics.median(run["samples_per_second"] for run in first)
    whole = statistics.median(run["state_bytes_per_rank"] for run in first)
    base_rss = statistics.median(run["peak_rss_bytes_per_rank"] for run in first)
    rows = [
        "| variant | samples/s | vs first | training state per rank | peak RSS per rank | wall |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, measured in runs.items():
        speed = statistics.median(run["samples_per_second"] for run in measured)
        state = statistics.median(run["state_bytes_per_rank"] for run in measured)
        rss = statistics.median(run["peak_rss_bytes_per_rank"] for run in measured)
        rows.append(
            f"| {name} | {speed:.2f} | {speed / baseline:.2f}× | {state / 2**20:.0f} MiB "
            f"({state / whole:.2f}×) | {rss / 2**20:.0f} MiB ({rss / base_rss:.2f}×) "
            f"| {statistics.median(run['wall'] for run in measured):.0f} s |"
        )
    return rows


def strategies(repeats: int = 2) -> None:
    lines = [
        "# Training strategies: one process, DDP, FSDP; activation checkpointing",
        "",
        f"Machine: {describe_machine()}",
        "",
        "SmolLM2-135M-Instruct (134.5M parameters), full fine-tune (no LoRA), fp32, AdamW, 1 epoch of "
        f"Hamlet blocks, global batch {GLOBAL_BATCH} in every variant; gloo on CPU; median of {repeats} "
        "interleaved repetitions. Samples/s counts every rank's rows; training state = parameters + "
        "gradients + AdamW moments that one rank holds; peak RSS is the process's (mean over ranks); it "
        "counts from the start of training (Linux VmHWM, reset then), so loading the model whole before "
        "sharding it is not in it; it includes the Python / torch runtime and the data.",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        folder = causal_lm_folder("builtin:smollm2", Path(scratch))
        for title, (rows, tokens, variants) in COMPARISONS.items():
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for _ in range(repeats):  # interleaved, so every variant sees the same machine noise
                for name, (processes, extra) in variants.items():
                    runs[name].append(train_once(folder, rows, tokens, processes, extra))
            lines += ["", f"## {title} ({tokens} tokens per block)", "", *comparison_table(runs)]
    lines.append("")
    output = ROOT / "benchmarks" / "results" / "train-strategies.md"
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    strategies() if sys.argv[1:] == ["strategies"] else main()
