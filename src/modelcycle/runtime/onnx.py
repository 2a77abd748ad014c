"""An ONNX Runtime session as a module, so ONNX variants are measured and served like torch models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class OnnxModel(nn.Module):
    """Runs ``path`` with ONNX Runtime on the CPU. ``forward`` takes the model's inputs in ``argument_names``
    order (the bundle's input schema); inputs the exporter found unused and dropped are not fed."""

    def __init__(self, path: Path, argument_names: list[str], *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Idle threads sleep instead of spinning: in a server the cores are shared with the HTTP stack, and
        # spinning between requests burned them for ~4 µs less latency per call.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = path
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.argument_names = argument_names
        self.graph_inputs = {item.name for item in self.session.get_inputs()}

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feed = {
            name: np.ascontiguousarray(tensor.detach().cpu().numpy())
            for name, tensor in zip(self.argument_names, tensors, strict=True)
            if name in self.graph_inputs
        }
        return torch.from_numpy(np.asarray(self.session.run(None, feed)[0], dtype=np.float32))
