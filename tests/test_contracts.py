"""Every registered plugin through the contract checks of ``modelcycle.testing``: parametrised over the
registries themselves, so a new architecture, runtime, task or kind of input is checked without a new test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from modelcycle.bundle import Bundle
from modelcycle.export import export_onnx
from modelcycle.optimize import quantize
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.registry import Registry
from modelcycle.runtime import RUNTIMES
from modelcycle.tasks import TASKS
from modelcycle.tasks.regression import Regression
from modelcycle.testing import (
    ArchitectureCase,
    architecture_cases,
    check_onnx_export,
    check_output_spec,
    check_row_equals_batch,
    check_runtime,
    check_safetensors_round_trip,
    check_seeded,
    check_task,
)
from tests.conftest import train_into

CASES = architecture_cases()
# Exportability is the network's over a kind of input; the task only sizes the head, so one task per pair.
ONNX_CASES = sorted(
    {(case.entry.name, case.kind): case for case in reversed(CASES) if case.exports_onnx}.values(),
    key=lambda case: case.id,
)


def by_id(cases: list[ArchitectureCase]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[case.id for case in cases])


@by_id(CASES)
def test_architecture_output_fits_the_task_spec(case: ArchitectureCase) -> None:
    check_output_spec(case)


@by_id(CASES)
def test_architecture_is_seeded(case: ArchitectureCase) -> None:
    check_seeded(case)


@by_id(CASES)
def test_architecture_weights_survive_safetensors(case: ArchitectureCase) -> None:
    check_safetensors_round_trip(case)


@by_id(CASES)
def test_architecture_row_alone_equals_its_row_in_a_batch(case: ArchitectureCase) -> None:
    check_row_equals_batch(case)


@pytest.mark.slow
@by_id(ONNX_CASES)
def test_architecture_exports_to_onnx(case: ArchitectureCase) -> None:
    check_onnx_export(case)


# How each registered runtime gets a variant to check, with the variant's tolerance from the base weights (a
# fraction of the outputs' range): a runtime without an entry here fails its test until it has one.
RUNTIME_EXAMPLES: dict[str, tuple[Callable[[Bundle], str], float]] = {
    "torch": (lambda bundle: quantize(bundle, "fp16")[0].variant, 1e-2),
    "torch-int8": (lambda bundle: quantize(bundle, "dynamic-int8", runtime="torch")[0].variant, 0.05),
    "onnxruntime": (lambda bundle: export_onnx(bundle).variant, 1e-5),
}


@pytest.fixture(scope="module")
def tabular_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    home = train_into(tmp_path_factory.mktemp("runtimes"), ("breast-cancer-mlp.yaml", ["train.epochs=1"]))
    registry = Registry(home)
    yield registry.open("breast-cancer-mlp")
    registry.close()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES.names())
def test_runtime_runs_its_variant_like_the_base(runtime: str, tabular_bundle: Bundle) -> None:
    if runtime not in RUNTIME_EXAMPLES:
        pytest.fail(f"runtime '{runtime}' has no example variant in RUNTIME_EXAMPLES")
    make, tolerance = RUNTIME_EXAMPLES[runtime]
    variant = make(tabular_bundle)
    assert tabular_bundle.variant(variant).manifest.runtime == runtime
    predictor = Predictor.load(tabular_bundle)
    test = model_tensors(predictor.preprocessor, predictor.encoder, training_split(tabular_bundle, "test"))
    check_runtime(
        tabular_bundle,
        variant,
        {name: array[:16] for name, array in test.inputs.items()},
        tolerance=tolerance,
    )


@pytest.mark.parametrize("name", TASKS.names())
def test_task_keeps_its_contract(name: str) -> None:
    check_task(name)


def test_a_task_with_row_outputs_must_give_an_example_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Regression, "example_target", lambda self: None)
    with pytest.raises(AssertionError, match="'regression' gives row outputs but no example_target"):
        check_task("regression")
