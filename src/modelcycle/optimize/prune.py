"""Pruning: L1 unstructured (the smallest weights across every Linear / convolution, ranked globally) or
structured (whole output neurons / channels with the smallest L2 norm, per layer, the output layer spared),
optionally fine-tuned with the masks held, then made permanent so the saved weights carry plain zeros —
no mask buffers, no ``_orig`` tensors."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from modelcycle.bundle import Bundle
from modelcycle.bundle.io import save_weights
from modelcycle.config import PipelineConfig
from modelcycle.errors import ConfigError
from modelcycle.optimize.gate import Gate
from modelcycle.optimize.variant import OptimizeResult, Validation, add_gated_variant, refuse_existing
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.train import TensorSet
from modelcycle.train.finetune import finetune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
KINDS = {"l1-unstructured": "l1", "structured": "structured"}


@dataclass(frozen=True)
class PruneSpec:
    kind: str  # "l1-unstructured" or "structured"
    amount: float

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        """``l1-unstructured:0.5`` or ``structured:0.3``."""
        match = re.fullmatch(r"([a-z0-9-]+):([0-9.]+)", text.strip())
        if match is None or match.group(1) not in KINDS:
            raise ConfigError(
                f"'{text}' is not KIND:AMOUNT",
                hint="e.g. l1-unstructured:0.5 or structured:0.3",
                parameter="prune",
            )
        amount = float(match.group(2))
        if not 0.0 < amount < 1.0:
            raise ConfigError(f"amount {amount} must be between 0 and 1 (exclusive)", parameter="prune")
        return cls(match.group(1), amount)

    @property
    def variant(self) -> str:
        return f"pruned-{KINDS[self.kind]}-{round(self.amount * 100)}"


def prune_model(
    bundle: Bundle, spec: PruneSpec, *, finetune_epochs: int = 0, gate: Gate | None = None
) -> OptimizeResult:
    """Prune the base weights as ``spec`` says, fine-tune for ``finetune_epochs`` on the training split (the
    bundle's own training settings, best epoch by validation), gate, and write the ``pruned-…`` variant."""
    refuse_existing(bundle, spec.variant)
    predictor = Predictor.load(bundle)
    validation = Validation.of(predictor)
    model = predictor.model
    layers = _prunable(model)
    if not layers:
        raise ConfigError(f"{bundle.ref}: no Linear or convolution layer to prune")
    if spec.kind == "l1-unstructured":
        prune.global_unstructured(
            [(layer, "weight") for layer in layers], pruning_method=prune.L1Unstructured, amount=spec.amount
        )
    else:
        for layer in layers[:-1]:  # the output layer's rows are the classes: never remove one
            prune.ln_structured(layer, "weight", amount=spec.amount, n=2, dim=0)
            if layer.bias is not None:  # a removed neuron must output nothing, not its bias
                mask = layer.get_buffer("weight_mask")  # added by ln_structured
                prune.custom_from_mask(layer, "bias", mask.flatten(1).any(dim=1).float())
    if finetune_epochs:
        _finetune(predictor, validation, finetune_epochs)
    for layer in layers:
        for parameter in ("weight", "bias"):
            if prune.is_pruned(layer) and hasattr(layer, f"{parameter}_orig"):
                prune.remove(layer, parameter)
    model.cpu().eval()
    sparsity = _zero_fraction([layer.weight for layer in layers])
    overall = _zero_fraction(list(model.parameters()))
    return add_gated_variant(
        validation,
        gate or Gate(),
        name=spec.variant,
        method=f"prune-{spec.kind}",
        runtime="torch",
        params={
            "source": "base",
            "amount": spec.amount,
            "layers": len(layers),
            "finetune_epochs": finetune_epochs,
        },
        model=model,
        write=lambda folder: save_weights(model.state_dict(), folder / "weights.safetensors"),
        extra={"sparsity": sparsity, "sparsity_all_parameters": overall},
    )


def _prunable(model: nn.Module) -> list[nn.Linear | nn.Conv1d | nn.Conv2d]:
    return [module for module in model.modules() if isinstance(module, PRUNABLE)]


def _zero_fraction(tensors: list[torch.Tensor]) -> float:
    zeros = sum(tensor.numel() - int(torch.count_nonzero(tensor)) for tensor in tensors)
    return zeros / sum(tensor.numel() for tensor in tensors)


def _finetune(predictor: Predictor, validation: Validation, epochs: int) -> None:
    """Train the masked network a few more epochs on its own training rows and settings."""
    bundle = predictor.bundle
    config = PipelineConfig.model_validate(bundle.read_json("config.json"))
    rows = model_tensors(predictor.preprocessor, predictor.encoder, training_split(bundle, "train"))
    training = TensorSet(rows.inputs, rows.training_targets)
    finetune(
        predictor.model,
        predictor.task,
        training,
        config.train,
        epochs=epochs,
        seed=config.seed,
        validate=validation.measure,
    )
