"""Contract checks of a task plugin: it has every member of the ``Task`` protocol, its output spec is what its
head is sized to, and — given an example target column — its target encodes, its loss is finite with finite
gradients, its metrics are finite and hold its primary and live metrics, ``measure`` agrees with
``metrics``, it ranks checkpoints by a tuple of numbers, the same outputs give the same figures, and a row
alone gets the answer, stored prediction and probabilities it gets within a batch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from modelcycle.tasks import TASKS, Task
from modelcycle.tasks.base import TargetCoding

ORIGIN = "the example target"


def protocol_members() -> list[str]:
    """The attributes and methods ``Task`` declares."""
    methods = [name for name, value in vars(Task).items() if callable(value) and not name.startswith("_")]
    return sorted({*Task.__annotations__, *methods})


def check_task(name: str, column: pd.Series | None = None, *, rows_seed: int = 0) -> None:
    """Every check of the registered task ``name``, on ``column`` (a target column as loaded, at least two
    rows of each label) or else the task's own ``example_target``. A task with row outputs must give one;
    without a column only the protocol and the output spec are checked."""
    task = TASKS.get(name)()
    check_task_protocol(task)
    check_task_output_spec(task)
    column = task.example_target() if column is None else column
    if task.row_outputs:
        assert column is not None, f"task '{name}' gives row outputs but no example_target to check them on"
    if column is not None:
        check_task_training(task, column, seed=rows_seed)
        check_task_rows(task, column, seed=rows_seed)


def check_task_protocol(task: Task) -> None:
    missing = [member for member in protocol_members() if not hasattr(task, member)]
    assert not missing, f"{task.name}: lacks {', '.join(missing)} of the Task protocol"
    assert task.name in TASKS, f"{task.name}: not registered under its own name"


def check_task_output_spec(task: Task, num_classes: int = 3) -> None:
    """The first output tensor is float32 and as wide as the head ``output_dim`` sizes."""
    spec = task.output_tensors(num_classes)[0]
    assert spec.dtype == "float32", f"{task.name}: outputs are {spec.dtype}"
    assert spec.shape[0] == -1, f"{task.name}: the batch axis of {spec.shape} is not variable"
    width = task.output_dim(num_classes)
    assert spec.shape[-1] == width, f"{task.name}: spec {spec.shape} for a head of {width}"


def check_task_training(task: Task, column: pd.Series, *, seed: int = 0) -> None:
    """Targets encode one per row; loss and gradients are finite; metrics are finite, hold the primary and
    live metrics, equal ``measure``'s, and are the same twice; the selection key is a tuple of numbers."""
    coding, targets, metric_targets = _targets(task, column)
    outputs = _outputs(task, coding, len(column), seed)
    assert len(targets) == len(metric_targets) == len(column), f"{task.name}: targets are not one per row"
    logits = torch.from_numpy(outputs).requires_grad_(True)
    loss = task.loss(logits, torch.from_numpy(targets))
    assert loss.ndim == 0, f"{task.name}: a loss of shape {tuple(loss.shape)}, not a scalar"
    assert math.isfinite(float(loss.detach())), f"{task.name}: loss {float(loss.detach())}"
    loss.backward()
    assert logits.grad is not None, f"{task.name}: the loss does not depend on the outputs"
    assert torch.isfinite(logits.grad).all(), f"{task.name}: gradients not finite"
    decoded = task.decode_outputs(outputs, coding)
    metrics = task.metrics(metric_targets, decoded)
    assert all(math.isfinite(value) for value in metrics.values()), f"{task.name}: metrics {metrics}"
    expected = {task.primary_metric, *task.live_metrics} - set(metrics)
    assert not expected, f"{task.name}: metrics lack {sorted(expected)}"
    assert task.metrics(metric_targets, decoded) == metrics, f"{task.name}: the same outputs scored otherwise"
    measured = task.measure(
        _Fixed(outputs),
        {"row": np.arange(len(column))},
        metric_targets,
        lambda raw: task.decode_outputs(raw, coding),
    )
    assert measured.keys() == metrics.keys(), f"{task.name}: measure gives {sorted(measured)}"
    for key, value in metrics.items():
        assert math.isclose(measured[key], value, rel_tol=1e-6, abs_tol=1e-9), f"{task.name}: measure's {key}"
    ranking = task.selection_key(metrics)
    assert isinstance(ranking, tuple), f"{task.name}: selection key {ranking!r} is not a tuple"
    assert all(isinstance(part, float) for part in ranking), f"{task.name}: selection key {ranking}"


def check_task_rows(task: Task, column: pd.Series, *, seed: int = 0) -> None:
    """A row alone gets the answer, stored prediction and probabilities it gets within a batch."""
    coding, _, _ = _targets(task, column)
    outputs = _outputs(task, coding, len(column), seed)
    answers, stored = task.answer(outputs, coding), task.stored(outputs, coding)
    probabilities = task.probabilities(outputs)
    assert len(answers) == len(stored) == len(outputs), f"{task.name}: not one answer per row"
    for row in range(len(outputs)):
        alone = outputs[row : row + 1]
        assert task.answer(alone, coding) == answers[row : row + 1], f"{task.name}: row {row}'s answer"
        assert task.stored(alone, coding) == stored[row : row + 1], f"{task.name}: row {row} stored"
        if probabilities is not None:
            single = task.probabilities(alone)
            assert single is not None
            np.testing.assert_allclose(single[0], probabilities[row], rtol=1e-12, err_msg=task.name)


def _targets(task: Task, column: pd.Series) -> tuple[TargetCoding, np.ndarray, np.ndarray]:
    prepared = task.prepare_target(column, "target", ORIGIN)
    task.check_target(prepared, "target", ORIGIN)
    occurrences = task.label_occurrences(prepared)
    labels = None if occurrences is None else sorted({str(label) for label in occurrences})
    coding = task.fit_target(prepared, labels)
    return (
        coding,
        task.encode_target(prepared, coding, ORIGIN),
        task.metric_targets(prepared, coding, ORIGIN),
    )


def _outputs(task: Task, coding: TargetCoding, rows: int, seed: int) -> np.ndarray:
    """Seeded float32 outputs of the task's output shape for ``rows`` rows."""
    width = task.output_dim(task.num_outputs(coding, None))
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


class _Fixed(nn.Module):
    """A 'model' whose output for row index i is the i-th of ``outputs``, so ``measure`` sees them."""

    def __init__(self, outputs: np.ndarray) -> None:
        super().__init__()
        self.outputs = torch.from_numpy(outputs)

    def forward(self, row: torch.Tensor) -> torch.Tensor:
        return self.outputs[row]
