"""BentoML serving the same model with its adaptive batching (run from the benchmark's own venv:
``bentoml serve benchmarks/servers/bento_service.py:Model``; the bundle path comes from $BENCH_BUNDLE).
Every input of the model is stacked into one array (N, inputs, ...) because a batchable API takes one."""

from __future__ import annotations

import os

import bentoml
import numpy as np
import torch


@bentoml.service(workers=1)
class Model:
    def __init__(self) -> None:
        from modelcycle.bundle import Bundle
        from modelcycle.runtime import load_model

        bundle = Bundle(os.environ["BENCH_BUNDLE"])
        self.model = load_model(bundle)
        self.dtypes = [np.dtype(spec.dtype) for spec in bundle.manifest.inputs.tensors]

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        tensors = [
            torch.from_numpy(np.ascontiguousarray(inputs[:, index]).astype(dtype))
            for index, dtype in enumerate(self.dtypes)
        ]
        with torch.inference_mode():
            return self.model(*tensors).numpy()
