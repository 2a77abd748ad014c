"""Writing an optimized variant: measure the candidate on the validation split beside the base, pass it
through the gate, time it, and add it to the bundle with every figure in ``variant.json``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from modelcycle.bench.timing import latency_ms
from modelcycle.bundle import Bundle, VariantManifest
from modelcycle.errors import BundleError, ExportError
from modelcycle.optimize.gate import Gate, GateResult
from modelcycle.predictor import Predictor, finite, held_out_split, model_tensors

LATENCY_SECONDS = 1.0  # a first figure; ``modelcycle bench`` measures properly


@dataclass(frozen=True)
class OptimizeResult:
    """One optimization's outcome, as ``modelcycle optimize --json`` prints it."""

    ref: str
    variant: str
    method: str
    runtime: str
    size_bytes: int
    base_size_bytes: int
    metric: str
    base_value: float
    value: float
    delta: float
    verdict: str
    latency_ms: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Validation:
    """The rows every candidate of one bundle is judged on, and the base's figures on them (measured when
    this is made, before any optimization touches the predictor's network)."""

    predictor: Predictor
    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    base: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, predictor: Predictor) -> Validation:
        bundle = predictor.bundle
        try:
            part = held_out_split(bundle)[1]
        except BundleError:
            raise ExportError(
                f"{bundle.ref}: no validation data to gate on (an imported model)",
                hint="optimize it after fine-tuning, which records its data",
            ) from None
        tensors = model_tensors(predictor.preprocessor, predictor.encoder, part)
        validation = cls(predictor, tensors.inputs, tensors.metric_targets)
        validation.base.update(validation.measure(predictor.model))
        return validation

    @property
    def metric(self) -> str:
        return self.predictor.task.primary_metric

    def measure(self, model: nn.Module) -> dict[str, float]:
        task, encoder = self.predictor.task, self.predictor.encoder
        return finite(task.measure(model, self.inputs, self.targets, encoder.inverse))

    def one_row(self) -> dict[str, np.ndarray]:
        return {name: array[:1] for name, array in self.inputs.items()}


def refuse_existing(bundle: Bundle, name: str) -> None:
    if name in bundle.variant_names():
        raise BundleError(
            f"{bundle.ref}: the {name} variant exists already (bundles are immutable)",
            hint="a variant is written once; `modelcycle bench` compares the one there",
        )


def add_gated_variant(
    validation: Validation,
    gate: Gate,
    *,
    name: str,
    method: str,
    runtime: str,
    params: dict[str, Any],
    model: nn.Module,
    write: Callable[[Path], object],
    extra: dict[str, float] | None = None,
) -> OptimizeResult:
    """Measure ``model`` (the candidate exactly as it will be loaded), judge it, time it at batch 1, and add
    it as variant ``name``; ``write`` puts its files into the variant's folder."""
    bundle = validation.predictor.bundle
    refuse_existing(bundle, name)
    metrics = validation.measure(model)
    metric = validation.metric
    judged: GateResult = gate.judge(metric, validation.base[metric], metrics[metric])
    timing = latency_ms(model, validation.one_row(), warmup=3, max_calls=200, max_seconds=LATENCY_SECONDS)
    latency = {f"{key}_batch1": timing[key] for key in ("p50", "p95", "p99")}
    manifest = VariantManifest(
        name=name,
        method=method,
        runtime=runtime,
        params={**params, "gate": {"metric": metric, **gate.describe()}},
        metrics={**metrics, **(extra or {})},
        accuracy_delta=judged.delta,
        latency_ms=latency,
        verdict="passed" if judged.passed else "rejected",
    )
    with bundle.add_variant(manifest) as folder:
        write(folder)
    variant = bundle.variant(name)
    return OptimizeResult(
        ref=bundle.ref,
        variant=name,
        method=method,
        runtime=runtime,
        size_bytes=variant.manifest.size_bytes,
        base_size_bytes=bundle.weights_bytes,
        metric=metric,
        base_value=judged.base,
        value=judged.candidate,
        delta=judged.delta,
        verdict=judged.verdict,
        latency_ms=latency,
        params=params,
        extra=extra or {},
    )
