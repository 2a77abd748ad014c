"""Running a network over named input arrays in batches, in eval mode, without gradients."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_tensors(
    arrays: dict[str, np.ndarray], rows: np.ndarray | slice, device: torch.device
) -> list[torch.Tensor]:
    """The selected rows of every input array, in the model's argument order, on ``device``."""
    return [torch.from_numpy(np.ascontiguousarray(array[rows])).to(device) for array in arrays.values()]


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live; the CPU for a module with none (an ONNX Runtime session, an int8
    network whose weights are packed)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module,
    inputs: dict[str, np.ndarray],
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> np.ndarray:
    """The model's outputs for every row as float32 (rows, output_dim)."""
    device = device or model_device(model)
    model.eval()
    rows = len(next(iter(inputs.values())))
    outputs = [
        model(*to_tensors(inputs, slice(start, start + batch_size), device)).float().cpu()
        for start in range(0, rows, batch_size)
    ]
    return torch.cat(outputs).numpy()
