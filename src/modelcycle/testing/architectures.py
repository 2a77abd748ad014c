"""Contract checks of an architecture plugin, for every kind of data and task it declares: the output matches
the task's output spec, the same seed builds the same weights, the weights survive a safetensors round trip,
one row alone gives the same output as within a batch, and the network exports to ONNX unless it declares it
cannot. A plugin author calls ``check_architecture`` from their own tests; modelcycle's tests run every
registered entry through it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelcycle.bundle.io import load_weights, save_weights
from modelcycle.export.onnx import convert
from modelcycle.models import ARCHITECTURES, ArchitectureEntry
from modelcycle.runtime import OnnxModel
from modelcycle.schema import DataKind, TensorSpec
from modelcycle.tasks import TASKS
from modelcycle.testing.examples import EXAMPLE_INPUTS, SEQUENCE, TINY_PARAMS, ExampleInput, example_batch

# A row alone and the same row in a batch may run different kernels (another blocking of the same GEMM on
# AVX2 than on AVX-512): equal to float32 rounding, not bit for bit.
ROW_RTOL, ROW_ATOL = 1e-4, 1e-5
ONNX_TOLERANCE = 1e-4  # what ``modelcycle export`` accepts


@dataclass(frozen=True)
class ArchitectureCase:
    """One way to use an architecture: a kind of data it takes, a task it does, and its parameters."""

    entry: ArchitectureEntry
    kind: DataKind
    task: str
    params: dict[str, Any]
    example: ExampleInput

    @property
    def exports_onnx(self) -> bool:
        return self.kind not in self.entry.onnx_unsupported

    @property
    def id(self) -> str:
        return f"{self.entry.name}-{self.kind}-{self.task}"

    def build(self, seed: int = 0) -> nn.Module:
        """The network in eval mode, its weights drawn from ``seed`` (the global torch generator is left as
        it was)."""
        task = TASKS.get(self.task)()
        params = self.entry.check_params(self.params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = self.entry.build(self.example.schema, task.output_dim(self.example.num_outputs), params)
        return network.eval()

    def batch(self, rows: int = 4, *, sequence: int = SEQUENCE, seed: int = 0) -> dict[str, np.ndarray]:
        return example_batch(self.example.schema, rows, sequence=sequence, seed=seed)


def architecture_cases(
    entries: Iterable[ArchitectureEntry] | None = None,
    *,
    params: dict[str, dict[str, Any]] | None = None,
    examples: dict[DataKind, ExampleInput] | None = None,
) -> list[ArchitectureCase]:
    """Every (architecture, kind of data, task) the entries declare, for the tasks that are registered;
    ``entries`` defaults to every registered architecture, ``params`` to small built-in parameters."""
    chosen = [ARCHITECTURES.get(name) for name in ARCHITECTURES] if entries is None else list(entries)
    params = TINY_PARAMS if params is None else params
    examples = EXAMPLE_INPUTS if examples is None else examples
    return [
        ArchitectureCase(entry, kind, task, params.get(entry.name, {}), examples[kind])
        for entry in chosen
        for kind in entry.input_kinds
        for task in entry.task_names()
        if task in TASKS
    ]


def check_architecture(case: ArchitectureCase) -> None:
    """Every contract check of one case; raises AssertionError naming the first that fails."""
    check_output_spec(case)
    check_seeded(case)
    check_safetensors_round_trip(case)
    check_row_equals_batch(case)
    if case.exports_onnx:
        check_onnx_export(case)


def check_output_spec(case: ArchitectureCase) -> None:
    """The output has the dtype and shape of the task's first output tensor (-1: the batch, or any size)."""
    batch = case.batch(rows=3)
    outputs = _outputs(case.build(), batch)
    spec = TASKS.get(case.task)().output_tensors(case.example.num_outputs)[0]
    _assert_fits(outputs, spec, rows=3, where=case.id)


def check_seeded(case: ArchitectureCase) -> None:
    """Built twice from one seed: the same weights, so the same outputs."""
    first, second = case.build(seed=7).state_dict(), case.build(seed=7).state_dict()
    assert first.keys() == second.keys(), f"{case.id}: two builds have different parameters"
    for key, tensor in first.items():
        assert torch.equal(tensor, second[key]), f"{case.id}: '{key}' differs between builds of one seed"


def check_safetensors_round_trip(case: ArchitectureCase) -> None:
    """Weights saved as safetensors and loaded into a network built from another seed give its outputs."""
    network, batch = case.build(seed=1), case.batch()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "weights.safetensors"
        save_weights(network.state_dict(), path)
        loaded = load_weights(path)
    for key, tensor in network.state_dict().items():
        assert torch.equal(loaded[key], tensor), f"{case.id}: '{key}' changed in the safetensors round trip"
    rebuilt = case.build(seed=2)
    rebuilt.load_state_dict(loaded)
    np.testing.assert_array_equal(
        _outputs(rebuilt, batch), _outputs(network, batch), err_msg=f"{case.id}: reloaded outputs differ"
    )


def check_row_equals_batch(case: ArchitectureCase) -> None:
    """Each row run alone gives its row of the batch's output (padding and all)."""
    network, batch = case.build(), case.batch(rows=4)
    together = _outputs(network, batch)
    for row in range(4):
        alone = _outputs(network, {name: array[row : row + 1] for name, array in batch.items()})
        np.testing.assert_allclose(
            alone[0],
            together[row],
            rtol=ROW_RTOL,
            atol=ROW_ATOL,
            err_msg=f"{case.id}: row {row} alone differs",
        )


def check_onnx_export(case: ArchitectureCase) -> None:
    """The network converts through ``modelcycle export``'s converter, and ONNX Runtime matches torch on a
    batch and a sequence length the export never saw."""
    network = case.build()
    names = [tensor.name for tensor in case.example.schema.tensors]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        convert(network, case.batch(), names, path, None)
        runtime = OnnxModel(path, names)
        unseen = case.batch(rows=5, sequence=SEQUENCE + 3, seed=1)
        np.testing.assert_allclose(
            _outputs(runtime, unseen),
            _outputs(network, unseen),
            rtol=0,
            atol=ONNX_TOLERANCE,
            err_msg=f"{case.id}: ONNX Runtime differs from torch",
        )


@torch.no_grad()
def _outputs(network: nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The network's raw outputs for the whole batch at once, in the dtype it returns."""
    return network(*(torch.from_numpy(array) for array in batch.values())).numpy()


def _assert_fits(outputs: np.ndarray, spec: TensorSpec, *, rows: int, where: str) -> None:
    assert outputs.dtype == np.dtype(spec.dtype), f"{where}: outputs are {outputs.dtype}, spec {spec.dtype}"
    assert outputs.ndim == len(spec.shape), f"{where}: outputs {outputs.shape} do not fit spec {spec.shape}"
    expected = [rows, *spec.shape[1:]]
    for axis, (got, wanted) in enumerate(zip(outputs.shape, expected, strict=True)):
        assert wanted in (-1, got), f"{where}: output axis {axis} is {got}, spec {spec.shape}"
