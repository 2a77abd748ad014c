"""Choosing the next token from logits: greedy (temperature 0), or sampled after temperature scaling,
top-k and nucleus (top-p) filtering (Holtzman et al., 2020, "The Curious Case of Neural Text
Degeneration"); per sequence as a batch of many asks (``SamplingParams``), with OpenAI's presence and
frequency penalties."""

from __future__ import annotations

from dataclasses import dataclass

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


GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens, as the OpenAI API names the knobs; temperature 0 is greedy.
    Penalties lower the logits of tokens already generated: ``presence`` once, ``frequency`` per time."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    @property
    def effective_temperature(self) -> float:
        """0 (greedy) below 1e-5, where dividing the logits would overflow them."""
        return self.temperature if self.temperature >= GREEDY_BELOW else 0.0

    @property
    def greedy(self) -> bool:
        return self.effective_temperature == 0 and not self.penalized

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0


def penalize(logits: torch.Tensor, counts: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """``logits`` (V,) less the presence and frequency penalties of the token ``counts`` (V,) so far."""
    return logits - params.presence_penalty * (counts > 0) - params.frequency_penalty * counts
