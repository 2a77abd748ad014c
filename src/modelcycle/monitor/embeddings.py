"""The model's own view of its inputs, for drift of text and images: the input of its output layer (the
penultimate representation), reduced by PCA fitted on training rows. ``reference.json`` keeps the mean, the
components and a sample of projected training rows — tens of kilobytes — so live embeddings can be compared
with a two-sample test (MMD) without the training data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modelcycle.data.reference import EmbeddingProfile
from modelcycle.inference import model_device, to_tensors

COMPONENTS = 16
SAMPLE_ROWS = 256
BATCH_ROWS = 128


def output_layer(model: nn.Module, output_dim: int) -> nn.Linear | None:
    """The last Linear that produces the model's outputs (None: the model has no such layer, e.g. ONNX)."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == output_dim:
            found = module
    return found


@torch.inference_mode()
def embed(model: nn.Module, inputs: dict[str, np.ndarray], output_dim: int) -> np.ndarray | None:
    """(rows, features) float64: what the output layer receives for each row; None without an output layer."""
    layer = output_layer(model, output_dim)
    if layer is None:
        return None
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _module, args, _output: captured.append(args[0].detach()))
    try:
        model.eval()
        rows = len(next(iter(inputs.values())))
        device = model_device(model)
        for start in range(0, rows, BATCH_ROWS):
            model(*to_tensors(inputs, slice(start, start + BATCH_ROWS), device))
    finally:
        hook.remove()
    return (
        torch.cat([item.float().cpu().reshape(len(item), -1) for item in captured]).numpy().astype(np.float64)
    )


def embedding_profile(embeddings: np.ndarray, *, seed: int = 0) -> EmbeddingProfile:
    """PCA of training embeddings and a projected sample of them."""
    rng = np.random.default_rng(seed)
    mean = embeddings.mean(axis=0)
    _, _, vectors = np.linalg.svd(embeddings - mean, full_matrices=False)
    components = vectors[: min(COMPONENTS, vectors.shape[0])]
    chosen = rng.choice(len(embeddings), size=min(SAMPLE_ROWS, len(embeddings)), replace=False)
    sample = (embeddings[chosen] - mean) @ components.T
    return EmbeddingProfile(
        count=len(embeddings),
        dim=int(embeddings.shape[1]),
        mean=_rounded(mean),
        components=[_rounded(row) for row in components],
        sample=[_rounded(row) for row in sample],
    )


def project(profile: EmbeddingProfile, embeddings: np.ndarray) -> np.ndarray:
    """Live embeddings in the reference's PCA coordinates."""
    return (embeddings - np.asarray(profile.mean)) @ np.asarray(profile.components).T


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{value:.6g}") for value in values]
