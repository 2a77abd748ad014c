"""A decoder-only transformer language model trained from scratch (pre-norm blocks, learned positions,
tied input / output embeddings), with generation that reuses a key / value cache instead of recomputing the
prefix for every new token."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from modelcycle.errors import ConfigError
from modelcycle.models.base import ArchitectureEntry, Params, register_architecture
from modelcycle.models.kv_cache import KVCache
from modelcycle.models.sampling import sample_next
from modelcycle.schema import InputSchema


class GPTParams(Params):
    embed_dim: PositiveInt = 128
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    context_length: PositiveInt = 128
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    tie_weights: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTParams:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, params: GPTParams) -> None:
        super().__init__()
        self.num_heads = params.num_heads
        self.dropout = params.dropout
        self.qkv = nn.Linear(params.embed_dim, 3 * params.embed_dim)
        self.out = nn.Linear(params.embed_dim, params.embed_dim)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` (B, T, E); with a cache, ``x`` holds only the new positions, whose keys / values join the
        cache's and which attend to what ``mask`` allows (their own past and, among themselves, causally)."""
        batch, length, width = x.shape
        q, k, v = (
            part.view(batch, length, self.num_heads, -1).transpose(1, 2)
            for part in self.qkv(x).split(width, 2)
        )
        if cache is not None:
            k, v = cache.write(layer, k, v)
        y = nn.functional.scaled_dot_product_attention(
            # without a cache the block is causal; with one, the mask says what each new position sees.
            # A plain bool, so that export with a dynamic length traces it.
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=cache is None,
        )
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, params: GPTParams) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(params.embed_dim)
        self.attention = CausalSelfAttention(params)
        self.norm2 = nn.LayerNorm(params.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(params.embed_dim, 4 * params.embed_dim),
            nn.GELU(),
            nn.Linear(4 * params.embed_dim, params.embed_dim),
        )
        self.drop = nn.Dropout(params.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), cache, layer, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, params: GPTParams) -> None:
        super().__init__()
        self.context_length = params.context_length
        self.token_embedding = nn.Embedding(vocab_size, params.embed_dim)
        self.position_embedding = nn.Embedding(params.context_length, params.embed_dim)
        self.drop = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(Block(params) for _ in range(params.num_layers))
        self.norm = nn.LayerNorm(params.embed_dim)
        self.head = nn.Linear(params.embed_dim, vocab_size, bias=False)
        if params.tie_weights:
            self.head.weight = self.token_embedding.weight
        self.apply(_initialise)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) for ``input_ids`` (B, T), T ≤ context_length."""
        self._check_length(input_ids.shape[1])
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.drop(self.token_embedding(input_ids) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def decode(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        *,
        owners: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``BatchDecoder.decode`` (modelcycle.models.kv_cache)."""
        self._check_length(int(positions.max()) + 1)
        mask = cache.open(input_ids.shape[1], input_ids.shape[0], owners, input_ids.device)
        x = self.drop(self.token_embedding(input_ids) + self.position_embedding(positions))
        for index, block in enumerate(self.blocks):
            x = block(x, cache, index, mask)
        cache.close()
        return self.head(self.norm(x[:, -1:] if keep is None else x[:, keep]))

    def decode_layers(self) -> int:
        return len(self.blocks)

    def transformer_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def context_limit(self) -> int:
        return self.context_length

    def _check_length(self, length: int) -> None:
        if length > self.context_length:
            raise ConfigError(
                f"a sequence of {length} tokens exceeds model.params.context_length {self.context_length}"
            )

    @torch.no_grad()
    def tokens(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """The next ids (B, 1), one at a time as they are chosen (for streaming). With the cache each new
        token costs one position's work; past the context length the window slides and the cache is
        rebuilt. A single-row prompt stops after ``stop_token``."""
        self.eval()
        tokens = prompt[:, -self.context_length :]
        cache, logits = self._prefilled(tokens)
        for _ in range(max_new_tokens):
            next_token = sample_next(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
            ).unsqueeze(1)
            yield next_token
            if stop_token is not None and next_token.shape[0] == 1 and int(next_token) == stop_token:
                return
            tokens = torch.cat([tokens, next_token], dim=1)
            if not use_cache or tokens.shape[1] > self.context_length:
                tokens = tokens[:, -self.context_length :]
                cache, logits = self._prefilled(tokens)
            else:
                position = torch.full_like(next_token, tokens.shape[1] - 1)
                logits = self.decode(next_token, position, cache)[:, -1]

    def _prefilled(self, tokens: torch.Tensor) -> tuple[KVCache, torch.Tensor]:
        cache = KVCache(len(self.blocks))
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return cache, self.decode(tokens, positions, cache)[:, -1]


def _initialise(module: nn.Module) -> None:
    """GPT-2's initialisation: normal(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build(inputs: InputSchema, output_dim: int, params: GPTParams) -> nn.Module:
    return GPT(inputs.vocab_size or output_dim, params)


ENTRY = register_architecture(
    ArchitectureEntry(
        "gpt", ("corpus",), GPTParams, build, tasks=("language_modeling",), transformer_blocks=True
    )
)
