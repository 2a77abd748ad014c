"""``modelcycle optimize REF --quantize … | --prune … | --distill STUDENT_CONFIG``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import emit_json, format_bytes, say, table
from modelcycle.cli.state import open_registry
from modelcycle.errors import ConfigError

if TYPE_CHECKING:
    from modelcycle.bundle import Bundle
    from modelcycle.optimize import Gate
    from modelcycle.registry import Registry


def optimize(
    ref: Annotated[str, typer.Argument(help="The version to optimize (the teacher, for --distill).")],
    quantize: Annotated[
        Literal["dynamic-int8", "static-int8", "fp16", "bf16"] | None,
        typer.Option("--quantize", help="Quantize the weights."),
    ] = None,
    prune: Annotated[
        str | None, typer.Option("--prune", help="l1-unstructured:AMOUNT or structured:AMOUNT, e.g. 0.5.")
    ] = None,
    distill: Annotated[
        Path | None, typer.Option("--distill", help="Train this student config with REF as the teacher.")
    ] = None,
    calibration: Annotated[
        str | None, typer.Option("--calibration", help="Data source to calibrate static-int8 on.")
    ] = None,
    runtime: Annotated[
        Literal["torch", "onnxruntime", "all"],
        typer.Option("--runtime", help="Where dynamic-int8 runs (all: one variant each)."),
    ] = "all",
    source: Annotated[  # quantize()'s own name, so its errors about it are shown as --variant's
        str, typer.Option("--variant", help="Quantize this variant (e.g. pruned-l1-50) instead of the base.")
    ] = "base",
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Fine-tune a pruned model this many epochs.")
    ] = 0,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the teacher's soft targets.")] = 0.5,
    temperature: Annotated[float, typer.Option("--temperature", help="Softening temperature.")] = 2.0,
    overrides: Overrides = None,
    max_drop: Annotated[
        float, typer.Option("--max-accuracy-drop", min=0.0, help="The gate: largest allowed metric drop.")
    ] = 0.01,
    relative: Annotated[
        bool, typer.Option("--relative", help="The allowed drop is a fraction of the base's value.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Quantize, prune or distill a version; each candidate is measured on the validation split and judged
    by the accuracy gate (rejected variants are kept, marked, and never served unless forced)."""
    from modelcycle.optimize import Gate

    chosen = [
        name
        for name, value in (("--quantize", quantize), ("--prune", prune), ("--distill", distill))
        if value
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "optimize: give exactly one of --quantize, --prune, --distill"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    gate = Gate(max_drop, relative)
    registry = open_registry()
    bundle = registry.open(ref)
    if distill is not None:
        _distill(bundle, distill, overrides or [], registry, alpha, temperature, gate, json_output)
        return
    from modelcycle.optimize import PruneSpec, prune_model
    from modelcycle.optimize import quantize as quantize_bundle

    if prune is not None:
        results = [prune_model(bundle, PruneSpec.parse(prune), finetune_epochs=finetune_epochs, gate=gate)]
    else:
        assert quantize is not None
        results = quantize_bundle(
            bundle, quantize, source=source, runtime=runtime, calibration=calibration, gate=gate
        )
    if json_output:
        emit_json(results if len(results) > 1 else results[0])
        return
    rows = [
        [
            result.variant,
            result.runtime,
            f"{format_bytes(result.size_bytes)} "
            f"({result.base_size_bytes / max(result.size_bytes, 1):.1f}× smaller)",
            f"{result.value:.4f} ({result.delta:+.4f})",
            f"{result.latency_ms['p50_batch1']:.3f}",
            result.verdict,
        ]
        for result in results
    ]
    table(
        f"{bundle.ref}: base {results[0].metric} {results[0].base_value:.4f}",
        ["variant", "runtime", "size", results[0].metric, "p50 ms (batch 1)", "gate"],
        rows,
    )


def _distill(
    bundle: Bundle,
    config_file: Path,
    overrides: list[str],
    registry: Registry,
    alpha: float,
    temperature: float,
    gate: Gate,
    json_output: bool,
) -> None:
    from modelcycle.config import load_config
    from modelcycle.optimize import distill

    result = distill(
        bundle, load_config(config_file, overrides), registry, alpha=alpha, temperature=temperature, gate=gate
    )
    if json_output:
        emit_json(result)
        return
    say(f"{result.student} distilled from {result.teacher}: gate {result.verdict}", style="bold")
    table(
        "teacher vs student (student's test split)",
        ["", result.metric, "size", "p50 ms (batch 1)"],
        [
            [role, f"{value:.4f}", format_bytes(size), f"{p50:.3f}"]
            for role, value, size, p50 in (
                (result.teacher, result.teacher_value, result.teacher_size_bytes, result.teacher_p50_ms),
                (result.student, result.student_value, result.student_size_bytes, result.student_p50_ms),
            )
        ],
    )
