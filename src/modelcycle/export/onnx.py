"""``export_onnx(bundle)``: the network as an ONNX graph (torch's dynamo exporter) with a dynamic batch axis
(and sequence axis for token inputs), run by ONNX Runtime on real validation samples and compared with
torch; above the tolerance the export fails and no variant is written. A passing export becomes the
``onnx-fp32`` variant, its parity figures in ``variant.json``."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelcycle.bundle import Bundle, VariantManifest
from modelcycle.errors import BundleError, ExportError
from modelcycle.inference import predict
from modelcycle.predictor import Predictor, held_out_split, model_tensors
from modelcycle.runtime import OnnxModel

logger = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
VARIANT = "onnx-fp32"
PARITY_ROWS = 64


@dataclass(frozen=True)
class ExportResult:
    ref: str
    variant: str
    path: Path
    opset: int
    size_bytes: int
    max_abs_diff: float
    argmax_agreement: float | None
    rows_checked: int


def export_onnx(bundle: Bundle, *, opset: int | None = None, tolerance: float = 1e-4) -> ExportResult:
    """Convert, check parity, and add the ``onnx-fp32`` variant to the bundle."""
    if VARIANT in bundle.variant_names():
        raise ExportError(f"{bundle.ref}: the {VARIANT} variant exists already (bundles are immutable)")
    predictor = Predictor.load(bundle)
    inputs = _parity_inputs(predictor)
    names = [tensor.name for tensor in bundle.manifest.inputs.tensors]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / ONNX_FILE
        used_opset = convert(predictor.model, inputs, names, path, opset)
        expected = predict(predictor.model, inputs)
        got = predict(OnnxModel(path, names), inputs)
        difference = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        agreement = predictor.task.agreement(expected, got)
        if not difference <= tolerance:
            raise ExportError(
                f"{bundle.ref}: ONNX Runtime differs from torch by {difference:.3g} (tolerance "
                f"{tolerance:g}) on {len(next(iter(inputs.values())))} validation rows"
            )
        manifest = VariantManifest(
            name=VARIANT,
            method="onnx-export",
            runtime="onnxruntime",
            params={"opset": used_opset, "inputs": names, "dynamic_axes": _dynamic_axes(names, inputs)},
            metrics={
                "parity_max_abs_diff": difference,
                **({"parity_argmax_agreement": agreement} if agreement is not None else {}),
            },
            verdict="passed",
        )
        with bundle.add_variant(manifest) as folder:
            (folder / ONNX_FILE).write_bytes(path.read_bytes())
    variant = bundle.variant(VARIANT)
    return ExportResult(
        bundle.ref,
        VARIANT,
        variant.path,
        used_opset,
        variant.manifest.size_bytes,
        difference,
        agreement,
        len(next(iter(inputs.values()))),
    )


def _parity_inputs(predictor: Predictor) -> dict[str, np.ndarray]:
    """Up to PARITY_ROWS real rows of the validation split (the test split if there is none); for an
    imported bundle with no training data, nothing real exists, and the export is refused."""
    try:
        part = held_out_split(predictor.bundle)[1]
    except BundleError:
        raise ExportError(
            f"{predictor.bundle.ref}: no training data to check parity on (an imported model)",
            hint="export it after fine-tuning, which records its data",
        ) from None
    tensors = model_tensors(predictor.preprocessor, predictor.encoder, part).inputs
    return {name: array[:PARITY_ROWS] for name, array in tensors.items()}


def _dynamic_axes(names: list[str], inputs: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Batch everywhere; the sequence too for token inputs (2-D integer tensors)."""
    return {
        name: [0, 1] if inputs[name].ndim == 2 and inputs[name].dtype == np.int64 else [0] for name in names
    }


def convert(
    model: torch.nn.Module, inputs: dict[str, np.ndarray], names: list[str], path: Path, opset: int | None
) -> int:
    """Write ``model`` to ``path`` as ONNX, traced on two rows of ``inputs`` with dynamic batch (and token
    sequence) axes; returns the opset used. Not checked for parity here: ``export_onnx`` and the contract
    checks in ``modelcycle.testing`` do that."""
    shapes = _dynamic_shapes(model, names, _dynamic_axes(names, inputs))
    example = tuple(torch.from_numpy(inputs[name][:2].copy()) for name in names)
    options: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _quiet_exporter():  # the exporter prints its progress
            program = torch.onnx.export(
                model.eval(),
                example,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=shapes,
                dynamo=True,
                **options,
            )
    except Exception as error:  # the exporter's own error types vary by release; the root cause names the op
        raise ExportError(
            f"ONNX export failed: {_root_cause(error)}",
            hint="the model uses an operator or construct the exporter cannot translate",
        ) from error
    logger.debug("exporter output: %s", captured.getvalue())
    if program is None:
        raise ExportError("ONNX export produced no program")
    program.save(str(path))
    import onnx

    return int(
        next(
            (
                entry.version
                for entry in onnx.load(str(path), load_external_data=False).opset_import
                if entry.domain in ("", "ai.onnx")
            ),
            0,
        )
    )


def _dynamic_shapes(
    model: torch.nn.Module, names: list[str], axes: dict[str, list[int]]
) -> tuple[dict[int, Any], ...] | tuple[tuple[dict[int, Any], ...]]:
    """The dynamic axes per argument, in argument order. Not keyed by input name: torch.export wants
    ``forward``'s own parameter names there, and those differ (an mlp over images takes ``features`` for the
    ``image`` input, the rnn takes ``*tensors``), which failed the export of both."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = tuple({0: batch, **({1: sequence} if 1 in axes[name] else {})} for name in names)
    parameters = inspect.signature(model.forward).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters):
        return (shapes,)  # ``*tensors`` is one parameter holding every input
    return shapes


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about things that do not concern the user (e.g. torchvision operators when
    torchvision is absent); those go to the debug log instead of the terminal."""
    exporter_logger = logging.getLogger("torch.onnx")
    level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        exporter_logger.setLevel(level)


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost exception, without terminal colour codes."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__
