"""Trainer overhead: samples/s of modelcycle's Trainer vs a minimal hand-written PyTorch loop, on the same
model (digits-cnn), data, optimizer, batch size and seed, in the same run. Goal: overhead <= 5 %.

Run: .venv/bin/python benchmarks/bench_train.py  → benchmarks/results/train.md
"""

from __future__ import annotations

import statistics
import sys
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
from modelcycle.tasks.classification import Classification  # noqa: E402
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


if __name__ == "__main__":
    main()
