"""Data sources by URI: ``csv:PATH``, ``parquet:PATH``, ``jsonl:PATH``, ``images:DIR`` and ``builtin:NAME``
(a bare path with a known suffix, or a directory, works too). Every loader returns a checked ``Dataset``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from modelcycle.config import DataConfig, ImageConfig, TaskName
from modelcycle.data.builtin import BUILTINS
from modelcycle.data.columns import infer_feature_types
from modelcycle.data.dataset import Dataset, task_of
from modelcycle.errors import DataError
from modelcycle.plugins import PluginRegistry, did_you_mean
from modelcycle.schema import DataKind, FeatureType
from modelcycle.tasks import TASKS
from modelcycle.tasks.values import class_names, label_text

TableReader = Callable[[Path], pd.DataFrame]
TABLE_READERS: PluginRegistry[TableReader] = PluginRegistry("data source scheme")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# An integer target with at most this many distinct values is taken for class labels.
_MAX_INFERRED_CLASSES = 50


def split_source(source: str) -> tuple[str, str]:
    """(scheme, location) of a source URI; bare paths get their scheme from the suffix."""
    scheme, sep, location = source.partition(":")
    if sep and (scheme in TABLE_READERS or scheme in ("images", "builtin")):
        return scheme, location
    path = Path(source)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in TABLE_READERS:
        return suffix, source
    if path.is_dir():
        return "images", source
    known = ", ".join([*TABLE_READERS.names(), "images", "builtin"])
    if sep:
        raise DataError(f"data.source '{source}': unknown scheme '{scheme}'", hint=f"known schemes: {known}")
    raise DataError(
        f"data.source '{source}': cannot tell the format from the name",
        hint=f"prefix a scheme ({known}), e.g. csv:{source}",
    )


@TABLE_READERS.register("csv")
def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None


@TABLE_READERS.register("parquet")
def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None


@TABLE_READERS.register("jsonl")
def read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{number}: each line must be a JSON object, got {type(record).__name__}"
                )
            records.append(record)
    return pd.DataFrame.from_records(records)


def load_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """Load, type and check the data a config names (target present, rows present, more than one class).
    ``max_rows`` keeps a seeded random sample (the first rows of a corpus)."""
    scheme, location = split_source(config.source)
    if scheme == "builtin":
        dataset = _load_builtin(location, config)
    elif scheme == "images":
        dataset = _load_images(_existing(location, directory=True), config)
    else:
        path = _existing(location, directory=False)
        dataset = _from_table(TABLE_READERS.get(scheme)(path), config, str(path))
    if config.max_rows is not None and len(dataset) > config.max_rows:
        dataset = _sample(dataset, config.max_rows, seed)
    check_dataset(dataset)
    return dataset


def _sample(dataset: Dataset, rows: int, seed: int) -> Dataset:
    """``rows`` rows: contiguous for a corpus, otherwise a seeded random sample in the original order; class
    names without rows left are dropped, so no model gets an output for a class it never sees."""
    task = task_of(dataset)
    if task is not None and task.ordered_rows:
        return dataset.take(np.arange(rows))
    sample = dataset.take(np.sort(np.random.default_rng(seed).choice(len(dataset), rows, replace=False)))
    occurrences = (
        None if task is None or sample.target is None else task.label_occurrences(sample.frame[sample.target])
    )
    if sample.label_names is None or occurrences is None:
        return sample
    present = {label_text(value) for value in occurrences}
    return replace(sample, label_names=[label for label in sample.label_names if label in present])


def _existing(location: str, *, directory: bool) -> Path:
    path = Path(location).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such {'directory' if directory else 'file'}", hint="check data.source")
    if directory != path.is_dir():
        raise DataError(f"{path}: expected a {'directory' if directory else 'file'}")
    return path


def _load_builtin(name: str, config: DataConfig) -> Dataset:
    dataset = BUILTINS.get(name, field="data.source")()
    if config.target is not None and config.target != dataset.target:
        raise DataError(
            f"data.target: {dataset.source} has target '{dataset.target}', not '{config.target}'",
            hint=f"set data.target: {dataset.target} or leave it out",
        )
    if config.task is not None and config.task != dataset.task:
        raise DataError(f"data.task: {dataset.source} is a {dataset.task} dataset, not {config.task}")
    if config.column_types:
        raise DataError(f"data.column_types: the columns of {dataset.source} have fixed types")
    if config.features is None:
        return dataset
    unknown = [name for name in config.features if name not in dataset.feature_types]
    if unknown:
        known = list(dataset.feature_types)
        raise DataError(
            f"data.features: {dataset.source} has no column '{unknown[0]}'{did_you_mean(unknown[0], known)}",
            hint=f"columns: {', '.join(known[:20])}",
        )
    kept = {name: dataset.feature_types[name] for name in config.features}
    columns = [*kept, *([dataset.target] if dataset.target else [])]
    return replace(dataset, frame=dataset.frame[columns], feature_types=kept)


def _from_table(frame: pd.DataFrame, config: DataConfig, origin: str) -> Dataset:
    if frame.empty or len(frame.columns) == 0:
        raise DataError(f"{origin}: the dataset is empty (no rows)")
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    target = config.target
    if target is not None and target not in columns:
        raise DataError(
            f"{origin}: target column '{target}' not found{did_you_mean(target, columns)}",
            hint=f"columns: {', '.join(columns[:20])}",
        )
    features = config.features or [column for column in columns if column != target]
    for name in [*features, *config.column_types]:
        if name not in columns:
            raise DataError(f"{origin}: feature column '{name}' not found{did_you_mean(name, columns)}")
    if target in features:
        raise DataError(
            f"data.features: the target '{target}' cannot also be a feature (it would leak the answer)"
        )
    if not features:
        raise DataError(f"{origin}: no feature columns besides the target '{target}'")
    _check_scalar_cells(frame, features, origin)
    dropped = 0
    if target is not None:
        # Rows keep their original index, so errors below name the row as it is in the file.
        missing = frame[target].isna()
        dropped = int(missing.sum())
        frame = frame.loc[~missing]
    if frame.empty:
        raise DataError(f"{origin}: the dataset is empty (every row lacks the target '{target}')")
    feature_types = infer_feature_types(frame, features, config.column_types, origin)
    kind = _table_kind(feature_types, target, origin)
    task = config.task or _infer_task(frame, target, kind)
    label_names = None
    if task is not None and target is not None:
        typed = TASKS.get(task, field="data.task")()
        frame[target] = typed.prepare_target(frame[target], target, origin)
        occurrences = typed.label_occurrences(frame[target])
        label_names = None if occurrences is None else class_names(occurrences)
    columns = [*features, *([target] if target else [])]
    _check_finite(frame[columns], origin)
    frame = frame[columns].reset_index(drop=True)
    return Dataset(
        origin, kind, task, frame, target, feature_types, label_names=label_names, dropped_rows=dropped
    )


def _check_scalar_cells(frame: pd.DataFrame, columns: list[str], origin: str) -> None:
    """Nested values (JSON objects or lists, Parquet structs) cannot be features: name the first one."""
    for name in columns:
        if frame[name].dtype != object:
            continue
        nested = frame[name].map(lambda value: isinstance(value, (dict, list, tuple, set, np.ndarray)))
        if nested.any():
            row = int(nested.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{origin}: column '{name}' holds a nested value in row {row + 1} "
                f"({type(frame[name].iloc[row]).__name__}); features must be scalars"
            )


def _table_kind(feature_types: dict[str, FeatureType], target: str | None, origin: str) -> DataKind:
    text_columns = [name for name, kind in feature_types.items() if kind == "text"]
    if not text_columns:
        return "tabular"
    if len(feature_types) > 1:
        raise DataError(
            f"{origin}: text column '{text_columns[0]}' is mixed with other features",
            hint="choose the text column alone with data.features, or declare it categorical",
        )
    return "text" if target is not None else "corpus"


def _infer_task(frame: pd.DataFrame, target: str | None, kind: str) -> TaskName | None:
    """The task a target implies; None for a table without a target (fine to inspect, not to train)."""
    if target is None:
        return "language_modeling" if kind == "corpus" else None
    column = frame[target]
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return "classification"
    whole = bool((column == column.round()).all())
    return "classification" if whole and column.nunique() <= _MAX_INFERRED_CLASSES else "regression"


def _load_images(root: Path, config: DataConfig) -> Dataset:
    """One sub-directory per class, each holding PNG / JPEG files; all images resized to one size."""
    from PIL import Image, UnidentifiedImageError

    image_config: ImageConfig = config.preprocess.image
    folders = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    files = [
        (path, folder.name)
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    classes = sorted({label for _, label in files})  # a class folder without images is no class
    if not files:
        raise DataError(f"{root}: the dataset is empty (no PNG/JPEG files in class sub-directories)")
    mode = "L" if image_config.grayscale else "RGB"
    arrays, size = [], image_config.size
    for path, _ in files:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
            size = size or (image.height, image.width)
            arrays.append(np.asarray(image.resize((size[1], size[0])), dtype=np.float32))
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{path}: not a readable image ({error})") from None
    pixels = np.stack(arrays)
    images = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
    frame = pd.DataFrame({"label": [label for _, label in files]})
    return Dataset(
        str(root),
        "image",
        "classification",
        frame,
        "label",
        {"image": "image"},
        np.ascontiguousarray(images),
        label_names=classes,
    )


def check_dataset(dataset: Dataset) -> None:
    """Refuse data no model can learn from: no rows, or a target its task cannot learn (e.g. one class)."""
    if len(dataset) == 0:
        raise DataError(f"{dataset.source}: the dataset is empty (no rows)")
    task = task_of(dataset)
    if task is not None and dataset.target is not None:
        task.check_target(dataset.frame[dataset.target], dataset.target, dataset.source)


def _check_finite(frame: pd.DataFrame, origin: str) -> None:
    """An infinite number (``inf`` in a CSV, or ``1e400``, which parses to it) is a data error naming its
    column and its row in the file (``frame`` keeps the file's row index): it failed training later as
    "loss became nan", or trained on silently. Missing values (NaN) stay: preprocessing imputes them."""
    numbers = frame.select_dtypes(include="number")
    infinite = np.isinf(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
    if not infinite.any():
        return
    row, column = (int(position[0]) for position in np.nonzero(infinite))
    raise DataError(
        f"{origin}: column '{numbers.columns[column]}', data row {int(frame.index[row]) + 1}: "
        f"{numbers.iloc[row, column]} is not a finite number (inf, or beyond the float range like 1e400)",
        hint="fix or drop the value; an empty cell counts as missing and is imputed",
    )
