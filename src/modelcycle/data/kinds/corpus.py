"""Corpora for language models: lines of one document, profiled as texts; a language model is asked with
prompts (not instances) and explained from them, token by token for the next token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelcycle.config import PreprocessConfig
from modelcycle.data.corpus import CorpusPreprocessor, PretrainedCorpusPreprocessor
from modelcycle.data.dataset import Dataset
from modelcycle.data.kinds.base import INPUT_KINDS, AttributedThrough
from modelcycle.data.kinds.text import TextKind
from modelcycle.data.preprocess import Preprocessor
from modelcycle.data.text import WORD_TOKENIZERS
from modelcycle.errors import RequestError
from modelcycle.schema import InputSchema


class CorpusKind(TextKind):
    name = "corpus"
    embedded = False
    attributed_through: AttributedThrough = "prompt"
    state_kinds: Mapping[str, type[Preprocessor]] = {
        "corpus": CorpusPreprocessor,
        "pretrained_corpus": PretrainedCorpusPreprocessor,
    }

    def preprocessor(self, config: PreprocessConfig) -> Preprocessor:
        text = config.text
        if text.tokenizer not in WORD_TOKENIZERS:
            return PretrainedCorpusPreprocessor(text.tokenizer, text.max_length)
        return CorpusPreprocessor(
            text.tokenizer, text.max_length, text.vocab_size, text.min_frequency, text.lowercase
        )

    def decode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Dataset:
        raise RequestError(
            "instances: a language model takes prompts, not instances",
            hint="use /v1/completions for a language model",
        )

    def accepts(self, instance: Any, schema: InputSchema) -> bool:
        return False  # a language model's stored prompts are not instances a dataset is rebuilt from


INPUT_KINDS.register("corpus")(CorpusKind())
