"""Text to token ids: a vocabulary of words or characters fitted on the training split (for models trained
from scratch), or the tokenizer of a pretrained model read from its ``tokenizer.json`` (a local checkpoint
directory, or ``builtin:minilm``), which is copied into the bundle so that it stands alone."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from modelcycle.data.dataset import Dataset
from modelcycle.data.estimator import Estimator
from modelcycle.errors import BundleError, DataError
from modelcycle.packages import BUILTIN_GGUF, causal_lm_source, model_directory
from modelcycle.schema import FeatureSpec, InputSchema, TensorSpec

PAD, UNKNOWN = "[PAD]", "[UNK]"
WORD_TOKENIZERS = ("word", "char")
_WORD = re.compile(r"\w+|[^\w\s]")
CHAT_TEMPLATE = "chat_template.jinja"
# The chat template travels too: serving a chat model needs it (transformers 5 writes it as its own file).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    CHAT_TEMPLATE,
)
BUNDLE_TOKENIZER_DIR = "tokenizer"
# Every text model takes the same two tensors, whichever tokenizer made them.
TEXT_INPUTS = InputSchema(
    kind="text",
    features=[FeatureSpec(name="text", type="text")],
    tensors=[
        TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1]),
        TensorSpec(name="attention_mask", dtype="int64", shape=[-1, -1]),
    ],
)


class TextEncoder(Estimator, ABC):
    """Shared by both tokenizers: the dataset's single text column in, ``TEXT_INPUTS`` out."""

    max_length: int

    @abstractmethod
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask``, int64 (len(texts), sequence)."""

    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]:
        return self.encode(_texts_of(dataset))

    def input_schema(self) -> InputSchema:
        return TEXT_INPUTS.model_copy(update={"vocab_size": self.vocabulary_size()})

    @abstractmethod
    def vocabulary_size(self) -> int:
        """How many token ids there are."""

    @abstractmethod
    def token_count(self, text: str) -> int:
        """How many tokens ``text`` is before the cut at ``max_length`` (serving refuses longer texts rather
        than answer about a part of them)."""

    @abstractmethod
    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The token each id stands for (to show which words an explanation is about)."""

    @abstractmethod
    def pad_id(self) -> int:
        """The id that means "no token" (the baseline of a text explanation)."""


class TextPreprocessor(TextEncoder):
    """Text to token ids with a vocabulary fitted on the training split: words (``\\w+`` and punctuation) or
    characters. Id 0 pads, id 1 is unknown; sequences are cut at ``max_length``."""

    kind = "text"

    def __init__(
        self,
        tokenizer: str = "word",
        max_length: int = 128,
        vocab_size: int = 20_000,
        min_frequency: int = 1,
        lowercase: bool = True,
    ) -> None:
        if tokenizer not in ("word", "char"):
            raise DataError(
                f"data.preprocess.text.tokenizer: unknown tokenizer '{tokenizer}'",
                hint="use 'word' or 'char'",
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        text = text.lower() if self.lowercase else text
        return _WORD.findall(text) if self.tokenizer == "word" else list(text)

    def fit(self, dataset: Dataset) -> TextPreprocessor:
        return self.fit_texts(_texts_of(dataset))

    def fit_texts(self, texts: list[str]) -> TextPreprocessor:
        """The vocabulary: [PAD], [UNK], then the most frequent tokens (ties in text order)."""
        counts = Counter(token for text in texts for token in self.tokenize(text))
        ranked = sorted(
            (item for item in counts.items() if item[1] >= self.min_frequency),
            key=lambda item: (-item[1], item[0]),
        )
        self.vocabulary_ = [PAD, UNKNOWN] + [token for token, _ in ranked[: self.vocab_size - 2]]
        return self

    def vocabulary_size(self) -> int:
        return len(self.vocabulary_)

    def token_count(self, text: str) -> int:
        return len(self.tokenize(text))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.vocabulary_[index] if 0 <= index < len(self.vocabulary_) else UNKNOWN for index in ids]

    def pad_id(self) -> int:
        return 0

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``input_ids`` (len(texts), longest ≤ max_length) int64, right-padded with 0, and the matching
        ``attention_mask`` (1 for tokens, 0 for padding)."""
        index = {token: position for position, token in enumerate(self.vocabulary_)}
        rows = [[index.get(token, 1) for token in self.tokenize(text)][: self.max_length] for text in texts]
        ids = np.zeros((len(rows), max(1, max(map(len, rows), default=1))), dtype=np.int64)
        for position, row in enumerate(rows):
            ids[position, : len(row)] = row
        return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


def _texts_of(dataset: Dataset) -> list[str]:
    column = dataset.features[0]
    return dataset.frame[column].fillna("").astype(str).tolist()


def resolve_tokenizer_dir(name: str) -> Path:
    """The folder holding ``tokenizer.json`` for a model name or path. A GGUF model's tokenizer lives inside
    its file, so it is written out (by transformers) once per version of that file, to the user's cache,
    where later runs find it: a temporary folder per run was left behind by every run."""
    if name in BUILTIN_GGUF or name.endswith(".gguf"):
        folder, gguf_file = causal_lm_source(name, field="data.preprocess.text.tokenizer")
        assert gguf_file is not None
        source = (folder / gguf_file).resolve()
        stat = source.stat()
        key = hashlib.sha256(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = _cache_dir() / f"{source.stem}-{key}"
        if not (target / "tokenizer.json").is_file():
            _write_gguf_tokenizer(folder, gguf_file, target)
        return target
    return model_directory(name, "tokenizer.json", field="data.preprocess.text.tokenizer")


def _cache_dir() -> Path:
    """Per user, as Hugging Face's cache is: a folder under a shared /tmp could be another user's to fill."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelcycle" / "tokenizers"


def _write_gguf_tokenizer(folder: Path, gguf_file: str, target: Path) -> None:
    """Written beside ``target`` and renamed into place: a concurrent or crashed run never leaves a half
    folder where another looks."""
    import transformers  # heavy: only for GGUF tokenizers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            folder, gguf_file=gguf_file, local_files_only=True
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)  # one left incomplete (by a cleaner, say) is replaced
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not (target / "tokenizer.json").is_file():  # not another run's rename winning the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class TokenizerFiles:
    """A pretrained tokenizer read from ``tokenizer.json`` with the ``tokenizers`` library: found when fitted,
    copied into the bundle, and loaded from the bundle afterwards."""

    tokenizer: str
    source_dir_: str
    _tokenizer: Tokenizer
    _directory: Path

    def locate(self) -> None:
        self.source_dir_ = str(resolve_tokenizer_dir(self.tokenizer))
        self._load(Path(self.source_dir_))

    def load_from(self, bundle_dir: Path | None) -> None:
        """Load the tokenizer copied into a bundle (or, outside a bundle, from where it was fitted)."""
        directory = bundle_dir / BUNDLE_TOKENIZER_DIR if bundle_dir is not None else Path(self.source_dir_)
        if not (directory / "tokenizer.json").is_file():
            raise BundleError(f"{directory}: the bundle's tokenizer.json is missing")
        self._load(directory)

    def _load(self, directory: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._directory = directory  # where its other files (template, special tokens) are

    def copy_files(self, bundle_dir: Path) -> None:
        """Copy the tokenizer's files into ``bundle_dir/tokenizer`` so the bundle stands alone."""
        target = bundle_dir / BUNDLE_TOKENIZER_DIR
        target.mkdir()
        for name in TOKENIZER_FILES:
            source = Path(self.source_dir_) / name
            if source.is_file():
                shutil.copy2(source, target / name)

    def vocabulary_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())


class PretrainedTextPreprocessor(TokenizerFiles, TextEncoder):
    """A pretrained model's own tokenizer, cut at ``max_length`` and padded to the longest text of each call;
    outputs ``input_ids`` and ``attention_mask``."""

    kind = "pretrained_text"

    def __init__(self, tokenizer: str, max_length: int = 128) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def fit(self, dataset: Dataset) -> PretrainedTextPreprocessor:
        """Nothing is learned from the data; the tokenizer's files are located and loaded."""
        self.locate()
        return self

    def _load(self, directory: Path) -> None:
        super()._load(directory)
        padding = self._tokenizer.padding or {}
        self._tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", PAD)
        )
        self._tokenizer.enable_truncation(self.max_length)

    def token_count(self, text: str) -> int:
        encoding = self._tokenizer.encode(text)
        return len(encoding.ids) + sum(len(part.ids) for part in encoding.overflowing)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(index)) or "" for index in ids]

    def pad_id(self) -> int:
        return int((self._tokenizer.padding or {}).get("pad_id", 0))

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(texts)
        return {
            "input_ids": np.asarray([encoding.ids for encoding in encodings], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask for encoding in encodings], dtype=np.int64),
        }
