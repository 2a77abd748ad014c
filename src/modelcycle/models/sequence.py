"""Helpers shared by the sequence models: token embeddings and masked mean pooling."""

from __future__ import annotations

import torch


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states`` (B, T, H) over the positions where ``mask`` (B, T) is 1 → (B, H)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    """Tokens per row (at least 1, so an empty text still has a state), on the CPU as packing wants."""
    return mask.sum(dim=1).clamp(min=1).cpu()
