"""Language modelling: next-token cross-entropy; loss, perplexity and next-token accuracy measured in
batches (a vocabulary of tens of thousands makes holding every logit impractical)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from modelcycle.inference import model_device, to_tensors
from modelcycle.schema import TensorSpec
from modelcycle.tasks.base import TASKS, Decoder, TargetCoding, TaskDefaults

# Logits held at once while measuring: rows per batch = this / (positions × vocabulary), so a 49k-token
# vocabulary at 512 positions is measured a row at a time (~100 MB) instead of 16 rows (1.6 GB).
EVALUATION_LOGITS = 32 * 1024 * 1024


@TASKS.register("language_modeling")
class LanguageModeling(TaskDefaults):
    name = "language_modeling"
    primary_metric = "perplexity"
    ordered_rows = True
    row_outputs = False

    def __init__(self, class_weights: list[float] | None = None) -> None:
        del class_weights  # tokens are not weighted

    def output_dim(self, num_classes: int) -> int:
        return num_classes  # the vocabulary

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every position: ``outputs`` (B, T, V) logits, ``targets`` (B, T) ids."""
        return nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten())

    def metrics(self, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        nll, correct = self._sums(torch.from_numpy(outputs), torch.from_numpy(targets))
        return self._summary(nll, correct, targets.size)

    @torch.no_grad()
    def measure(
        self, model: nn.Module, inputs: dict[str, np.ndarray], targets: np.ndarray, decode: Decoder
    ) -> dict[str, float]:
        """Loss (mean negative log-likelihood per token, nats), perplexity = exp(loss), next-token accuracy;
        batched, so the logits of a large vocabulary are never all held at once."""
        del decode  # logits need no decoding
        model.eval()
        device = model_device(model)
        total_nll, total_correct = 0.0, 0
        start, rows_per_batch = 0, 1  # one row first, to learn the vocabulary's width
        while start < len(targets):
            rows = slice(start, start + rows_per_batch)
            logits = model(*to_tensors(inputs, rows, device))
            nll, correct = self._sums(logits, torch.from_numpy(targets[rows]).to(device))
            total_nll, total_correct = total_nll + nll, total_correct + correct
            start += rows_per_batch
            rows_per_batch = max(1, EVALUATION_LOGITS // (logits.shape[1] * logits.shape[2]))
        return self._summary(total_nll, total_correct, targets.size)

    @staticmethod
    def _sums(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        """Summed in float32 per batch and accumulated by the caller in Python floats (double precision)."""
        nll = nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        return float(nll), int((logits.argmax(dim=-1) == targets).sum())

    @staticmethod
    def _summary(nll: float, correct: int, tokens: int) -> dict[str, float]:
        loss = nll / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / tokens}

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (-metrics["loss"],)

    def output_tensors(self, num_classes: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, -1, num_classes])]

    def num_outputs(self, coding: TargetCoding, vocabulary: int | None) -> int:
        return vocabulary or 0

    def agreement(self, expected: np.ndarray, got: np.ndarray) -> float:
        """The share of positions whose most likely next token is the same."""
        return float(np.mean(expected.argmax(axis=-1) == got.argmax(axis=-1)))
