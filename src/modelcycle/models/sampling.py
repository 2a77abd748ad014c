"""Choosing the next token from logits: greedy (temperature 0), or sampled after temperature scaling,
top-k and nucleus (top-p) filtering (Holtzman et al., 2020, "The Curious Case of Neural Text
Degeneration")."""

from __future__ import annotations

import torch


def filter_logits(
    logits: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """``logits`` (B, V) with every token outside the top ``k`` and outside the smallest set whose probability
    reaches ``p`` set to -inf (the most likely token always stays)."""
    filtered = logits.clone()
    if top_k is not None and top_k < filtered.shape[-1]:
        threshold = torch.topk(filtered, top_k, dim=-1).values[..., -1:]
        filtered[filtered < threshold] = -float("inf")
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(filtered, descending=True, dim=-1)
        probabilities = torch.softmax(ordered, dim=-1)
        beyond = probabilities.cumsum(dim=-1) - probabilities >= top_p  # mass before this token already ≥ p
        beyond[..., 0] = False  # the most likely token always stays, even for top_p = 0
        filtered.scatter_(-1, order, ordered.masked_fill(beyond, -float("inf")))
    return filtered


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V) → (B,)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probabilities = torch.softmax(filtered.float(), dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
