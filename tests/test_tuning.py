"""Hyper-parameter search: trials recorded as runs, the study resumed from the registry's database, the
best trial registered, and a search space checked against the config before any trial."""

from __future__ import annotations

import json

import pytest

from modelcycle.config import load_config
from modelcycle.errors import ConfigError
from modelcycle.registry import Registry
from modelcycle.tuning import trial_config, tune
from tests.conftest import EXAMPLES

CANCER = EXAMPLES / "breast-cancer-mlp.yaml"
QUICK = ["train.epochs=3", "tune.startup_trials=2"]


def test_trial_config_sets_dotted_values_and_drops_the_search() -> None:
    config = load_config(CANCER)
    trial = trial_config(config, {"train.optimizer.lr": 0.01, "model.params.hidden": [64, 32]})
    assert trial.tune is None
    assert trial.train.optimizer.lr == 0.01
    assert trial.model.params["hidden"] == [64, 32]


@pytest.mark.slow
def test_search_registers_the_best_trial_and_resumes(registry: Registry, cli) -> None:
    first = json.loads(
        cli("tune", str(CANCER), "--trials", "3", "--json", *(f"--set={o}" for o in QUICK)).stdout
    )
    assert first["ref"] == "breast-cancer-mlp@1"
    assert first["metric"] == "valid_accuracy"
    assert first["trials"]["complete"] + first["trials"]["pruned"] == 3
    assert set(first["best_params"]) == {"train.optimizer.lr", "model.params.hidden", "model.params.dropout"}
    assert first["best_params"]["model.params.hidden"] in ([32], [64], [64, 32])
    registered = registry.open(first["ref"]).read_json("config.json")
    assert registered["train"]["optimizer"]["lr"] == pytest.approx(first["best_params"]["train.optimizer.lr"])
    trial_runs = [run for run in registry.runs.recent() if run.model_ref is None]
    assert len(trial_runs) == 3
    assert {run.status for run in trial_runs} <= {"finished", "pruned"}

    again = json.loads(
        cli("tune", str(CANCER), "--trials", "5", "--json", *(f"--set={o}" for o in QUICK)).stdout
    )
    assert again["study"] == first["study"], "more trials continue the same study"
    assert again["trials"]["complete"] + again["trials"]["pruned"] == 5
    assert len([run for run in registry.runs.recent() if run.model_ref is None]) == 5
    assert again["best_value"] >= first["best_value"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["tune.space={train.optimizr.lr: {type: float, low: 0.001, high: 0.1}}"],
            r"tune\.space\.train\.optimizr\.lr",
        ),
        (
            ["tune.space={train.batch_size: {type: int, low: -4, high: 8}}"],
            r"tune\.space\.train\.batch_size: -4",
        ),
        (["tune.space={x: {type: float, low: 1, high: 0}}"], "needs low < high"),
        (
            ["tune.space={x: {type: float, low: 0.1, high: 1, log: true, step: 0.1}}"],
            "either log-scaled or stepped",
        ),
        (["tune.space={x: {type: int, low: 1, high: 9, step: 0.5}}"], "step is a whole number"),
    ],
)
def test_bad_search_spaces_are_refused_before_any_trial(
    registry: Registry, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(load_config(CANCER, [*QUICK, *overrides]), registry)
    assert registry.runs.recent() == []


def test_a_config_without_a_search_is_named(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="has no tune: section"):
        tune(load_config(EXAMPLES / "digits-cnn.yaml"), registry)


def test_diverging_trials_fail_alone_and_are_recorded(registry: Registry) -> None:
    overrides = [
        *QUICK,
        "train.epochs=1",
        "tune.space={train.optimizer.lr: {type: float, low: 1e25, high: 1e30, log: true}}",
    ]
    with pytest.raises(ConfigError, match="no trial completed"):
        tune(load_config(CANCER, overrides), registry, trials=2)
    runs = registry.runs.recent()
    assert [run.status for run in runs] == ["failed", "failed"]
    assert all("the loss became" in (run.error or "") for run in runs)
