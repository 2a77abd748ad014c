"""Texts: one string per instance (or ``{"<feature>": string}``), token ids for the model; explained per
token through the embedding layer, drift through lengths and the model's embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.config import PreprocessConfig
from modelcycle.data.dataset import Dataset
from modelcycle.data.kinds.base import INPUT_KINDS, AttributedThrough, AttributionForm, Decoded, Tensors
from modelcycle.data.preprocess import Preprocessor
from modelcycle.data.reference import FeatureProfile, text_profile
from modelcycle.data.text import WORD_TOKENIZERS, PretrainedTextPreprocessor, TextEncoder, TextPreprocessor
from modelcycle.errors import BundleError, RequestError
from modelcycle.schema import InputSchema


class TextKind(Decoded):
    name = "text"
    embedded = True
    attributed_through: AttributedThrough = "embedding"
    attribution_form: AttributionForm = "tokens"
    state_kinds: Mapping[str, type[Preprocessor]] = {
        "text": TextPreprocessor,
        "pretrained_text": PretrainedTextPreprocessor,
    }

    def preprocessor(self, config: PreprocessConfig) -> Preprocessor:
        text = config.text
        if text.tokenizer in WORD_TOKENIZERS:
            return TextPreprocessor(
                text.tokenizer, text.max_length, text.vocab_size, text.min_frequency, text.lowercase
            )
        return PretrainedTextPreprocessor(text.tokenizer, text.max_length)

    def decode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Dataset:
        """Strings no longer than ``max_text_chars`` and than the model reads (a longer text is refused, not
        silently cut)."""
        (feature,) = [feature.name for feature in schema.features if feature.type == "text"] or ["text"]
        texts = []
        for index, instance in enumerate(instances):
            text = instance.get(feature) if isinstance(instance, dict) else instance
            if not isinstance(text, str):
                raise RequestError(f"instances[{index}]: a string (or {{'{feature}': string}}) is required")
            if len(text) > max_text_chars:
                raise RequestError(
                    f"instances[{index}]: {len(text)} characters, over the limit of {max_text_chars}"
                )
            texts.append(text)
        if isinstance(preprocessor, TextEncoder):
            limit = preprocessor.max_length
            for index, text in enumerate(texts):
                count = preprocessor.token_count(text)
                if count > limit:
                    raise RequestError(f"instances[{index}]: {count} tokens, the model reads at most {limit}")
        return Dataset("request", "text", None, pd.DataFrame({feature: texts}), None, {feature: "text"})

    def accepts(self, instance: Any, schema: InputSchema) -> bool:
        return isinstance(instance, str)

    def instances(self, dataset: Dataset) -> list[Any]:
        texts: list[Any] = dataset.frame[dataset.features[0]].astype(str).tolist()
        return texts

    def profile(self, dataset: Dataset) -> dict[str, FeatureProfile]:
        return {name: text_profile(dataset.frame[name].fillna("").astype(str)) for name in dataset.features}

    def drift_columns(self, dataset: Dataset) -> dict[str, Sequence[Any]]:
        return {name: dataset.frame[name].fillna("").astype(str).tolist() for name in dataset.features}

    def attribution_shape(
        self, preprocessor: Preprocessor, inputs: Tensors, row: int, values: np.ndarray
    ) -> Any:
        """[[token, value], …] for the row's tokens, padding left out."""
        if not isinstance(preprocessor, TextEncoder):
            raise BundleError(f"a text model's preprocessing is '{preprocessor.kind}', not a tokenizer")
        ids = next(iter(inputs.values()))[row]
        mask = inputs["attention_mask"][row] if "attention_mask" in inputs else np.ones_like(ids)
        kept = [position for position, flag in enumerate(mask.tolist()) if flag]
        tokens = preprocessor.token_strings([int(ids[position]) for position in kept])
        return [[token, float(values[position])] for token, position in zip(tokens, kept, strict=True)]

    def feature_groups(self, preprocessor: Preprocessor, shape: tuple[int, ...]) -> np.ndarray:
        """Each token position on its own."""
        return np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape).copy()


INPUT_KINDS.register("text")(TextKind())
