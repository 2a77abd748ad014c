"""Quantization: dynamic int8 with torch.ao (Linear / LSTM / GRU) and with ONNX Runtime (per-channel), static
int8 with ONNX Runtime (QDQ, calibrated on real rows), and fp16 / bf16 casts. Each candidate is gated and
written as a variant; on CPUs without int8 or bf16 units a variant may be slower, which the measured
latency shows and ``auto`` (in ``modelcycle bench``) respects. ONNX Runtime int8 weights follow the CPU the
variant is made for (7-bit on CPUs without VNNI, whose int8 kernels saturate: see ``runtime.cpu``)."""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from modelcycle.bundle import Bundle
from modelcycle.bundle.io import save_weights
from modelcycle.config import PipelineConfig
from modelcycle.data import load_dataset
from modelcycle.errors import ConfigError, DataError, ExportError
from modelcycle.export import export_onnx
from modelcycle.export.onnx import ONNX_FILE
from modelcycle.export.onnx import VARIANT as ONNX_FP32
from modelcycle.optimize.gate import Gate
from modelcycle.optimize.variant import OptimizeResult, Validation, add_gated_variant, refuse_existing
from modelcycle.predictor import Predictor, training_split
from modelcycle.runtime import BASE, OnnxModel, load_model, pack_dynamic_int8, quantize_dynamic_int8
from modelcycle.runtime.cpu import Int8Scheme, cpu_features, int8_scheme
from modelcycle.runtime.load import cast, input_names

Quantization = Literal["dynamic-int8", "static-int8", "fp16", "bf16"]
Runtime = Literal["torch", "onnxruntime", "all"]
QUANTIZED_METHODS = frozenset({"torch-dynamic-int8", "onnx-dynamic-int8", "onnx-static-int8", "cast"})
CALIBRATION_ROWS = 256
CALIBRATION_BATCH = 16
CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def quantize(
    bundle: Bundle,
    method: Quantization,
    *,
    source: str = BASE,
    runtime: Runtime = "all",
    calibration: str | None = None,
    gate: Gate | None = None,
    cpu_flags: Sequence[str] | None = None,
) -> list[OptimizeResult]:
    """Quantize ``source`` (the base weights, or a variant that is not quantized yet) with ``method``; dynamic
    int8 goes to torch, ONNX Runtime or both. ``cpu_flags`` are the /proc/cpuinfo flags of the CPU the ONNX
    int8 variants are made for (default: this one's); the gate measures them here either way. Returns one
    result per variant written."""
    gate = gate or Gate()
    scheme = int8_scheme(cpu_features() if cpu_flags is None else cpu_flags)
    _refuse_quantized(bundle, source)
    validation = Validation.of(Predictor.load(bundle))
    if method in CASTS:
        return [_cast(validation, gate, source, method)]
    if method == "static-int8":
        return [_onnx_int8(validation, gate, source, scheme, calibration=calibration, static=True)]
    if calibration is not None:
        raise ConfigError(
            "only static-int8 is calibrated", hint="leave calibration out", parameter="calibration"
        )
    results = []
    if runtime in ("torch", "all") and _runtime_of(bundle, source) == "torch":
        results.append(_torch_dynamic(validation, gate, source))
    if runtime in ("onnxruntime", "all"):
        results.append(_onnx_int8(validation, gate, source, scheme, calibration=None, static=False))
    if not results:
        raise ConfigError(f"variant {source} runs on ONNX Runtime, not torch", parameter="runtime")
    return results


def _runtime_of(bundle: Bundle, source: str) -> str:
    return "torch" if source == BASE else bundle.variant(source).manifest.runtime


def _refuse_quantized(bundle: Bundle, source: str) -> None:
    if source != BASE and bundle.variant(source).manifest.method in QUANTIZED_METHODS:
        raise ConfigError(
            f"{bundle.ref} variant {source} is already quantized ({bundle.variant(source).manifest.method})",
            hint="quantize the base weights or a pruned variant instead",
            parameter="source",
        )


def _named(source: str, name: str) -> str:
    return name if source in (BASE, ONNX_FP32) else f"{source}-{name}"


def _torch_model(validation: Validation, source: str) -> nn.Module:
    bundle = validation.predictor.bundle
    if _runtime_of(bundle, source) != "torch":
        raise ConfigError(
            f"{source} runs on ONNX Runtime; this method quantizes torch weights", parameter="source"
        )
    if source == BASE:  # loaded already to measure the base; quantizing and casting work on copies
        return validation.predictor.model.cpu().eval()
    return load_model(bundle, source).cpu().eval()


def _torch_dynamic(validation: Validation, gate: Gate, source: str) -> OptimizeResult:
    name = _named(source, "int8-dynamic")
    refuse_existing(validation.predictor.bundle, name)
    model = _torch_model(validation, source)
    present = sorted({type(module).__name__ for module in model.modules()} & {"Linear", "LSTM", "GRU"})
    if not present:
        raise ConfigError(
            f"{validation.predictor.bundle.ref}: no Linear, LSTM or GRU layer to quantize dynamically",
            hint="quantize with runtime onnxruntime, whose int8 covers convolutions too",
        )
    quantized = quantize_dynamic_int8(model, present)
    state = pack_dynamic_int8(model, quantized)
    return add_gated_variant(
        validation,
        gate,
        name=name,
        method="torch-dynamic-int8",
        runtime="torch-int8",
        params={
            "source": source,
            "modules": present,
            "dtype": "qint8",
            "scheme": "per-channel (Linear), per-tensor (LSTM, GRU)",
        },
        model=quantized,
        write=lambda folder: save_weights(state, folder / "weights.safetensors"),
    )


def _cast(validation: Validation, gate: Gate, source: str, method: str) -> OptimizeResult:
    name = _named(source, method)
    refuse_existing(validation.predictor.bundle, name)
    dtype = CASTS[method]
    model = cast(copy.deepcopy(_torch_model(validation, source)), dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    return add_gated_variant(
        validation,
        gate,
        name=name,
        method="cast",
        runtime="torch",
        params={"source": source, "dtype": dtype_name},
        model=model,
        write=lambda folder: save_weights(model.network.state_dict(), folder / "weights.safetensors"),
    )


def _onnx_source(validation: Validation, source: str) -> Path:
    """The fp32 ONNX graph to quantize: the named ONNX variant, or the base's export (made now if missing)."""
    bundle = validation.predictor.bundle
    if source == BASE:
        if ONNX_FP32 not in bundle.variant_names():
            export_onnx(bundle)
        source = ONNX_FP32
    variant = bundle.variant(source)
    if variant.manifest.runtime != "onnxruntime":
        raise ConfigError(
            f"{source} is a torch variant; ONNX Runtime quantizes an ONNX graph",
            hint=f"quantize {ONNX_FP32} (made by `modelcycle export`)",
            parameter="source",
        )
    return variant.path / ONNX_FILE


def _onnx_int8(
    validation: Validation,
    gate: Gate,
    source: str,
    scheme: Int8Scheme,
    *,
    calibration: str | None,
    static: bool,
) -> OptimizeResult:
    bundle = validation.predictor.bundle
    name = _named(source, "onnx-int8-static" if static else "onnx-int8")
    refuse_existing(bundle, name)
    graph = _onnx_source(validation, source)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / ONNX_FILE
        params: dict[str, object] = {
            "source": source if source != BASE else ONNX_FP32,
            **scheme.params(),
            "per_channel": True,
        }
        if static:
            feeds = _calibration_feeds(validation.predictor, graph, calibration)
            _quantize_static(graph, target, feeds, scheme)
            params |= {
                "format": "QDQ",
                "activation_type": "uint8",
                "calibration": calibration or "train split",
                "calibration_rows": sum(len(next(iter(feed.values()))) for feed in feeds),
            }
        else:
            _quantize_dynamic(graph, target, scheme)
        return add_gated_variant(
            validation,
            gate,
            name=name,
            method="onnx-static-int8" if static else "onnx-dynamic-int8",
            runtime="onnxruntime",
            params=params,
            model=OnnxModel(target, input_names(bundle)),
            write=lambda folder: shutil.copyfile(target, folder / ONNX_FILE),
        )


def _loaded_graph(path: Path) -> object:
    """The graph with its ``value_info`` cleared: the dynamo exporter's shape annotations make the quantizer
    fail, and ONNX Runtime infers the shapes again anyway."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    return model


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger on every call; it is not the user's."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize_dynamic(source: Path, target: Path, scheme: Int8Scheme) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_quantizer():
            quantize_dynamic(
                _loaded_graph(source),
                target,
                per_channel=True,
                reduce_range=scheme.reduce_range,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as error:  # the quantizer raises bare exceptions for graphs it cannot handle
        raise ExportError(f"ONNX Runtime dynamic quantization failed: {error}") from error


def _quantize_static(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], scheme: Int8Scheme
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.remaining = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    try:
        with _quiet_quantizer():
            quantize_static(
                _loaded_graph(source),
                target,
                Feeds(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=scheme.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as error:
        raise ExportError(f"ONNX Runtime static quantization failed: {error}") from error


def _calibration_feeds(
    predictor: Predictor, graph: Path, calibration: str | None
) -> list[dict[str, np.ndarray]]:
    """Batches of real rows (the given source, else the training split), as the graph's named inputs."""
    bundle = predictor.bundle
    if calibration is None:
        rows = training_split(bundle, "train")
    else:
        config = PipelineConfig.model_validate(bundle.read_json("config.json"))
        data = config.data.model_copy(update={"source": calibration, "target": None, "max_rows": None})
        rows = load_dataset(data, seed=config.seed)
    if len(rows) == 0:
        raise DataError(
            f"{calibration or 'the training split'} has no rows to calibrate on", parameter="calibration"
        )
    chosen = np.sort(np.random.default_rng(0).permutation(len(rows))[:CALIBRATION_ROWS])
    subset = rows.take(chosen)
    inputs = predictor.preprocessor.transform(subset)  # no labels needed (a corpus: its token blocks)
    fed = [name for name in input_names(bundle) if name in _graph_inputs(graph)]
    return [
        {name: inputs[name][start : start + CALIBRATION_BATCH] for name in fed}
        for start in range(0, len(chosen), CALIBRATION_BATCH)
    ]


def _graph_inputs(path: Path) -> set[str]:
    import onnx

    return {item.name for item in onnx.load(str(path), load_external_data=False).graph.input}
