"""``modelcycle evaluate`` on a trained bundle: the same numbers as training reported on its test split,
and any other data source with the model's columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sklearn.datasets

from modelcycle.config import load_config
from modelcycle.errors import DataError
from modelcycle.evaluate import evaluate
from modelcycle.pipeline import train
from modelcycle.predictor import training_split
from modelcycle.registry import Registry
from tests.conftest import EXAMPLES


@pytest.fixture
def cancer_ref(registry: Registry) -> str:
    return train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=5"]), registry).ref


def test_default_data_reproduces_the_registered_test_metrics(
    cli, registry: Registry, cancer_ref: str
) -> None:
    result = cli("evaluate", cancer_ref, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    registered = registry.open(cancer_ref).manifest.metrics["test"]
    assert report["rows"] == 86
    for key, value in registered.items():
        assert report["metrics"][key] == pytest.approx(value, abs=1e-9), key
    matrix = report["confusion_matrix"]
    assert sum(map(sum, matrix)) == 86
    assert report["labels"] == ["malignant", "benign"]


def test_any_source_with_the_models_columns(cli, tmp_path: Path, cancer_ref: str) -> None:
    bunch = sklearn.datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.assign(target=[bunch.target_names[code] for code in bunch.target])
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    report = json.loads(
        cli("evaluate", cancer_ref, "--data", f"csv:{tmp_path / 'cancer.csv'}", "--json").stdout
    )
    assert report["rows"] == 569
    assert report["metrics"]["accuracy"] > 0.9
    frame.drop(columns=["mean radius"]).to_csv(tmp_path / "short.csv", index=False)
    missing = cli("evaluate", cancer_ref, "--data", f"csv:{tmp_path / 'short.csv'}")
    assert missing.exit_code == 3
    assert "feature column 'mean radius' is missing" in missing.stderr


def test_unseen_labels_are_named(registry: Registry, cancer_ref: str, tmp_path: Path) -> None:
    bundle = registry.open(cancer_ref)
    test = training_split(bundle)
    test.frame.loc[0, "target"] = "unsure"
    with pytest.raises(DataError, match=r"labels \['unsure'\] were not seen in training"):
        evaluate(bundle, test)


def test_human_output(cli, cancer_ref: str) -> None:
    result = cli("evaluate", cancer_ref)
    assert result.exit_code == 0
    assert "confusion matrix" in result.stdout
    assert "roc_auc" in result.stdout
