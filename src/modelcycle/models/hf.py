"""A pretrained Hugging Face encoder (a local checkpoint directory, or ``builtin:minilm``) with a
classification / regression head, fine-tuned in full or through LoRA adapters (peft). Before a version is
registered the adapters are merged into the weights, and the encoder's config is kept in the architecture
parameters, so the bundle rebuilds the network on its own, without the original checkpoint."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from modelcycle.errors import ConfigError
from modelcycle.models.base import ArchitectureEntry, Params, hf_blocks, register_architecture
from modelcycle.models.sequence import masked_mean
from modelcycle.packages import model_directory
from modelcycle.schema import InputSchema


class LoraParams(Params):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])


class HFParams(Params):
    """``output``: ``head`` (a linear layer for the task) or ``embedding`` (the pooled, L2-normalised
    sentence embedding itself, as sentence-transformers computes it; for imported encoders)."""

    checkpoint: str = "builtin:minilm"
    output: Literal["head", "embedding"] = "head"
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lora: LoraParams | None = None
    train_encoder: bool = True  # without LoRA: fine-tune the whole encoder, or only the head
    # Filled when a version is registered: the encoder's own config, and the adapters merged into it.
    encoder_config: dict[str, Any] | None = None
    merged_lora: LoraParams | None = None

    @model_validator(mode="after")
    def _checkpoint_exists(self) -> HFParams:
        if self.encoder_config is None:  # training starts from the checkpoint: it must be there now
            model_directory(self.checkpoint, "config.json", field="model.params.checkpoint")
        return self


class PretrainedEncoder(nn.Module):
    def __init__(self, encoder: Any, output_dim: int, params: HFParams) -> None:
        """``encoder`` is a transformers model (its config says how wide its hidden states are)."""
        super().__init__()
        self.encoder = encoder
        self.pooling = params.pooling
        self.embedding = params.output == "embedding"
        hidden = int(encoder.config.hidden_size)
        self.head = (
            nn.Identity()
            if self.embedding
            else nn.Sequential(nn.Dropout(params.dropout), nn.Linear(hidden, output_dim))
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = states[:, 0] if self.pooling == "cls" else masked_mean(states, attention_mask)
        return nn.functional.normalize(pooled, dim=-1) if self.embedding else self.head(pooled)

    def transformer_blocks(self) -> list[nn.Module]:
        return hf_blocks(self.encoder)


def build(inputs: InputSchema, output_dim: int, params: HFParams) -> nn.Module:
    import transformers  # heavy: imported only when an hf model is built

    transformers.logging.disable_progress_bar()  # the CLI draws its own progress; library code never prints

    if params.encoder_config is not None:  # a registered bundle: structure from its config, weights from it
        config = transformers.AutoConfig.for_model(**params.encoder_config)
        encoder = transformers.AutoModel.from_config(config)
    else:
        encoder = transformers.AutoModel.from_pretrained(
            model_directory(params.checkpoint, "config.json", field="model.params.checkpoint"),
            local_files_only=True,
        )
    if getattr(encoder, "pooler", None) is not None:
        # the pooler's output is never used (pooling is ours): without it no parameter lacks a gradient,
        # which DistributedDataParallel refuses, and bundles do not carry dead weights
        encoder.pooler = None
    model = PretrainedEncoder(encoder, output_dim, params)
    if params.encoder_config is None and params.lora is not None:
        model.encoder = with_lora(encoder, params.lora)
    elif params.encoder_config is None and not params.train_encoder:
        model.encoder.requires_grad_(False)
    return model


def with_lora(encoder: nn.Module, lora: LoraParams) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
    )
    try:
        with warnings.catch_warnings():  # peft calls a transformers API that warns of its own deprecation
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(encoder, config)
    except ValueError as error:
        raise ConfigError(f"model.params.lora.target_modules: {error}") from None


def merge_adapters(network: Any, lora: LoraParams | None) -> Any:
    """The network with its LoRA adapters folded into the base weights (W + B·A·alpha/r), or as it is."""
    return network.merge_and_unload() if lora is not None else network


def finalize(model: nn.Module, params: HFParams) -> tuple[nn.Module, HFParams]:
    """Merge LoRA adapters into the encoder and record its config, for a bundle that stands alone."""
    if not isinstance(model, PretrainedEncoder):
        return model, params
    model.encoder = encoder = merge_adapters(model.encoder, params.lora)
    config = encoder.config.to_dict()
    final = params.model_copy(update={"lora": None, "merged_lora": params.lora, "encoder_config": config})
    return model, final


ENTRY = register_architecture(
    ArchitectureEntry(
        "hf",
        ("text",),
        HFParams,
        build,
        finalize=finalize,
        tasks=("classification", "regression", "embedding"),
        transformer_blocks=True,
    )
)
