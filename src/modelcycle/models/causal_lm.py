"""A pretrained causal language model (a Hugging Face checkpoint folder, a GGUF file, or ``builtin:smollm2``),
fine-tuned in full or through LoRA adapters. As with the hf encoder, adapters are merged and the model's
config kept in the parameters before a version is registered, so the bundle stands alone (and a GGUF model is
stored de-quantized, as safetensors, loading in a fraction of the time)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import model_validator
from torch import nn

from modelcycle.errors import ConfigError
from modelcycle.models.base import ArchitectureEntry, Params, hf_blocks, register_architecture
from modelcycle.models.hf import LoraParams, merge_adapters, with_lora
from modelcycle.models.kv_cache import KVCache
from modelcycle.models.sampling import sample_next
from modelcycle.packages import causal_lm_source
from modelcycle.schema import InputSchema


class CausalLMParams(Params):
    checkpoint: str = "builtin:smollm2"
    lora: LoraParams | None = None
    # Filled when a version is registered: the model's own config, and the adapters merged into it.
    network_config: dict[str, Any] | None = None
    merged_lora: LoraParams | None = None

    @model_validator(mode="after")
    def _checkpoint_exists(self) -> CausalLMParams:
        if self.network_config is None:
            causal_lm_source(self.checkpoint, field="model.params.checkpoint")
        return self


class CausalLM(nn.Module):
    def __init__(self, network: Any) -> None:
        super().__init__()
        self.network = network

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V)."""
        return self.network(input_ids=input_ids, use_cache=False).logits

    def decode(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        *,
        owners: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``BatchDecoder.decode`` (modelcycle.models.kv_cache), through the model's cache API."""
        from modelcycle.models.hf_cache import SharedCache  # imports transformers, as build does

        mask = cache.open(input_ids.shape[1], input_ids.shape[0], owners, input_ids.device)
        output = self.network(
            input_ids=input_ids,
            position_ids=positions,
            attention_mask=None if mask is None else self._additive(mask),
            cache=SharedCache(cache),
            use_cache=True,
            logits_to_keep=1 if keep is None else keep,
        )
        cache.close()
        return output.logits

    def _additive(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask as the model adds it to attention scores (the eager attention adds it, sdpa too)."""
        blocked = torch.finfo(self.network.dtype).min
        additive = torch.zeros(mask.shape, dtype=self.network.dtype, device=mask.device)
        return additive.masked_fill(~mask, blocked)

    def decode_layers(self) -> int:
        return int(self.network.config.num_hidden_layers)

    def transformer_blocks(self) -> list[nn.Module]:
        return hf_blocks(self.network)

    def context_limit(self) -> int:
        return int(getattr(self.network.config, "max_position_embeddings", 2048))

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
        stop_token: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """The next ids (1, 1), one at a time (for streaming), one position's work per token (the key / value
        cache), sampled as the gpt architecture samples; stops after ``stop_token``."""
        self.eval()
        cache = KVCache(self.decode_layers())
        length = prompt.shape[1]
        logits = self.decode(prompt, torch.arange(length, device=prompt.device)[None], cache)[:, -1]
        for step in range(max_new_tokens):
            next_token = sample_next(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
            ).unsqueeze(1)
            yield next_token
            if stop_token is not None and int(next_token) == stop_token:
                return
            logits = self.decode(next_token, torch.full_like(next_token, length + step), cache)[:, -1]


def build(inputs: InputSchema, output_dim: int, params: CausalLMParams) -> nn.Module:
    import transformers  # heavy: imported only when a causal LM is built

    transformers.logging.disable_progress_bar()
    network: Any
    if params.network_config is not None:
        config = transformers.AutoConfig.for_model(**params.network_config)
        network = transformers.AutoModelForCausalLM.from_config(config)
    else:
        folder, gguf_file = causal_lm_source(params.checkpoint, field="model.params.checkpoint")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            network = transformers.AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=gguf_file, local_files_only=True, dtype=torch.float32
            )
        network.hf_quantizer = None  # de-quantized on load: save it as plain float weights
        network.config.quantization_config = None
        if params.lora is not None:
            network = with_lora(network, params.lora)
    vocabulary = int(network.config.vocab_size)
    if inputs.vocab_size is not None and inputs.vocab_size > vocabulary:
        raise ConfigError(
            f"the tokenizer has {inputs.vocab_size} tokens but the model only {vocabulary}",
            hint="tokenize with the model's own tokenizer (data.preprocess.text.tokenizer)",
        )
    return CausalLM(network)


def finalize(model: nn.Module, params: CausalLMParams) -> tuple[nn.Module, CausalLMParams]:
    if not isinstance(model, CausalLM):
        return model, params
    model.network = network = merge_adapters(model.network, params.lora)
    config = {key: value for key, value in network.config.to_dict().items() if key != "quantization_config"}
    return model, params.model_copy(
        update={"lora": None, "merged_lora": params.lora, "network_config": config}
    )


ENTRY = register_architecture(
    ArchitectureEntry(
        "hf_causal_lm",
        ("corpus",),
        CausalLMParams,
        build,
        finalize=finalize,
        tasks=("language_modeling",),
        transformer_blocks=True,
    )
)
