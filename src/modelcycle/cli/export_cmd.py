"""``modelcycle export REF --format onnx``."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say
from modelcycle.cli.state import open_registry


def export(
    ref: Annotated[str, typer.Argument(help="The version to export, e.g. digits-cnn@3.")],
    format_name: Annotated[Literal["onnx"], typer.Option("--format", help="Target format.")] = "onnx",
    opset: Annotated[
        int | None, typer.Option("--opset", min=7, help="ONNX opset (default: the exporter's).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", min=0.0, help="Max abs difference allowed.")
    ] = 1e-4,
    json_output: JsonFlag = False,
) -> None:
    """Convert a version to ONNX, check parity with ONNX Runtime on real validation rows, and store it as the
    onnx-fp32 variant."""
    from modelcycle.export import export_onnx

    result = export_onnx(open_registry().open(ref), opset=opset, tolerance=tolerance)
    if json_output:
        emit_json(result)
        return
    agreement = (
        f", argmax agreement {result.argmax_agreement:.4f}" if result.argmax_agreement is not None else ""
    )
    say(
        f"{result.ref} → {result.variant} (opset {result.opset}, {result.size_bytes / 1e6:.2f} MB): "
        f"parity on {result.rows_checked} validation rows, max abs diff {result.max_abs_diff:.2e}{agreement}",
        style="bold",
    )
