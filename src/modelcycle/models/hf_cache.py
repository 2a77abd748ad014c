"""A transformers ``Cache`` over a :class:`~modelcycle.models.kv_cache.KVCache`, so that a Hugging Face causal
LM reads and writes the rows of many sequences at once through the cache API transformers names (its
``past_key_values`` tuples are deprecated). transformers is imported here only when a causal LM is built."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from modelcycle.models.kv_cache import KVCache


class SharedLayer(CacheLayerMixin):
    """One decoder layer's view of the shared cache."""

    is_sliding = False

    def __init__(self, cache: KVCache, layer: int) -> None:
        super().__init__()
        self.cache, self.layer = cache, layer
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to do: the shared cache allocates its buffers itself."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.write(self.layer, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.cache.length

    def get_max_length(self) -> int:
        return -1


class SharedCache(Cache):
    """All layers of a model over one :class:`KVCache` (the attention mask comes with the call, 4-D)."""

    def __init__(self, cache: KVCache) -> None:
        super().__init__(layers=[SharedLayer(cache, layer) for layer in range(cache.layers)])
