"""Continuous batching for language models: many generations share one batched forward pass per step."""

from modelcycle.engine.engine import Engine
from modelcycle.engine.generation import Event, Generation, GenerationRequest, TokenLogprob

__all__ = ["Engine", "Event", "Generation", "GenerationRequest", "TokenLogprob"]
