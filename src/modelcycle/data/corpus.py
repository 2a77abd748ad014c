"""A corpus for language modelling: its lines joined into one token stream (characters or words, with a
vocabulary fitted on the training part), cut into blocks whose targets are the same tokens shifted by one."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import numpy as np

from modelcycle.data.dataset import Dataset
from modelcycle.data.estimator import Estimator
from modelcycle.data.text import CHAT_TEMPLATE, TextPreprocessor, TokenizerFiles
from modelcycle.errors import DataError, RequestError
from modelcycle.schema import FeatureSpec, InputSchema, TensorSpec

if TYPE_CHECKING:
    import jinja2

LINE_BREAK = "\n"


class CorpusBlocks:
    """A corpus's lines joined into one token stream and cut into training blocks. ``max_length`` is the
    block size: the context a model is trained on."""

    max_length: int

    def stream(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: list[int] | np.ndarray) -> str:
        raise NotImplementedError

    def vocabulary_size(self) -> int:
        raise NotImplementedError

    def stop_token(self) -> int | None:
        """The id that ends a reply (a chat model's end-of-turn token); None: generation runs to its limit."""
        return None

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Chat messages as the text the model continues. Without a chat template of its own the turns are
        written as ``role: content`` lines, ending with ``assistant:``."""
        lines = [f"{message['role']}: {message['content']}" for message in messages]
        return LINE_BREAK.join([*lines, "assistant:"])

    def _joined(self, dataset: Dataset) -> str:
        return LINE_BREAK.join(dataset.frame[dataset.features[0]].fillna("").astype(str))

    def blocks(self, dataset: Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Non-overlapping blocks of ``max_length`` tokens and their next tokens, both (N, max_length)."""
        ids = self.stream(self._joined(dataset))
        count = (len(ids) - 1) // self.max_length
        if count == 0:
            raise DataError(
                f"{dataset.source}: {len(ids)} tokens are too few for one block of {self.max_length}",
                hint="use more text or a smaller data.preprocess.text.max_length",
            )
        usable = count * self.max_length
        inputs = ids[:usable].reshape(count, self.max_length)
        targets = ids[1 : usable + 1].reshape(count, self.max_length)
        return {"input_ids": inputs}, targets

    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]:
        return self.blocks(dataset)[0]

    def input_schema(self) -> InputSchema:
        return InputSchema(
            kind="corpus",
            features=[FeatureSpec(name="text", type="text")],
            tensors=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])],
            vocab_size=self.vocabulary_size(),
        )


class CorpusPreprocessor(CorpusBlocks, TextPreprocessor):
    """Characters or words, with a vocabulary fitted on the training part."""

    kind = "corpus"

    def __init__(
        self,
        tokenizer: str = "char",
        max_length: int = 128,
        vocab_size: int = 20_000,
        min_frequency: int = 1,
        lowercase: bool = False,
    ) -> None:
        super().__init__(tokenizer, max_length, vocab_size, min_frequency, lowercase)

    vocabulary_size = TextPreprocessor.vocabulary_size  # CorpusBlocks comes first in the MRO

    def fit(self, dataset: Dataset) -> CorpusPreprocessor:
        self.fit_texts([self._joined(dataset)])
        return self

    def stream(self, text: str) -> np.ndarray:
        """Token ids of a text, unknown tokens as id 1, int64 (tokens,)."""
        index = {token: position for position, token in enumerate(self.vocabulary_)}
        return np.asarray([index.get(token, 1) for token in self.tokenize(text)], dtype=np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Text of token ids (words are joined by spaces); padding is skipped."""
        tokens = [self.vocabulary_[int(token)] for token in ids if int(token) != 0]
        return ("" if self.tokenizer == "char" else " ").join(tokens)


class PretrainedCorpusPreprocessor(TokenizerFiles, CorpusBlocks, Estimator):
    """A pretrained language model's own tokenizer (a checkpoint folder, a GGUF file or a built-in name)."""

    kind = "pretrained_corpus"

    def __init__(self, tokenizer: str, max_length: int = 128) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def fit(self, dataset: Dataset) -> PretrainedCorpusPreprocessor:
        self.locate()
        return self

    def stream(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return str(self._tokenizer.decode([int(token) for token in ids]))

    def stop_token(self) -> int | None:
        eos = self._special_tokens.get("eos_token")
        return self._tokenizer.token_to_id(eos) if isinstance(eos, str) else None

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template (``chat_template.jinja``, rendered as Hugging Face renders it), or
        the plain layout when it has none. A template that refuses the messages (its ``raise_exception``,
        e.g. roles that do not alternate) or fails on them is the request's error, naming the messages."""
        if self._chat_template is None:
            return super().chat_prompt(messages)
        import jinja2

        try:
            return self._chat_template.render(
                messages=messages, add_generation_prompt=True, **self._special_tokens
            )
        except jinja2.TemplateError as error:
            raise RequestError(
                f"messages: the model's chat template refused them ({error.message})", parameter="messages"
            ) from None

    @functools.cached_property
    def _chat_template(self) -> jinja2.Template | None:
        """The template compiled once (a request paid a read and a compile each), in Jinja's immutable
        sandbox, with Hugging Face's ``raise_exception``."""
        template = self._directory / CHAT_TEMPLATE
        if not template.is_file():
            return None
        import jinja2.sandbox

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = raise_exception
        return environment.from_string(template.read_text(encoding="utf-8"))

    @functools.cached_property
    def _special_tokens(self) -> dict[str, str]:
        config = self._directory / "tokenizer_config.json"
        if not config.is_file():
            return {}
        raw = json.loads(config.read_text(encoding="utf-8"))
        return {key: value for key, value in raw.items() if key.endswith("_token") and isinstance(value, str)}
