"""A bundle loaded for inference: its network (architecture + safetensors weights), its fitted
preprocessing and its label decoding, so that every later stage predicts exactly as training evaluated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelcycle.bundle import Bundle
from modelcycle.data import (
    Dataset,
    Preprocessor,
    TargetEncoder,
    preprocessor_from_state,
    target_encoder_from_state,
)
from modelcycle.errors import BundleError
from modelcycle.models import ARCHITECTURES
from modelcycle.models.inference import predict
from modelcycle.tasks import TASKS, Task


@dataclass(frozen=True)
class Predictor:
    bundle: Bundle
    model: nn.Module
    preprocessor: Preprocessor
    encoder: TargetEncoder
    task: Task

    @classmethod
    def load(cls, bundle: Bundle, device: torch.device | str = "cpu") -> Predictor:
        manifest = bundle.manifest
        entry = ARCHITECTURES.get(manifest.architecture.name, field=f"{bundle.path}: architecture.name")
        params = entry.check_params(manifest.architecture.params)
        output_dim = manifest.outputs.tensors[0].shape[-1]
        model = entry.build(manifest.inputs, output_dim, params)
        try:
            model.load_state_dict(bundle.state_dict())
        except RuntimeError as error:
            raise BundleError(f"{bundle.path}: weights do not fit the architecture ({error})") from None
        model.to(device).eval()
        state = bundle.read_json("preprocess.json")
        preprocessor = preprocessor_from_state(state["features"], base_dir=bundle.path)
        encoder = target_encoder_from_state(state["target"])
        return cls(bundle, model, preprocessor, encoder, TASKS.get(manifest.task)())

    def outputs(self, dataset: Dataset) -> np.ndarray:
        """Network outputs for every row, in the target's units: logits (N, K) or values (N, 1)."""
        return self.encoder.inverse(predict(self.model, self.preprocessor.transform(dataset)))

    def targets(self, dataset: Dataset) -> np.ndarray:
        return metric_targets(self.encoder, dataset)


def metric_targets(encoder: TargetEncoder, dataset: Dataset) -> np.ndarray:
    """A dataset's targets as the task's metrics take them: class indices, or values in their own units."""
    return encoder.transform(dataset) if encoder.task == "classification" else dataset.y.astype(np.float64)


def finite_metrics(task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's metrics, leaving out values that are undefined for this data (e.g. R² of a single row)."""
    return {key: value for key, value in task.metrics(targets, outputs).items() if math.isfinite(value)}
