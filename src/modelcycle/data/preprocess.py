"""Preprocessing fitted on the training split only, with scikit-learn's semantics (a test checks the output
against SimpleImputer / StandardScaler / OneHotEncoder) and state that serialises to JSON for the bundle.

Learned attributes end in ``_``; ``state()`` / ``from_state()`` round-trip them exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from modelcycle.data.dataset import Dataset
from modelcycle.data.estimator import Estimator
from modelcycle.errors import DataError
from modelcycle.schema import FeatureSpec, InputSchema, TensorSpec
from modelcycle.tasks import TASKS, TargetCoding
from modelcycle.tasks.values import label_text

MISSING_CATEGORY = "__missing__"


class Preprocessor(Protocol):
    """Turns a dataset's features into the named float / int arrays a network takes. ``kind`` names the
    class in the saved state."""

    kind: str

    def fit(self, dataset: Dataset) -> Preprocessor: ...
    def transform(self, dataset: Dataset) -> dict[str, np.ndarray]: ...
    def input_schema(self) -> InputSchema: ...
    def state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _RowPlan:
    """A fitted tabular preprocessor's state as arrays, for transforming request rows."""

    numeric: list[str]
    fill: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    categories: dict[str, dict[str, int]]


class TabularPreprocessor(Estimator):
    """Numeric columns: impute (median / mean) then standardize. Categorical columns: the most frequent
    ``max_categories`` values become one-hot columns (or ordinal ids), everything else one unknown bucket."""

    kind = "tabular"

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
        self.__dict__.pop("_row_plan", None)
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

    def column_features(self) -> list[str]:
        """For each output column, the feature it comes from (a one-hot group maps back to one feature)."""
        features: list[str] = []
        for name in self._order():
            one_hot = name in self.categories_ and self.categorical != "ordinal"
            features.extend([name] * (len(self.categories_[name]) + 1 if one_hot else 1))
        return features

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
                values = (
                    column.to_numpy()
                    if column.dtype == np.float64  # already numbers: pd.to_numeric costs ~15 µs a column
                    else pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
                )
                blocks.append(_standardized(values, stats["fill"], stats["mean"], stats["std"])[:, None])
            else:
                index = {value: position for position, value in enumerate(self.categories_[name])}
                known = len(index)
                codes = _category_strings(column).map(index).fillna(known).to_numpy(dtype=np.int64)
                blocks.append(self._category_block(codes, known))
        return {"features": np.concatenate(blocks, axis=1).astype(np.float32)}

    def _category_block(self, codes: np.ndarray, known: int) -> np.ndarray:
        """Category codes (``known`` = the unknown bucket) as one-hot columns or one ordinal column."""
        if self.categorical == "ordinal":
            return ((codes + 1) % (known + 1)).astype(np.float64)[:, None]  # 0 = unknown
        return np.eye(known + 1)[codes]

    def transform_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """``transform`` of rows that name every feature with a number, a category or None (a request's
        instances, already checked): the same values, without the DataFrame that cost a one-row request
        about a millisecond."""
        plan = self._row_plan
        blocks = []
        if plan.numeric:
            values = np.array([[row[name] for name in plan.numeric] for row in rows], dtype=np.float64)
            blocks.append(_standardized(values, plan.fill, plan.mean, plan.std))
        for name, index in plan.categories.items():
            known = len(index)
            codes = np.array(
                [
                    index.get(MISSING_CATEGORY if row[name] is None else label_text(row[name]), known)
                    for row in rows
                ],
                dtype=np.int64,
            )
            blocks.append(self._category_block(codes, known))
        return {"features": np.concatenate(blocks, axis=1).astype(np.float32)}

    @functools.cached_property
    def _row_plan(self) -> _RowPlan:
        stats = [self.numeric_[name] for name in self.numeric_]
        return _RowPlan(
            numeric=list(self.numeric_),
            fill=np.array([item["fill"] for item in stats]),
            mean=np.array([item["mean"] for item in stats]),
            std=np.array([item["std"] for item in stats]),
            categories={
                name: {value: position for position, value in enumerate(values)}
                for name, values in self.categories_.items()
            },
        )

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


class ImagePreprocessor(Estimator):
    """Per-channel standardisation with the training split's mean and std."""

    kind = "image"

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


class TargetEncoder:
    """The target ↔ tensors as its task codes it (class ids by the label's text, a regression's value
    standardised, a 0/1 row per label), learned on the training split; ``inverse`` maps network outputs
    back to the target's units."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.classes_: list[str] = []
        self.mean_, self.std_ = 0.0, 1.0

    @property
    def coding(self) -> TargetCoding:
        return TargetCoding(self.classes_, self.mean_, self.std_)

    def fit(self, dataset: Dataset) -> TargetEncoder:
        column = None if dataset.target is None else pd.Series(dataset.y)
        coding = TASKS.get(self.task)().fit_target(column, dataset.label_names)
        self.classes_, self.mean_, self.std_ = coding.classes, coding.mean, coding.std
        return self

    def transform(self, dataset: Dataset) -> np.ndarray:
        """The targets training fits."""
        return TASKS.get(self.task)().encode_target(pd.Series(dataset.y), self.coding, dataset.source)

    def metric_targets(self, dataset: Dataset) -> np.ndarray:
        """The targets metrics compare with, in the target's own units."""
        return TASKS.get(self.task)().metric_targets(pd.Series(dataset.y), self.coding, dataset.source)

    def inverse(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs in the target's own units (a regression's value); logits unchanged."""
        return TASKS.get(self.task)().decode_outputs(outputs, self.coding)

    def state(self) -> dict[str, Any]:
        return {"task": self.task, "classes_": self.classes_, "mean_": self.mean_, "std_": self.std_}


def _standardized(values: np.ndarray, fill: Any, mean: Any, std: Any) -> np.ndarray:
    """Missing values imputed, then standardized (per column when the statistics are arrays)."""
    result: np.ndarray = (np.where(np.isnan(values), fill, values) - mean) / std
    return result


def _category_strings(column: pd.Series) -> pd.Series:
    return column.map(lambda value: MISSING_CATEGORY if pd.isna(value) else label_text(value))


def _images_of(dataset: Dataset) -> np.ndarray:
    if dataset.images is None:
        raise DataError(f"{dataset.source}: expected image data")
    return dataset.images


@runtime_checkable
class CarriesFiles(Protocol):
    """A preprocessor whose state includes files (a pretrained tokenizer) that the bundle must carry."""

    def copy_files(self, bundle_dir: Path) -> None: ...


def target_encoder_from_state(state: dict[str, Any]) -> TargetEncoder:
    encoder = TargetEncoder(state["task"])
    encoder.classes_, encoder.mean_, encoder.std_ = list(state["classes_"]), state["mean_"], state["std_"]
    return encoder
