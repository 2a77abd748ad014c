"""Multi-label classification end to end — several labels per row — added as one task module: the target
read from ``|``-separated text or JSON lists, trained with binary cross-entropy, evaluated with metrics equal
to scikit-learn's, served (simple JSON and v2), fed back into live quality equal to scikit-learn's, and
explained per label."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_multilabel_classification

from modelcycle.config import PipelineConfig, load_config
from modelcycle.data import load_dataset
from modelcycle.errors import DataError
from modelcycle.evaluate import evaluate
from modelcycle.explain import explain
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS
from modelcycle.tasks.multilabel import THRESHOLD, scores, sigmoid

LABELS = ["politics", "science", "sports"]
TASK = "multi_label_classification"
FEATURES = [f"x{index}" for index in range(8)]


def _table(rows: int = 400) -> pd.DataFrame:
    """scikit-learn's multi-label generator: 8 count features, 3 labels, 1–3 labels a row."""
    features, indicators = make_multilabel_classification(
        n_samples=rows, n_features=8, n_classes=3, n_labels=2, allow_unlabeled=False, random_state=0
    )
    frame = pd.DataFrame(features, columns=FEATURES)
    frame["topics"] = ["|".join(LABELS[i] for i in np.flatnonzero(row)) for row in indicators]
    return frame


def _config(path: Path, source: str, **data: object) -> PipelineConfig:
    spec = {
        "name": "topics",
        "seed": 0,
        "data": {"source": source, "target": "topics", "task": TASK, **data},
        "model": {"arch": "mlp", "params": {"hidden": [32], "dropout": 0.0}},
        "train": {"epochs": 40, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01}},
    }
    config = path / "topics.yaml"
    config.write_text(json.dumps(spec))
    return load_config(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("multilabel")
    _table().to_csv(root / "topics.csv", index=False)
    registry = Registry(root / "home")
    train(_config(root, f"csv:{root / 'topics.csv'}"), registry)
    yield registry
    registry.close()


def _truth(column: pd.Series) -> np.ndarray:
    return np.array([[label in cell.split("|") for label in LABELS] for cell in column], dtype=np.int64)


def test_the_target_reads_from_separated_text_and_from_lists(tmp_path: Path) -> None:
    frame = _table(60)
    frame.to_csv(tmp_path / "t.csv", index=False)
    listed = frame.assign(topics=[cell.split("|")[::-1] for cell in frame["topics"]])
    listed.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    from_csv = load_dataset(_config(tmp_path, f"csv:{tmp_path / 't.csv'}").data)
    from_jsonl = load_dataset(_config(tmp_path, f"jsonl:{tmp_path / 't.jsonl'}").data)
    assert from_csv.task == TASK
    assert from_csv.label_names == LABELS == from_jsonl.label_names
    assert from_csv.frame["topics"].tolist() == from_jsonl.frame["topics"].tolist()  # one canonical text
    assert from_csv.frame["topics"].tolist() == frame["topics"].tolist()


def test_a_target_without_any_label_is_refused(tmp_path: Path) -> None:
    frame = _table(20).assign(topics=[[] for _ in range(20)])
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    with pytest.raises(DataError, match="names no label"):
        load_dataset(_config(tmp_path, f"jsonl:{tmp_path / 't.jsonl'}").data)


def test_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=(50, 4))
    probabilities = rng.random((50, 4))
    predicted = (probabilities >= THRESHOLD).astype(int)
    got = scores(truth, probabilities)
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert got["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, predicted))
    for average in ("micro", "macro", "weighted", "samples"):
        assert got[f"f1_{average}"] == pytest.approx(skm.f1_score(truth, predicted, average=average))
        assert got[f"precision_{average}"] == pytest.approx(
            skm.precision_score(truth, predicted, average=average, zero_division=0)
        )
        assert got[f"recall_{average}"] == pytest.approx(
            skm.recall_score(truth, predicted, average=average, zero_division=0)
        )
    assert got["label_ranking_average_precision"] == pytest.approx(
        skm.label_ranking_average_precision_score(truth, probabilities)
    )
    assert got["log_loss"] == pytest.approx(
        np.mean([skm.log_loss(truth[:, i], probabilities[:, i]) for i in range(4)])
    )
    for index in range(4):
        assert got[f"f1/{index}"] == pytest.approx(skm.f1_score(truth[:, index], predicted[:, index]))
        assert got[f"roc_auc/{index}"] == pytest.approx(
            skm.roc_auc_score(truth[:, index], probabilities[:, index])
        )


def test_training_and_evaluation_on_the_test_split_equal_scikit_learn(trained: Registry) -> None:
    bundle = trained.open("topics@1")
    assert bundle.manifest.task == TASK
    assert bundle.manifest.outputs.labels == LABELS
    assert bundle.manifest.outputs.tensors[0].shape == [-1, 3]
    test = training_split(bundle, "test")
    report = evaluate(bundle, test)
    probabilities = sigmoid(Predictor.load(bundle).outputs(test))
    truth, predicted = _truth(test.frame["topics"]), (probabilities >= THRESHOLD).astype(int)
    assert report.metrics["f1_micro"] == pytest.approx(skm.f1_score(truth, predicted, average="micro"))
    assert report.metrics["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, predicted))
    assert report.metrics["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert report.metrics["f1_micro"] > 0.75  # it learned: a constant "every label" answer scores ~0.6
    assert report.confusion_matrix is None  # one class per row is not what this task predicts
    assert bundle.manifest.metrics["test"]["f1_micro"] == pytest.approx(report.metrics["f1_micro"])


def test_explanations_attribute_a_chosen_label_to_every_feature(trained: Registry) -> None:
    predictor = Predictor.load(trained.open("topics@1"))
    test = training_split(predictor.bundle, "test")
    instances = test.frame[FEATURES].head(3).to_dict(orient="records")
    explanations = explain(predictor, instances, method="ig", target="science")
    probabilities = sigmoid(predictor.outputs(test.take(np.arange(3))))
    for row, explanation in enumerate(explanations):
        assert explanation.target == "science"
        assert explanation.target_index == 1
        assert sorted(explanation.attributions) == sorted(FEATURES)
        assert explanation.probability == pytest.approx(probabilities[row, 1], rel=1e-5)
        chosen = [label for label, p in zip(LABELS, probabilities[row], strict=True) if p >= THRESHOLD]
        assert explanation.prediction == "|".join(chosen)


def test_the_task_is_registered_and_every_row_architecture_does_it() -> None:
    from modelcycle.models import ARCHITECTURES

    assert TASK in TASKS
    assert TASK in ARCHITECTURES.get("mlp").task_names()
    assert TASK not in ARCHITECTURES.get("gpt").task_names()
