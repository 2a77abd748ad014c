"""The closed loop: a candidate trained on bad labels is rejected by the gate; one trained on good feedback is
registered with production as its parent; a canary whose live accuracy collapses is rolled back and a healthy
one promoted, each decision an event with its numbers. Servers bind 127.0.0.1; loops are bounded."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelcycle.cli.render import emit_json
from modelcycle.config import MonitorConfig, ServeConfig, UpdateConfig
from modelcycle.monitor.database import connect
from modelcycle.monitor.store import PredictionRecord, PredictionStore
from modelcycle.optimize.gate import Gate
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.update import AdminClient, UpdateResult, update
from modelcycle.update.candidate import HoldoutVerdict, Judgement
from modelcycle.update.loop import canary, watch
from tests.conftest import train_into
from tests.test_serve import live_server

TOKEN = "update-token"
FAST = UpdateConfig(
    min_feedback=40, epochs=3, canary_min_samples=12, canary_percent=50, poll_s=0.2, canary_timeout_s=60
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return train_into(tmp_path / "home", ("breast-cancer-mlp.yaml", ["train.epochs=8"]))


def _store_feedback(home: Path, labels: str, rows: int = 120) -> None:
    """Answered predictions of production on the test split, each with feedback: the true label, or a
    shuffled one."""
    registry = Registry(home)
    predictor = Predictor.load(registry.open("breast-cancer-mlp"))
    test = training_split(predictor.bundle, "test")
    test = test.take(np.resize(np.arange(len(test)), rows))
    outputs = predictor.outputs(test)
    truth = test.frame[test.target].astype(str).to_numpy()
    if labels == "shuffled":
        truth = np.random.default_rng(0).permutation(truth)
    store = PredictionStore(home / "monitor.db")
    for index, instance in enumerate(test.frame[test.features].to_dict(orient="records")):
        record = PredictionRecord(
            f"r{index:04d}",
            "breast-cancer-mlp",
            1,
            "v1",
            time.time() - 600 + index,
            1.0,
            [instance],
            outputs[index : index + 1],
            predictor.encoder,
        )
        store.record(record)
    store.close()
    with connect(home / "monitor.db") as connection:
        connection.executemany(
            "INSERT INTO feedback VALUES (?, 0, ?, NULL, ?)",
            [(f"r{index:04d}", label, time.time()) for index, label in enumerate(truth)],
        )
    registry.close()


def test_too_little_feedback_is_skipped_and_bad_labels_are_rejected(home: Path) -> None:
    registry = Registry(home)
    monitoring = MonitorConfig(store=str(home / "monitor.db"))
    PredictionStore(home / "monitor.db").close()
    skipped = update(registry, "breast-cancer-mlp", FAST, monitoring)
    assert skipped.outcome == "skipped"
    assert "0 labelled rows" in skipped.reason
    registry.close()
    _store_feedback(home, "shuffled")
    registry = Registry(home)
    rejected = update(registry, "breast-cancer-mlp", FAST, monitoring)
    assert rejected.outcome == "rejected", rejected.reason
    assert rejected.judgement is not None
    assert rejected.judgement.passed is False
    assert rejected.judgement.metric == "accuracy"
    assert rejected.judgement.reason == rejected.reason
    (decided,) = [event for event in registry.history("breast-cancer-mlp") if event.kind == "update_rejected"]
    assert decided.details["judgement"] == rejected.judgement.model_dump(mode="json")
    assert rejected.rows == {"feedback": 84, "replay": 84, "recent_holdout": 36}
    assert [version.version for version in registry.list_versions("breast-cancer-mlp")] == [1]
    events = [event.kind for event in registry.history("breast-cancer-mlp")]
    assert "update_skipped" in events
    assert "update_rejected" in events
    registry.close()


def _traffic(
    client: Any, rows: list[dict[str, float]], truth: list[str], canary_breaks: bool, stop: threading.Event
) -> None:
    """Send predictions and their feedback until stopped (bounded: at most 2,000 requests). Production's
    answers get the true label. The canary's answers are all marked wrong when it ``breaks``, and all right
    otherwise: a dozen labelled answers must decide the case, not the sampling noise of a 90 % model."""
    for index in range(2000):
        if stop.is_set():
            return
        row = index % len(rows)
        answer = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": [rows[row]]})
        label = truth[row]
        if int(answer.headers["X-Model-Version"]) == 2:
            predicted = answer.json()["predictions"][0]["label"]
            wrong = "benign" if predicted == "malignant" else "malignant"
            label = wrong if canary_breaks else predicted
        client.post("/v1/feedback", json={"request_id": answer.json()["request_id"], "label": label})


@pytest.mark.parametrize("canary_breaks", [True, False])
def test_a_collapsing_canary_is_rolled_back_and_a_healthy_one_promoted(
    home: Path, canary_breaks: bool
) -> None:
    _store_feedback(home, "true")
    registry = Registry(home)
    monitoring = MonitorConfig(store=str(home / "monitor.db"), interval_s=3600)
    candidate = update(
        registry, "breast-cancer-mlp", FAST.model_copy(update={"margin": -1.0, "tolerance": 1.0}), monitoring
    )
    assert candidate.outcome == "registered", candidate.reason
    assert candidate.candidate == "breast-cancer-mlp@2"
    assert registry.open("breast-cancer-mlp@2").manifest.lineage.parent == "breast-cancer-mlp@1"
    test = training_split(registry.open("breast-cancer-mlp@1"), "test")
    rows = test.frame[test.features].to_dict(orient="records")
    truth = test.frame[test.target].astype(str).tolist()
    app = create_app(
        registry, ["breast-cancer-mlp@1"], ServeConfig(), admin_token=TOKEN, monitoring=monitoring
    )
    stop = threading.Event()
    with live_server(app) as client:
        sender = threading.Thread(target=_traffic, args=(client, rows, truth, canary_breaks, stop))
        sender.start()
        try:
            admin = AdminClient(str(client.base_url), TOKEN)
            result = canary(
                registry,
                admin,
                candidate,
                registry.open("breast-cancer-mlp@2"),
                registry.open("breast-cancer-mlp@1"),
                FAST,
                home / "monitor.db",
            )
        finally:
            stop.set()
            sender.join(timeout=30)
        status = client.get(
            "/admin/models/breast-cancer-mlp", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
    assert result.canary is not None
    assert result.canary["candidate"]["samples"] >= FAST.canary_min_samples
    if canary_breaks:
        assert result.outcome == "rolled_back", result.reason
        assert result.canary["candidate"]["accuracy"] < 0.3
        assert status["canary"] is None
        assert status["primary"]["version"] == 1
    else:
        assert result.outcome == "promoted", result.reason
        assert status["primary"]["version"] == 2
        assert registry.resolve("breast-cancer-mlp@production").version == 2
    kinds = [event.kind for event in registry.history("breast-cancer-mlp")]
    assert ("update_rolled_back" if canary_breaks else "update_promoted") in kinds
    registry.close()


def test_watch_runs_on_an_alert_and_the_command_reports_in_json(
    home: Path, cli: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("MODELCYCLE_HOME", str(home))
    registry = Registry(home)
    monitoring = MonitorConfig(store=str(home / "monitor.db"))
    PredictionStore(home / "monitor.db").close()
    results: list[str] = []
    settings = FAST.model_copy(update={"watch_every": "1d", "poll_s": 0.01})

    def watching() -> None:  # bounded: 300 checks of 10 ms
        watch(
            registry,
            "breast-cancer-mlp",
            settings,
            monitoring,
            admin=None,
            on_result=lambda r: results.append(r.outcome),
            rounds=300,
        )

    watcher = threading.Thread(target=watching)
    watcher.start()
    time.sleep(0.3)
    assert results == []  # no alert yet, and the schedule's first run is a day away
    registry.log_event("breast-cancer-mlp", "alert", actor="monitor", reason="drift: mean radius")
    watcher.join(timeout=30)
    assert results == ["skipped"]  # the alert triggered exactly one run
    registry.close()
    shown = cli("update", "breast-cancer-mlp", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["outcome"] == "skipped"


def test_the_judgement_keeps_its_json_fields(capsys: Any) -> None:
    """``modelcycle update --json`` prints the judgement with the field names it always had."""
    gate = Gate(max_drop=0.01)
    judgement = Judgement(
        metric="accuracy",
        original_holdout=HoldoutVerdict.of(gate.judge("accuracy", 0.9, 0.875)),
        recent_traffic=HoldoutVerdict.of(gate.judge("accuracy", 0.5, 0.75)),
        margin=0.0,
        passed=False,
        reason="worse on the original holdout by 0.0250 accuracy (tolerance 0.01)",
    )
    result = UpdateResult("m", "m@1", "rejected", judgement.reason, judgement=judgement)
    emit_json(result)
    printed = json.loads(capsys.readouterr().out)
    assert printed["judgement"] == {
        "metric": "accuracy",
        "original_holdout": {
            "metric": "accuracy",
            "base": 0.9,
            "candidate": 0.875,
            "delta": pytest.approx(-0.025),
            "drop": pytest.approx(0.025),
            "passed": False,
        },
        "recent_traffic": {
            "metric": "accuracy",
            "base": 0.5,
            "candidate": 0.75,
            "delta": 0.25,
            "drop": -0.25,
            "passed": True,
        },
        "margin": 0.0,
        "passed": False,
        "reason": "worse on the original holdout by 0.0250 accuracy (tolerance 0.01)",
    }
    with pytest.raises(ValidationError, match="passed"):
        Judgement.model_validate({**printed["judgement"], "passed": "perhaps"})
