"""A bundle loaded for inference: its network (architecture + safetensors weights), its fitted
preprocessing and its label decoding, so that every later stage predicts exactly as training evaluated."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelcycle.bundle import Bundle
from modelcycle.config import PipelineConfig
from modelcycle.data import (
    Dataset,
    Preprocessor,
    TargetEncoder,
    load_dataset,
    preprocessor_from_state,
    split_dataset,
    target_encoder_from_state,
)
from modelcycle.data.corpus import LINE_BREAK, CorpusBlocks
from modelcycle.data.detokenize import Detokenizer
from modelcycle.data.state import PREPROCESS_FILE, PreprocessFile
from modelcycle.errors import BundleError, ConfigError
from modelcycle.inference import predict
from modelcycle.models import ARCHITECTURES
from modelcycle.tasks import TASKS, Task


@dataclass(frozen=True)
class ModelTensors:
    """What a dataset becomes for a model: its inputs, the targets training fits (encoded or standardised),
    and the targets metrics compare with (class ids, values in their own units, next tokens)."""

    inputs: dict[str, np.ndarray]
    training_targets: np.ndarray
    metric_targets: np.ndarray


def model_tensors(preprocessor: Preprocessor, encoder: TargetEncoder, dataset: Dataset) -> ModelTensors:
    if isinstance(preprocessor, CorpusBlocks):
        inputs, next_tokens = preprocessor.blocks(dataset)
        return ModelTensors(inputs, next_tokens, next_tokens)
    inputs = preprocessor.transform(dataset)
    return ModelTensors(inputs, encoder.transform(dataset), encoder.metric_targets(dataset))


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics without the values that are undefined for this data (e.g. R² of a single row)."""
    return {key: value for key, value in metrics.items() if math.isfinite(value)}


def build_network(bundle: Bundle) -> nn.Module:
    """The bundle's architecture with fresh (untrained) weights."""
    manifest = bundle.manifest
    entry = ARCHITECTURES.get(manifest.architecture.name, field=f"{bundle.path}: architecture.name")
    params = entry.check_params(manifest.architecture.params)
    return entry.build(manifest.inputs, manifest.outputs.tensors[0].shape[-1], params)


@dataclass(frozen=True)
class Predictor:
    bundle: Bundle
    model: nn.Module
    preprocessor: Preprocessor
    encoder: TargetEncoder
    task: Task

    @classmethod
    def load(
        cls, bundle: Bundle, device: torch.device | str = "cpu", *, network: nn.Module | None = None
    ) -> Predictor:
        """The bundle's preprocessing and decoding around its own weights, or around ``network`` (a variant
        of them: the base weights are then never read)."""
        manifest = bundle.manifest
        if network is None:
            network = build_network(bundle)
            try:
                network.load_state_dict(bundle.state_dict())
            except RuntimeError as error:
                raise BundleError(f"{bundle.path}: weights do not fit the architecture ({error})") from None
        model = network.to(device).eval()
        state = PreprocessFile.read(bundle.read_json(PREPROCESS_FILE), f"{bundle.path}/{PREPROCESS_FILE}")
        preprocessor = preprocessor_from_state(state.features, base_dir=bundle.path)
        encoder = target_encoder_from_state(state.target.model_dump())
        return cls(bundle, model, preprocessor, encoder, TASKS.get(manifest.task)())

    def outputs(self, dataset: Dataset) -> np.ndarray:
        """Network outputs for every row, in the target's units: logits (N, K) or values (N, 1)."""
        return self.encoder.inverse(predict(self.model, self.preprocessor.transform(dataset)))

    def measure(self, dataset: Dataset) -> dict[str, float]:
        """The task's metrics on a dataset, computed exactly as training measured them."""
        tensors = model_tensors(self.preprocessor, self.encoder, dataset)
        return finite(
            self.task.measure(self.model, tensors.inputs, tensors.metric_targets, self.encoder.inverse)
        )


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


def generate(
    predictor: Predictor,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Generation:
    """Continue ``prompt`` with a language-model bundle; the same ``seed`` gives the same text."""
    stream = stream_text(
        predictor,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    text = "".join(stream)
    return Generation(text, stream.prompt_tokens, stream.completion_tokens)


@dataclass
class TextStream:
    """A generation in progress: iterating yields the text piece by piece as tokens are chosen; the counts
    and ``finish_reason`` ("stop": the end-of-turn token or a stop string; "length") are final afterwards."""

    pieces: Iterator[str]
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "length"

    def __iter__(self) -> Iterator[str]:
        return self.pieces


def prompt_ids(bundle: Bundle, preprocessor: CorpusBlocks, prompt: str) -> np.ndarray:
    """A prompt's token ids (an empty prompt is a line break); a prompt of no token the model knows is an
    error."""
    ids = preprocessor.stream(prompt or LINE_BREAK)
    if len(ids) == 0:
        raise ConfigError(
            f"prompt: {prompt!r} holds no token {bundle.ref} knows",
            hint="give a prompt with words from the training text",
        )
    return ids


def stream_text(
    predictor: Predictor,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
) -> TextStream:
    """Continue ``prompt`` token by token; stops at the model's end-of-turn token or at a ``stop`` string
    (neither is part of the text)."""
    preprocessor = predictor.preprocessor
    next_tokens = getattr(predictor.model, "tokens", None)
    if not isinstance(preprocessor, CorpusBlocks) or not callable(next_tokens):
        raise ConfigError(
            f"{predictor.bundle.ref}: a {predictor.bundle.manifest.task} model does not generate text",
            hint="generate with a language-model bundle, e.g. tiny-gpt",
        )
    ids = prompt_ids(predictor.bundle, preprocessor, prompt)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    stop_token = preprocessor.stop_token()
    tokens = next_tokens(
        torch.from_numpy(ids)[None],
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        stop_token=stop_token,
    )
    result = TextStream(iter(()), prompt_tokens=len(ids))
    text = Detokenizer(preprocessor, stop)

    def pieces() -> Iterator[str]:
        for token in tokens:
            result.completion_tokens += 1
            piece = text.push(int(token))
            if piece:
                yield piece
            if text.finish_reason is not None:
                result.finish_reason = text.finish_reason
                return
        if held := text.flush():  # the token limit: what might have begun a stop string goes out too
            yield held

    result.pieces = pieces()
    return result


def training_split(bundle: Bundle, part: str = "test") -> Dataset:
    """A part (train / valid / test) of the data the bundle was trained on, rebuilt from its ``config.json``;
    splits are deterministic, so these are the very rows its metrics came from."""
    try:
        config = PipelineConfig.model_validate(bundle.read_json("config.json"))
    except BundleError:
        raise BundleError(
            f"{bundle.ref}: the bundle has no training config (imported?)",
            hint="name the data to use",
            parameter="data",
        ) from None
    dataset = load_dataset(config.data, seed=config.seed)
    return dataset.take(split_dataset(dataset, config.data.split, config.seed).parts()[part])


def held_out_split(bundle: Bundle) -> tuple[str, Dataset]:
    """The rows a version's variants are judged and timed on: its validation split, or its test split when
    it has no validation rows. An imported bundle has neither (BundleError)."""
    validation = training_split(bundle, "valid")
    return ("valid", validation) if len(validation) else ("test", training_split(bundle, "test"))
