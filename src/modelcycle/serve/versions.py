"""One version of a model in a server's memory: its bundle, the variant chosen to run, the predictor and its
own adaptive batcher, loaded and warmed (one call on a row of zeros) before it takes a request."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modelcycle.bench import choose_variant
from modelcycle.bundle import Bundle
from modelcycle.config import LlmConfig, ServeConfig
from modelcycle.data.corpus import CorpusBlocks
from modelcycle.data.reference import Reference
from modelcycle.engine import Engine
from modelcycle.errors import ConfigError
from modelcycle.inference import model_device
from modelcycle.instances import instance_tensors
from modelcycle.models.kv_cache import BatchDecoder
from modelcycle.monitor.embeddings import embed
from modelcycle.monitor.reference import output_width, read_reference
from modelcycle.predictor import Predictor
from modelcycle.runtime import BASE, load_predictor
from modelcycle.serve.batcher import Batcher, BatchStats, Tensors

BatchStatsHook = Callable[[str, list[str], BatchStats], None]  # (ref, labels the batch predicted, stats)
Run = Callable[[Tensors], np.ndarray]


@dataclass
class LoadedVersion:
    """One version in memory: its predictor (the chosen variant) and its batcher."""

    bundle: Bundle
    variant: str
    predictor: Predictor
    batcher: Batcher
    engine: Engine | None = None  # a language model's continuous batching (None: not one, or switched off)
    generating: asyncio.Lock = field(default_factory=asyncio.Lock)  # one generation at a time, without it
    analysis_lock: threading.Lock = field(default_factory=threading.Lock)  # guards torch_predictor

    @property
    def version(self) -> int:
        return int(self.bundle.manifest.version or 0)

    @functools.cached_property
    def reference(self) -> Reference:
        """The training data's profile (``reference.json``), what drift is measured against."""
        return read_reference(self.bundle)

    def embed_stored(self, rows: list[Any]) -> np.ndarray | None:
        """The model's embeddings of stored request rows (model-ready tensors by name, or instances as the
        caller sent them), for drift; None when the model has no output layer to read them from."""
        with self.analysis_lock:
            return self._embed_stored(rows)

    def _embed_stored(self, rows: list[Any]) -> np.ndarray | None:
        schema = self.bundle.manifest.inputs
        names = [spec.name for spec in schema.tensors]
        groups: dict[Any, list[Any]] = {}
        for row in rows:
            ready = isinstance(row, dict) and sorted(row) == sorted(names)
            key = tuple(np.shape(row[name]) for name in names) if ready else "instances"
            groups.setdefault(key, []).append(row)
        network, width = self.torch_predictor.model, output_width(self.bundle)
        parts = []
        for key, members in groups.items():
            if key == "instances":
                tensors = instance_tensors(members, self.predictor)
            else:
                tensors = {
                    spec.name: np.asarray([row[spec.name] for row in members], dtype=spec.dtype)
                    for spec in schema.tensors
                }
            embedded = embed(network, tensors, width)
            if embedded is None:  # no output layer to read embeddings from
                return None
            parts.append(embedded)
        return np.concatenate(parts) if parts else None

    @functools.cached_property
    def torch_predictor(self) -> Predictor:
        """The base weights in torch, for what needs gradients or hooks (explanations, embeddings): a copy
        of their own, loaded on first use, so a hook never touches a model that is answering requests.
        Whoever uses it holds ``analysis_lock``."""
        return Predictor.load(self.bundle)

    @property
    def runtime(self) -> str:
        return "torch" if self.variant == BASE else self.bundle.variant(self.variant).manifest.runtime

    async def infer(self, inputs: Tensors, timeout: float) -> np.ndarray:
        return await self.batcher.submit(inputs, timeout=timeout)

    async def close(self) -> None:
        """Answer what was accepted, then stop the batcher and the engine."""
        await self.batcher.close()
        if self.engine is not None:
            await self.engine.drain()


def pick_variant(bundle: Bundle, requested: str, *, force: bool = False) -> str:
    """``auto``: the measured choice (bench); a named variant must exist and have passed its gate unless
    ``force``d."""
    if requested == "auto":
        return choose_variant(bundle)
    if requested == BASE:
        return BASE
    verdict = bundle.variant(requested).manifest.verdict
    if verdict != "passed" and not force:
        raise ConfigError(
            f"{bundle.ref} variant {requested} has verdict '{verdict}' and is not served",
            hint="set serve.force_variant to serve it anyway",
            parameter="variant",
        )
    return requested


def load_version(
    bundle: Bundle, settings: ServeConfig, *, variant: str, on_batch: BatchStatsHook | None = None
) -> LoadedVersion:
    """Load and warm a version (one call on a row of zeros), ready to take requests."""
    chosen = pick_variant(bundle, variant, force=settings.force_variant)
    predictor = load_predictor(bundle, chosen)
    model = predictor.model

    @torch.inference_mode()
    def run(inputs: Tensors) -> np.ndarray:
        device = model_device(model)
        tensors = [torch.from_numpy(array).to(device) for array in inputs.values()]
        return model(*tensors).float().cpu().numpy()

    ref, task, coding = bundle.ref, predictor.task, predictor.encoder.coding

    def report(stats: BatchStats) -> None:
        # every label the task predicts in the batch: one per row, any number per row (multi-label), none
        # for values or tokens
        if on_batch is not None:
            on_batch(ref, task.predicted_labels(stats.outputs, coding) or [], stats)

    batcher = Batcher(
        run,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        max_queue=settings.max_queue,
        on_batch=report if on_batch is not None else None,
    )
    warm_up(predictor, run)
    return LoadedVersion(bundle, chosen, predictor, batcher, engine=start_engine(predictor, settings.llm))


def start_engine(predictor: Predictor, settings: LlmConfig) -> Engine | None:
    """A language model's engine, unless switched off or the model cannot decode in batches (an ONNX or
    other variant without a key / value cache: it generates one request at a time)."""
    model, preprocessor = predictor.model, predictor.preprocessor
    if (
        not settings.engine
        or not isinstance(preprocessor, CorpusBlocks)
        or not isinstance(model, BatchDecoder)
    ):
        return None
    return Engine(model, preprocessor, settings, model_device(model))


def warm_up(predictor: Predictor, run: Run) -> None:
    """One call on a zero row of the right shape, so the first request does not pay for lazy set-up."""
    schema = predictor.bundle.manifest.inputs
    row = {
        spec.name: np.zeros([1, *(size if size > 0 else 8 for size in spec.shape[1:])], dtype=spec.dtype)
        for spec in schema.tensors
    }
    run(row)
