"""Training through the pipeline and the CLI: the bundle it registers, the run it records, the errors it
refuses before work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.data import load_dataset, split_dataset
from modelcycle.errors import ConfigError, DataError, TrainingError
from modelcycle.pipeline import train, validate
from modelcycle.registry import Registry
from tests.conftest import EXAMPLES


@pytest.mark.slow
def test_digits_cnn_example_reaches_accuracy_bar(registry: Registry) -> None:
    result = train(load_config(EXAMPLES / "digits-cnn.yaml"), registry)
    assert result.ref == "digits-cnn@1"
    assert result.metrics["test"]["accuracy"] >= 0.97
    bundle = Bundle(result.path)
    assert bundle.manifest.inputs.tensors[0].shape == [-1, 1, 8, 8]
    assert bundle.manifest.outputs.labels == [str(digit) for digit in range(10)]
    assert bundle.manifest.lineage.run_id == result.run_id
    run = registry.runs.get(result.run_id)
    assert run.status == "finished"
    assert run.model_ref == "digits-cnn@1"
    assert len(registry.runs.history(result.run_id, "train_loss")) == 15


@pytest.mark.slow
def test_breast_cancer_mlp_reaches_accuracy_bar(registry: Registry) -> None:
    result = train(load_config(EXAMPLES / "breast-cancer-mlp.yaml"), registry)
    assert result.metrics["test"]["accuracy"] >= 0.95


def test_bundle_holds_lineage_preprocessing_and_profile(registry: Registry) -> None:
    config = load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2"])
    result = train(config, registry)
    bundle = registry.open(result.ref)
    manifest = bundle.manifest
    assert set(manifest.files) >= {"weights.safetensors", "preprocess.json", "reference.json", "config.json"}
    assert set(manifest.metrics) == {"train", "valid", "test"}
    assert manifest.lineage.config_hash == config.config_hash()
    assert len(manifest.lineage.data_fingerprint) == 64
    assert manifest.lineage.code_version.startswith("modelcycle ")
    # preprocessing was fitted on the training split only
    dataset = load_dataset(config.data)
    train_rows = split_dataset(dataset, config.data.split, config.seed).train
    state = bundle.read_json("preprocess.json")["features"]["learned"]["numeric_"]["mean radius"]
    assert state["mean"] == pytest.approx(dataset.frame["mean radius"].to_numpy()[train_rows].mean())
    assert bundle.read_json("reference.json")["rows"] == len(train_rows)


def test_same_seed_gives_same_weights(registry: Registry) -> None:
    config = load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2"])
    first, second = registry.open(train(config, registry).ref), registry.open(train(config, registry).ref)
    for key, tensor in first.state_dict().items():
        assert np.array_equal(tensor.numpy(), second.state_dict()[key].numpy()), key


def test_regression_and_class_weights_run(registry: Registry) -> None:
    result = train(
        load_config(
            EXAMPLES / "breast-cancer-mlp.yaml",
            ["name=diabetes", "data.source=builtin:diabetes", "train.epochs=30"],
        ),
        registry,
    )
    assert set(result.metrics["test"]) == {"mae", "rmse", "r2"}
    assert result.metrics["test"]["r2"] > 0.2
    weighted = train(
        load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2", "data.imbalance=oversample"]),
        registry,
    )
    assert weighted.metrics["test"]["accuracy"] > 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.arch=transformerr", "model.arch: unknown architecture 'transformerr'"),
        (
            "train.optimizer.name=adamm",
            "train.optimizer.name: unknown optimizer 'adamm' (did you mean 'adam'?)",
        ),
        ("model.params.hiden=[3]", "model.params.hiden: unknown parameter"),
        ("train.optimizer.lr=-0.1", "train.optimizer.lr: Input should be greater than 0"),
        ("train.batch_size=0", "train.batch_size: Input should be greater than 0"),
    ],
)
def test_bad_configs_are_refused_before_work(override: str, message: str, registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", [override]), registry)
    assert message in str(caught.value)
    assert registry.runs.recent() == []


def test_cnn_on_tabular_data_is_refused(registry: Registry) -> None:
    config = load_config(EXAMPLES / "digits-cnn.yaml", ["data.source=builtin:iris", "data.target=target"])
    with pytest.raises(ConfigError, match="'cnn' takes image data, but builtin:iris is tabular data"):
        train(config, registry)
    assert registry.runs.recent() == []


def test_validate_resolves_names_without_loading_data() -> None:
    config = load_config(EXAMPLES / "digits-cnn.yaml", ["data.source=builtin:nonexistent"])
    with pytest.raises(ConfigError, match="unknown built-in dataset 'nonexistent'"):
        validate(config)


def test_train_cli_json_and_registry_commands(cli, tmp_path: Path) -> None:
    config = str(EXAMPLES / "breast-cancer-mlp.yaml")
    first = cli("train", config, "--set", "train.epochs=2", "--json")
    assert first.exit_code == 0, first.stderr
    payload = json.loads(first.stdout)
    assert payload["ref"] == "breast-cancer-mlp@1"
    assert set(payload["metrics"]["test"]) == {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc",
        "log_loss",
        "ece",
    }
    second = json.loads(cli("train", config, "--set", "train.epochs=3", "--json").stdout)

    shown = json.loads(cli("models", "show", "breast-cancer-mlp@1", "--json").stdout)
    assert {"name", "version", "aliases", "task", "metrics", "path"} <= set(shown)
    assert (shown["name"], shown["version"], shown["task"]) == ("breast-cancer-mlp", 1, "classification")
    assert shown["metrics"]["test"] == payload["metrics"]["test"]
    assert Path(shown["path"], "bundle.json").is_file()

    assert (
        cli("models", "alias", "breast-cancer-mlp@1", "production", "--reason", "[/b] markup-like").exit_code
        == 0
    )
    assert cli("models", "alias", "breast-cancer-mlp@2", "production").exit_code == 0
    listed = json.loads(cli("models", "list", "--json").stdout)
    assert listed[0]["aliases"] == {"previous": 1, "production": 2}
    refused = cli("models", "rm", "breast-cancer-mlp@1")
    assert refused.exit_code == 6
    assert "refusing to remove" in refused.stderr
    history = json.loads(cli("models", "history", "breast-cancer-mlp", "--json").stdout)
    assert [event["kind"] for event in history] == ["registered", "registered", "promoted", "promoted"]

    runs = json.loads(cli("runs", "list", "--json").stdout)
    assert {run["model_ref"] for run in runs} == {"breast-cancer-mlp@1", "breast-cancer-mlp@2"}
    shown_run = json.loads(cli("runs", "show", payload["run_id"][:8], "--json").stdout)
    assert shown_run["params"]["train"]["epochs"] == 2
    compared = json.loads(cli("runs", "compare", payload["run_id"], second["run_id"], "--json").stdout)
    assert compared["params"] == {"train.epochs": [2, 3]}
    assert "test_accuracy" in compared["metrics"]
    for command in (
        ["models", "list"],
        ["models", "show", "breast-cancer-mlp"],
        ["runs", "list"],
        ["models", "history", "breast-cancer-mlp"],
        ["runs", "show", payload["run_id"][:8]],
    ):
        assert cli(*command).exit_code == 0, command


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["models", "show", "ghost@1"], 5, "model 'ghost' is not registered"),
        (["models", "show", "bad ref"], 2, "is not a model reference"),
        (["runs", "show", "zzzz"], 5, "run 'zzzz' matches no run"),
        (["train", "missing.yaml"], 2, "missing.yaml: config file not found"),
    ],
)
def test_cli_errors_have_codes_and_no_traceback(cli, args: list[str], code: int, message: str) -> None:
    result = cli(*args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_data_problems_surface_before_a_run_is_recorded(registry: Registry, tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text("a,label\n1,x\n2,x\n3,y\n")
    config = load_config(EXAMPLES / "breast-cancer-mlp.yaml", [f"data.source=csv:{csv}", "data.target=label"])
    with pytest.raises(DataError, match="cannot split"):
        train(config, registry)
    assert registry.runs.recent() == []


def test_failed_training_is_recorded_as_a_failed_run(registry: Registry) -> None:
    config = load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.optimizer.lr=1e30", "train.epochs=3"])
    with pytest.raises(TrainingError, match="the loss became"):
        train(config, registry)
    (run,) = registry.runs.recent()
    assert run.status == "failed"
    assert "the loss became" in run.error
    assert registry.list_models() == []


def test_regression_validation_metrics_are_in_target_units(registry: Registry) -> None:
    result = train(
        load_config(
            EXAMPLES / "breast-cancer-mlp.yaml",
            ["name=diabetes", "data.source=builtin:diabetes", "train.epochs=5"],
        ),
        registry,
    )
    history = registry.open(result.ref).read_json("history.json")
    best = history["epochs"][history["best_epoch"] - 1]
    assert best["valid_rmse"] == pytest.approx(result.metrics["valid"]["rmse"], rel=1e-5)
    assert best["valid_rmse"] > 20, "diabetes progression is in the tens, not standardised units"
