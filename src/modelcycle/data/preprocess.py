"""Preprocessing fitted on the training split only, with scikit-learn's semantics (a test checks the output
against SimpleImputer / StandardScaler / OneHotEncoder) and state that serialises to JSON for the bundle.

Learned attributes end in ``_``; ``state()`` / ``from_state()`` round-trip them exactly.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Protocol

import numpy as np
import pandas as pd

from modelcycle.config import PreprocessConfig
from modelcycle.data.columns import label_text
from modelcycle.data.dataset import Dataset
from modelcycle.errors import BundleError, DataError
from modelcycle.schema import DataKind, FeatureSpec, InputSchema, TensorSpec

MISSING_CATEGORY = "__missing__"
PAD, UNKNOWN = "[PAD]", "[UNK]"
_WORD = re.compile(r"\w+|[^\w\s]")


class Preprocessor(Protocol):
    """Turns a dataset's features into the named float / int arrays a network takes."""

    def fit(self, dataset: Dataset) -> Preprocessor: ...
    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]: ...
    def input_schema(self) -> InputSchema: ...
    def state(self) -> dict[str, Any]: ...


class TabularPreprocessor:
    """Numeric columns: impute (median / mean) then standardize. Categorical columns: the most frequent
    ``max_categories`` values become one-hot columns (or ordinal ids), everything else one unknown bucket."""

    kind: DataKind = "tabular"

    def __init__(
        self,
        impute_numeric: str = "median",
        standardize: bool = True,
        categorical: str = "onehot",
        max_categories: int = 50,
    ) -> None:
        self.impute_numeric = impute_numeric
        self.standardize = standardize
        self.categorical = categorical
        self.max_categories = max_categories

    def fit(self, dataset: Dataset) -> TabularPreprocessor:
        self.numeric_: dict[str, dict[str, float]] = {}
        self.categories_: dict[str, list[str]] = {}
        for name, kind in dataset.feature_types.items():
            column = dataset.frame[name]
            if kind == "numeric":
                values = column.to_numpy(dtype=np.float64)
                present = values[~np.isnan(values)]
                if present.size == 0:
                    raise DataError(
                        f"{dataset.source}: numeric column '{name}' has no values in the training split"
                    )
                fill = float(np.median(present) if self.impute_numeric == "median" else present.mean())
                filled = np.where(np.isnan(values), fill, values)
                std = float(filled.std()) if self.standardize else 1.0
                self.numeric_[name] = {
                    "fill": fill,
                    "mean": float(filled.mean()) if self.standardize else 0.0,
                    "std": std if std > 0 else 1.0,
                }
            else:
                counts = _category_strings(column).value_counts(sort=False)
                ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                self.categories_[name] = [str(value) for value, _ in ranked[: self.max_categories]]
        return self

    def output_names(self) -> list[str]:
        """One name per output column: the feature, or ``feature=value`` for one-hot columns."""
        names: list[str] = []
        for name in self._order():
            if name in self.numeric_ or self.categorical == "ordinal":
                names.append(name)
            else:
                names.extend([f"{name}={value}" for value in self.categories_[name]] + [f"{name}=<unknown>"])
        return names

    def _order(self) -> list[str]:
        return [*self.numeric_, *self.categories_]

    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]:
        blocks = []
        for name in self._order():
            if name not in dataset.frame:
                raise DataError(f"{dataset.source}: feature column '{name}' is missing")
            column = dataset.frame[name]
            if name in self.numeric_:
                stats = self.numeric_[name]
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
                blocks.append(
                    ((np.where(np.isnan(values), stats["fill"], values) - stats["mean"]) / stats["std"])[
                        :, None
                    ]
                )
            else:
                index = {value: position for position, value in enumerate(self.categories_[name])}
                known = len(index)
                codes = _category_strings(column).map(index).fillna(known).to_numpy(dtype=np.int64)
                if self.categorical == "ordinal":
                    blocks.append(((codes + 1) % (known + 1)).astype(np.float64)[:, None])  # 0 = unknown
                else:
                    blocks.append(np.eye(known + 1)[codes])
        return {"features": np.concatenate(blocks, axis=1).astype(np.float32)}

    def input_schema(self) -> InputSchema:
        features = [FeatureSpec(name=name, type="numeric") for name in self.numeric_]
        features += [
            FeatureSpec(name=name, type="categorical", categories=values)
            for name, values in self.categories_.items()
        ]
        width = len(self.output_names())
        return InputSchema(
            kind="tabular",
            features=features,
            tensors=[TensorSpec(name="features", dtype="float32", shape=[-1, width])],
        )

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": vars_of(self, learned=False),
            "learned": {"numeric_": self.numeric_, "categories_": self.categories_},
        }


class ImagePreprocessor:
    """Per-channel standardisation with the training split's mean and std."""

    kind: DataKind = "image"

    def fit(self, dataset: Dataset) -> ImagePreprocessor:
        images = _images_of(dataset)
        self.shape_ = list(images.shape[1:])
        self.mean_ = images.mean(axis=(0, 2, 3), dtype=np.float64).tolist()
        self.std_ = [float(value) or 1.0 for value in images.std(axis=(0, 2, 3), dtype=np.float64)]
        return self

    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]:
        images = _images_of(dataset)
        if list(images.shape[1:]) != self.shape_:
            raise DataError(
                f"{dataset.source}: images have shape {list(images.shape[1:])}, expected {self.shape_}"
            )
        mean = np.asarray(self.mean_, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std_, dtype=np.float32)[None, :, None, None]
        return {"image": ((images - mean) / std).astype(np.float32)}

    def input_schema(self) -> InputSchema:
        return InputSchema(
            kind="image",
            features=[FeatureSpec(name="image", type="image")],
            tensors=[TensorSpec(name="image", dtype="float32", shape=[-1, *self.shape_])],
        )

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": {},
            "learned": {"shape_": self.shape_, "mean_": self.mean_, "std_": self.std_},
        }


class TextPreprocessor:
    """Text to token ids with a vocabulary fitted on the training split: words (``\\w+`` and punctuation) or
    characters. Id 0 pads, id 1 is unknown; sequences are cut at ``max_length``."""

    kind: DataKind = "text"

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
        counts = Counter(token for text in _texts_of(dataset) for token in self.tokenize(text))
        ranked = sorted(
            (item for item in counts.items() if item[1] >= self.min_frequency),
            key=lambda item: (-item[1], item[0]),
        )
        self.vocabulary_ = [PAD, UNKNOWN] + [token for token, _ in ranked[: self.vocab_size - 2]]
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids, shape (len(texts), longest ≤ max_length), int64, right-padded with 0."""
        index = {token: position for position, token in enumerate(self.vocabulary_)}
        rows = [[index.get(token, 1) for token in self.tokenize(text)][: self.max_length] for text in texts]
        ids = np.zeros((len(rows), max(1, max(map(len, rows), default=1))), dtype=np.int64)
        for position, row in enumerate(rows):
            ids[position, : len(row)] = row
        return ids

    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]:
        return {"input_ids": self.encode(_texts_of(dataset))}

    def input_schema(self) -> InputSchema:
        return InputSchema(
            kind="text",
            features=[FeatureSpec(name="text", type="text")],
            tensors=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])],
        )

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": vars_of(self, learned=False),
            "learned": {"vocabulary_": self.vocabulary_},
        }


class TargetEncoder:
    """Class labels ↔ indices (by the label's text); regression targets standardised with the training
    split's mean and std (``inverse`` maps network outputs back to the target's units)."""

    def __init__(self, task: str) -> None:
        self.task = task

    def fit(self, dataset: Dataset) -> TargetEncoder:
        self.classes_: list[str] = list(dataset.label_names or []) if self.task == "classification" else []
        self.mean_, self.std_ = 0.0, 1.0
        if self.task == "regression":
            values = dataset.y.astype(np.float64)
            self.mean_, self.std_ = float(values.mean()), float(values.std()) or 1.0
        return self

    def transform(self, dataset: Dataset) -> np.ndarray:
        if self.task != "classification":
            return ((dataset.y.astype(np.float64) - self.mean_) / self.std_).astype(np.float32)
        index = {label: position for position, label in enumerate(self.classes_)}
        labels = [label_text(value) for value in dataset.y]
        unknown = sorted({label for label in labels if label not in index})
        if unknown:
            raise DataError(
                f"{dataset.source}: labels {unknown[:5]} were not seen in training",
                hint=f"known labels: {', '.join(self.classes_[:20])}",
            )
        return np.asarray([index[label] for label in labels], dtype=np.int64)

    def inverse(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs in the target's own units (regression); classification outputs unchanged."""
        return outputs * self.std_ + self.mean_ if self.task == "regression" else outputs

    def state(self) -> dict[str, Any]:
        return {"task": self.task, "classes_": self.classes_, "mean_": self.mean_, "std_": self.std_}


def vars_of(instance: object, *, learned: bool) -> dict[str, Any]:
    """Constructor arguments (``learned=False``) or fitted attributes (``learned=True``) of an estimator."""
    return {key: value for key, value in vars(instance).items() if key.endswith("_") == learned}


def _category_strings(column: pd.Series) -> pd.Series:
    return column.map(lambda value: MISSING_CATEGORY if pd.isna(value) else label_text(value))


def _images_of(dataset: Dataset) -> np.ndarray:
    if dataset.images is None:
        raise DataError(f"{dataset.source}: expected image data")
    return dataset.images


def _texts_of(dataset: Dataset) -> list[str]:
    column = dataset.features[0]
    return dataset.frame[column].fillna("").astype(str).tolist()


_KINDS: dict[str, type] = {
    "tabular": TabularPreprocessor,
    "image": ImagePreprocessor,
    "text": TextPreprocessor,
    "corpus": TextPreprocessor,
}


def make_preprocessor(kind: DataKind, config: PreprocessConfig) -> Preprocessor:
    """An unfitted preprocessor for a kind of data, configured from the ``data.preprocess`` section."""
    if kind == "tabular":
        return TabularPreprocessor(
            config.impute_numeric, config.standardize, config.categorical, config.max_categories
        )
    if kind == "image":
        return ImagePreprocessor()
    text = config.text
    return TextPreprocessor(
        text.tokenizer, text.max_length, text.vocab_size, text.min_frequency, text.lowercase
    )


def preprocessor_from_state(state: dict[str, Any]) -> Preprocessor:
    """Rebuild a fitted preprocessor from its ``state()`` (as read from a bundle's preprocess.json)."""
    try:
        instance = _KINDS[state["kind"]](**state["params"])
        for key, value in state["learned"].items():
            setattr(instance, key, value)
    except (KeyError, TypeError) as error:
        raise BundleError(f"preprocess.json: unreadable preprocessing state ({error})") from None
    return instance


def target_encoder_from_state(state: dict[str, Any]) -> TargetEncoder:
    encoder = TargetEncoder(state["task"])
    encoder.classes_, encoder.mean_, encoder.std_ = list(state["classes_"]), state["mean_"], state["std_"]
    return encoder
