"""Public helpers for testing modelcycle and its plugins: tiny deterministic objects, and the contract checks
every registered architecture, runtime, task and kind of input passes (a plugin author runs them too)."""

from modelcycle.testing.architectures import (
    ArchitectureCase,
    architecture_cases,
    check_architecture,
    check_onnx_export,
    check_output_spec,
    check_row_equals_batch,
    check_safetensors_round_trip,
    check_seeded,
)
from modelcycle.testing.examples import (
    EXAMPLE_INPUTS,
    TINY_PARAMS,
    ExampleInput,
    example_batch,
)
from modelcycle.testing.factories import tiny_bundle, tiny_dataset, tiny_manifest, tiny_state_dict
from modelcycle.testing.input_kinds import check_input_kind
from modelcycle.testing.runtimes import check_runtime
from modelcycle.testing.tasks import check_task

__all__ = [
    "EXAMPLE_INPUTS",
    "TINY_PARAMS",
    "ArchitectureCase",
    "ExampleInput",
    "architecture_cases",
    "check_architecture",
    "check_input_kind",
    "check_onnx_export",
    "check_output_spec",
    "check_row_equals_batch",
    "check_runtime",
    "check_safetensors_round_trip",
    "check_seeded",
    "check_task",
    "example_batch",
    "tiny_bundle",
    "tiny_dataset",
    "tiny_manifest",
    "tiny_state_dict",
]
