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
from fastapi.testclient import TestClient
from sklearn import metrics as skm
from sklearn.datasets import make_multilabel_classification

from modelcycle.config import MonitorConfig, PipelineConfig, ServeConfig, load_config
from modelcycle.data import load_dataset
from modelcycle.errors import DataError
from modelcycle.evaluate import evaluate
from modelcycle.explain import explain
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.tasks import TASKS
from modelcycle.tasks.multilabel import THRESHOLD, scores, sigmoid
from tests.conftest import metric_value
from tests.test_serve import v2_body, wait_ready

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


@pytest.fixture
def served(trained: Registry, tmp_path: Path) -> Iterator[TestClient]:
    monitoring = MonitorConfig(store=str(tmp_path / "monitor.db"), interval_s=3600, drift_min_rows=10_000)
    app = create_app(trained, ["topics@1"], ServeConfig(), monitoring=monitoring)
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def test_served_answers_are_label_sets_and_feedback_gives_live_quality_equal_to_sklearn(
    trained: Registry, served: TestClient
) -> None:
    test = training_split(trained.open("topics@1"), "test")
    instances = test.frame[FEATURES].head(30).to_dict(orient="records")
    answer = served.post("/v1/models/topics:predict", json={"instances": instances})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 30
    for item in predictions:
        assert list(item["probabilities"]) == LABELS
        assert item["labels"] == [name for name, p in item["probabilities"].items() if p >= THRESHOLD]

    predictor = Predictor.load(trained.open("topics@1"))
    tensors = predictor.preprocessor.transform(test.take(np.arange(4)))
    v2 = served.post("/v2/models/topics/infer", json=v2_body(tensors))
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["shape"] == [4, 3]

    request_id = answer.json()["request_id"]
    truth = [cell.split("|") for cell in test.frame["topics"].head(30)]
    for row, labels in enumerate(truth):
        reply = served.post("/v1/feedback", json={"request_id": request_id, "row": row, "label": labels})
        assert reply.status_code == 200, reply.text
    unknown = served.post("/v1/feedback", json={"request_id": request_id, "label": ["art"]})
    assert unknown.status_code == 400
    assert "art" in unknown.json()["error"]

    state = served.app.state.serving  # type: ignore[attr-defined]
    state.monitor.check(state.watched())
    metrics = served.get("/metrics").text
    expected = _truth(pd.Series(["|".join(labels) for labels in truth]))
    got = np.array([[label in item["labels"] for label in LABELS] for item in predictions], dtype=int)
    version = {"model": "topics", "version": "1", "window": "1h"}
    quality = "modelcycle_live_quality"
    assert metric_value(metrics, quality, **version, metric="f1_micro") == pytest.approx(
        skm.f1_score(expected, got, average="micro")
    )
    assert metric_value(metrics, quality, **version, metric="f1_macro") == pytest.approx(
        skm.f1_score(expected, got, average="macro", zero_division=0)
    )
    assert metric_value(metrics, quality, **version, metric="hamming_loss") == pytest.approx(
        skm.hamming_loss(expected, got)
    )
    assert metric_value(metrics, quality, **version, metric="subset_accuracy") == pytest.approx(
        skm.accuracy_score(expected, got)
    )
    assert metric_value(metrics, "modelcycle_live_quality_samples", **version) == 30
    # predictions by label: every label a row carries, over the 30 simple rows and the 4 v2 rows (the same
    # first four), not one argmax per row
    carried = {
        label: sum(label in item["labels"] for item in predictions + predictions[:4]) for label in LABELS
    }
    assert sum(carried.values()) > 34  # some rows carry several labels
    for label, count in carried.items():
        name, labels = "modelcycle_predictions_total", {"model": "topics", "version": "1", "class": label}
        assert metric_value(metrics, name, **labels) == count


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


def test_a_misspelt_task_is_refused_before_any_work_naming_every_registered_task(tmp_path: Path) -> None:
    from modelcycle.errors import ConfigError
    from modelcycle.pipeline.resolve import validate

    config = _config(tmp_path, "builtin:iris")
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"task": "multi_label_clasification"})}
    )
    with pytest.raises(ConfigError, match="did you mean 'multi_label_classification'") as raised:
        validate(config)
    assert "embedding" in str(raised.value.hint)
