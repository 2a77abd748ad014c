"""The versions of one model a server holds — the primary, an optional canary taking a share of traffic and an
optional shadow receiving a mirror of it — each loaded, warmed and batched on its own. Changing them swaps a
reference (atomic in the event loop); the replaced version drains its accepted requests and is then closed,
so a promotion fails no request, and a version that cannot load leaves the old one serving."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modelcycle.bench import choose_variant
from modelcycle.bundle import Bundle
from modelcycle.config import ServeConfig
from modelcycle.errors import ConfigError, ModelcycleError, NotFoundError
from modelcycle.inference import model_device
from modelcycle.instances import instance_tensors
from modelcycle.monitor.embeddings import embed
from modelcycle.monitor.reference import output_width
from modelcycle.predictor import Predictor
from modelcycle.runtime import BASE, load_predictor
from modelcycle.serve.batcher import Batcher, BatchStats, Tensors

BatchStatsHook = Callable[[str, list[str], BatchStats], None]  # (ref, class names, stats)
Run = Callable[[Tensors], np.ndarray]


@dataclass
class LoadedVersion:
    """One version in memory: its predictor (the chosen variant) and its batcher."""

    bundle: Bundle
    variant: str
    predictor: Predictor
    batcher: Batcher
    generating: asyncio.Lock = field(default_factory=asyncio.Lock)  # one text generation at a time
    analysis_lock: threading.Lock = field(default_factory=threading.Lock)  # guards torch_predictor

    @property
    def version(self) -> int:
        return int(self.bundle.manifest.version or 0)

    @functools.cached_property
    def reference(self) -> dict[str, Any]:
        """The training data's profile (``reference.json``), what drift is measured against."""
        reference: dict[str, Any] = self.bundle.read_json("reference.json")
        return reference

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
            f"--variant: {bundle.ref} variant {requested} has verdict '{verdict}' and is not served",
            hint="pass --force to serve it anyway",
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

    ref, classes = bundle.ref, predictor.encoder.classes_
    batcher = Batcher(
        run,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        max_queue=settings.max_queue,
        on_batch=(lambda stats: on_batch(ref, classes, stats)) if on_batch is not None else None,
    )
    warm_up(predictor, run)
    return LoadedVersion(bundle, chosen, predictor, batcher)


def warm_up(predictor: Predictor, run: Run) -> None:
    """One call on a zero row of the right shape, so the first request does not pay for lazy set-up."""
    schema = predictor.bundle.manifest.inputs
    row = {
        spec.name: np.zeros([1, *(size if size > 0 else 8 for size in spec.shape[1:])], dtype=spec.dtype)
        for spec in schema.tensors
    }
    run(row)


@dataclass
class ServedModel:
    """What answers requests for one model name."""

    name: str
    primary: LoadedVersion
    canary: LoadedVersion | None = None
    canary_percent: float = 0.0
    shadow: LoadedVersion | None = None
    previous: list[int] = field(default_factory=list)  # earlier primaries, for rollback
    shadow_requests: int = 0
    shadow_disagreements: int = 0
    _retired: set[asyncio.Task[None]] = field(default_factory=set)

    def route(self, version: int | None = None) -> LoadedVersion:
        """The version that answers: a requested one (if loaded), else the canary for its share, else the
        primary."""
        if version is not None:
            for loaded in (self.primary, self.canary, self.shadow):
                if loaded is not None and loaded.version == version:
                    return loaded
            raise NotFoundError(f"model '{self.name}' version {version} is not loaded on this server")
        if self.canary is not None and random.random() * 100 < self.canary_percent:
            return self.canary
        return self.primary

    def versions(self) -> list[LoadedVersion]:
        return [loaded for loaded in (self.primary, self.canary, self.shadow) if loaded is not None]

    def retire(self, loaded: LoadedVersion | None) -> None:
        """Let a replaced version finish what it accepted, then close it (in the background)."""
        if loaded is None or any(loaded is live for live in self.versions()):
            return
        task = asyncio.get_running_loop().create_task(loaded.batcher.close())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def mirror(self, encode: Callable[[LoadedVersion], Tensors], answer: np.ndarray, timeout: float) -> None:
        """Send a copy to the shadow; its answer is compared (argmax) with the primary's and discarded."""
        shadow = self.shadow
        if shadow is None:
            return

        async def compare() -> None:
            try:
                theirs = await shadow.infer(encode(shadow), timeout)
            except ModelcycleError:
                return
            self.shadow_requests += 1
            if theirs.shape != answer.shape or not np.array_equal(theirs.argmax(-1), answer.argmax(-1)):
                self.shadow_disagreements += 1

        task = asyncio.get_running_loop().create_task(compare())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        for loaded in self.versions():
            await loaded.batcher.close()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
