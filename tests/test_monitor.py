"""Monitoring: the prediction store (masking, dropping, retention), feedback joined into live quality that
equals scikit-learn on the same rows, drift of served traffic, alerts as registry events and webhook calls,
and the metrics that deploy/ refers to."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from sklearn.metrics import accuracy_score, f1_score

from modelcycle.config import AlertRule, MonitorConfig, ServeConfig, WebhookConfig, load_config
from modelcycle.data import TargetEncoder
from modelcycle.errors import ConfigError
from modelcycle.monitor import store as store_module
from modelcycle.monitor.alerts import Alerter
from modelcycle.monitor.database import connect, open_database
from modelcycle.monitor.drift import DriftReport, FeatureDrift
from modelcycle.monitor.live import LiveMonitor, TokenBucket
from modelcycle.monitor.metrics import ServerMetrics
from modelcycle.monitor.quality import LiveQuality
from modelcycle.monitor.reference import dataset_drift
from modelcycle.monitor.store import PredictionRecord, PredictionStore
from modelcycle.pipeline import train
from modelcycle.predictor import training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES, free_port, metric_value, train_into
from tests.test_serve import wait_ready

pytest_plugins = ["tests.store_backends"]  # store_location: the tests that take it run on each backend
CLASSIFIER = TargetEncoder("classification")
CLASSIFIER.classes_ = ["no", "yes"]


def _record(request_id: str, inputs: list[Any], created: float | None = None) -> PredictionRecord:
    outputs = np.tile([[0.0, 1.0]], (len(inputs), 1))
    return PredictionRecord(
        request_id, "m", 1, "v1", created or time.time(), 1.0, inputs, outputs, CLASSIFIER
    )


def test_the_store_masks_before_writing_and_decodes_predictions(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "monitor.db", masking={})
    store.record(_record("r1", [{"note": "mail jane@example.com", "age": 41}, "call +44 20 7946 0958"]))
    assert store.flush()
    store.close()
    with connect(tmp_path / "monitor.db") as connection:
        rows = connection.execute(
            "SELECT row, inputs, prediction, score, probabilities FROM predictions"
        ).fetchall()
    assert [json.loads(row[1]) for row in rows] == [{"note": "mail [EMAIL]", "age": 41}, "call [PHONE]"]
    assert all(row[2] == "yes" for row in rows)
    assert rows[0][3] == pytest.approx(np.exp(1) / (1 + np.exp(1)))
    assert json.loads(rows[0][4]) == pytest.approx([1 / (1 + np.e), np.e / (1 + np.e)], abs=1e-6)
    assert "jane@example.com" not in (tmp_path / "monitor.db").read_bytes().decode("latin-1")
    assert store.masked == {"email": 1, "phone": 1}  # counted in the writer process, reported back


def test_generated_text_is_stored_as_the_prediction_and_masked_whatever_the_fields(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "monitor.db", masking={"fields": ["content"]})
    asked = {"messages": [{"role": "user", "content": "I am ada@example.com"}], "user": "bob@example.com"}
    answer = "Hello ada@example.com, call +44 20 7946 0958"
    empty = np.empty((1, 0))
    store.record(PredictionRecord("g", "lm", 1, "openai", time.time(), 9.0, [asked], empty, None, answer))
    assert store.flush()
    store.close()
    with connect(tmp_path / "monitor.db") as connection:
        inputs, prediction, score = connection.execute(
            "SELECT inputs, prediction, score FROM predictions"
        ).fetchone()
    assert json.loads(inputs) == {
        "messages": [{"role": "user", "content": "I am [EMAIL]"}],
        "user": "bob@example.com",  # not a field to mask
    }
    assert (prediction, score) == ("Hello [EMAIL], call [PHONE]", None)


def test_the_store_keeps_tensors_row_by_row_and_integers_beyond_64_bits(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "monitor.db")
    tensors = {"image": np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)}
    store.record(PredictionRecord("t", "m", 1, "v2", time.time(), 1.0, tensors, np.zeros((2, 2)), None))
    store.record(_record("big", [{"id": 2**70}]))  # beyond orjson's 64 bits: the slow path
    assert store.flush()
    store.close()
    with connect(tmp_path / "monitor.db") as connection:
        rows = connection.execute("SELECT request_id, row, inputs, prediction FROM predictions").fetchall()
    assert sorted(rows) == [
        ("big", 0, '{"id":1180591620717411303424}', "yes"),
        ("t", 0, '{"image":[[[0.0,1.0],[2.0,3.0]]]}', None),
        ("t", 1, '{"image":[[[4.0,5.0],[6.0,7.0]]]}', None),
    ]


def test_a_bad_masking_rule_is_refused_before_any_writer_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"monitor\.pii\.patterns\.ticket"):
        PredictionStore(tmp_path / "monitor.db", masking={"patterns": {"ticket": "T-(["}})


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "monitor.db", buffer_size=2)
    assert store.record(_record("first", [{}]))
    assert store.flush()
    writer = store._writer
    assert writer is not None
    os.kill(writer.pid, signal.SIGSTOP)  # a stalled writer (a slow disk): the feeder waits on its answer
    try:
        store.record(_record("second", [{}]))
        deadline = time.monotonic() + 5
        while store._buffer and time.monotonic() < deadline:  # the feeder has sent it and waits
            time.sleep(0.01)
        started = time.perf_counter()
        accepted = [store.record(_record(f"r{index}", [{}])) for index in range(5)]
        assert time.perf_counter() - started < 0.5  # never waits for the writer
        assert accepted == [True, True, False, False, False]
        assert store.dropped == 3
    finally:
        os.kill(writer.pid, signal.SIGCONT)
    assert store.flush()
    store.close()
    assert (store.written, store.failed) == (4, 0)
    with connect(tmp_path / "monitor.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 4


def test_a_writer_that_dies_is_counted_and_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "RESTART_AFTER_S", 0.0)
    store = PredictionStore(tmp_path / "monitor.db")
    store.record(_record("before", [{}]))
    assert store.flush()
    first = store._writer
    assert first is not None
    first.kill()
    first.wait()
    store.record(_record("lost", [{}]))  # sent to the dead writer: counted as failed
    assert store.flush()
    store.record(_record("after", [{}]))
    assert store.flush()
    store.close()
    assert store.failed == 1
    assert store._writer is None
    with connect(tmp_path / "monitor.db") as connection:
        stored = {row[0] for row in connection.execute("SELECT request_id FROM predictions")}
    assert stored == {"before", "after"}


def test_retention_by_age_and_by_size(store_location: str) -> None:
    store = PredictionStore(store_location)
    now = time.time()
    store.record(_record("ancient", [{}], created=now - 8 * 86_400))
    for index in range(5):
        store.record(_record(f"r{index}", [{}], created=now - 100 + index))
    store.close()
    # the writer runs retention when it starts, then every minute
    restarted = PredictionStore(store_location, retention_days=7, max_rows=3)
    restarted.record(_record("r5", [{}], created=now))
    restarted.close()
    written = ["ancient"] + [f"r{index}" for index in range(6)]
    with open_database(store_location) as database:
        kept = [request_id for request_id in written if database.find(request_id, 0) is not None]
    assert kept == ["r2", "r3", "r4", "r5"]


@pytest.fixture(scope="module")
def mlp_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_into(
        tmp_path_factory.mktemp("monitor-home"), ("breast-cancer-mlp.yaml", ["train.epochs=10"])
    )


@pytest.fixture
def served(mlp_home: Path, tmp_path: Path, store_location: str) -> Iterator[tuple[TestClient, Registry]]:
    """A server on a copy of the trained home (alerts one test raised are not firing in the next), its
    store on each backend."""
    home = shutil.copytree(mlp_home, tmp_path / "home")
    registry = Registry(home)
    monitoring = MonitorConfig(store=store_location, interval_s=3600, drift_min_rows=100)
    app = create_app(registry, ["breast-cancer-mlp@1"], ServeConfig(), monitoring=monitoring)
    with TestClient(app) as client:
        wait_ready(client)
        yield client, registry
    registry.close()


def _instances(registry: Registry, rows: int) -> tuple[list[dict[str, float]], list[str]]:
    dataset = training_split(registry.open("breast-cancer-mlp@1"), "test")
    frame = dataset.frame.iloc[:rows]
    features = frame[dataset.features].to_dict(orient="records")
    return features, [str(label) for label in frame[dataset.target]]


def test_feedback_turns_into_live_quality_equal_to_sklearn(served: tuple[TestClient, Registry]) -> None:
    client, registry = served
    instances, truth = _instances(registry, 40)
    predicted, ids = [], []
    for start in range(0, 40, 10):  # multi-row requests: feedback names the row
        answer = client.post(
            "/v1/models/breast-cancer-mlp:predict", json={"instances": instances[start : start + 10]}
        )
        assert answer.status_code == 200
        predicted += [item["label"] for item in answer.json()["predictions"]]
        ids += [(answer.json()["request_id"], row) for row in range(10)]
    for (request_id, row), label in zip(ids, truth, strict=True):
        reply = client.post("/v1/feedback", json={"request_id": request_id, "row": row, "label": label})
        assert reply.status_code == 200, reply.text
    state = client.app.state.serving  # type: ignore[attr-defined]
    state.monitor.check(state.watched())
    metrics = client.get("/metrics").text
    expected_accuracy = accuracy_score(truth, predicted)
    expected_f1 = f1_score(truth, predicted, average="macro")
    version = {"model": "breast-cancer-mlp", "version": "1", "window": "1h"}
    quality = "modelcycle_live_quality"
    assert metric_value(metrics, quality, **version, metric="accuracy") == pytest.approx(expected_accuracy)
    assert metric_value(metrics, quality, **version, metric="f1_macro") == pytest.approx(expected_f1)
    assert metric_value(metrics, "modelcycle_live_quality_samples", **version) == 40
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("modelcycle_predictions_total{")
    )
    assert counted == 40
    assert metric_value(metrics, "modelcycle_feedback_total", model="breast-cancer-mlp") == 40
    assert metric_value(metrics, "modelcycle_monitor_records_total", outcome="stored") == 4


def test_bad_feedback_is_a_4xx_naming_the_field(served: tuple[TestClient, Registry]) -> None:
    client, registry = served
    instances, _ = _instances(registry, 1)
    request_id = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": instances}).json()[
        "request_id"
    ]
    unknown = client.post("/v1/feedback", json={"request_id": "nope", "label": "malignant"})
    assert unknown.status_code == 404
    assert "request_id" in unknown.json()["error"]
    wrong_label = client.post("/v1/feedback", json={"request_id": request_id, "label": "purple"})
    assert wrong_label.status_code == 400
    assert "label" in wrong_label.json()["error"]
    both = client.post("/v1/feedback", json={"request_id": request_id, "label": "malignant", "value": 1.0})
    assert both.status_code == 400
    assert "exactly one" in both.json()["error"]
    bad_row = client.post("/v1/feedback", json={"request_id": request_id, "row": 5, "label": "malignant"})
    assert bad_row.status_code == 404


def test_shifted_traffic_raises_a_drift_alert_in_the_registry(served: tuple[TestClient, Registry]) -> None:
    client, registry = served
    instances, _ = _instances(registry, 60)
    same = client.app.state.serving  # type: ignore[attr-defined]
    for _ in range(2):  # 120 rows like the training data: no alert
        assert (
            client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": instances}).status_code
            == 200
        )
    assert same.monitor.check(same.watched()) == []
    shifted = [{name: value * 2.5 for name, value in row.items()} for row in instances]
    for _ in range(6):  # now most of the window is shifted
        assert (
            client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": shifted}).status_code
            == 200
        )
    alerts = same.monitor.check(same.watched())
    assert [(alert.name, alert.firing) for alert in alerts] == [("drift", True)]
    metrics = client.get("/metrics").text
    assert (
        metric_value(metrics, "modelcycle_drift_detected", model="breast-cancer-mlp", feature="dataset") == 1
    )
    assert metric_value(metrics, "modelcycle_alert_firing", model="breast-cancer-mlp", alert="drift") == 1
    events = [event.kind for event in registry.history("breast-cancer-mlp")]
    assert "alert" in events
    assert same.monitor.check(same.watched()) == []  # still drifted: announced once, not every round


def test_of_two_servers_on_one_store_only_one_runs_a_models_rounds(
    served: tuple[TestClient, Registry], store_location: str
) -> None:
    """As with ``serve --workers 2`` (or Ray Serve replicas on a PostgreSQL store): both would compute every
    round and send every alert."""
    client, registry = served
    state = client.app.state.serving  # type: ignore[attr-defined]
    instances, _ = _instances(registry, 60)
    shifted = [{name: value * 2.5 for name, value in row.items()} for row in instances]
    for _ in range(6):
        assert (
            client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": shifted}).status_code
            == 200
        )
    config = MonitorConfig(store=store_location, interval_s=3600, drift_min_rows=100)
    rival = LiveMonitor(config, registry, ServerMetrics())
    try:
        assert [alert.name for alert in state.monitor.check(state.watched())] == ["drift"]  # the first leads
        assert rival.check(state.watched()) == []
        rounds = rival.metrics.exposition().decode()
        with pytest.raises(AssertionError, match="not in /metrics"):
            metric_value(rounds, "modelcycle_drift_detected", model="breast-cancer-mlp", feature="dataset")
        state.monitor.leader.release()  # as when the leading server ends
        assert rival.check(state.watched()) == []  # it takes over the firing alert: not raised again
        rounds = rival.metrics.exposition().decode()
        assert (
            metric_value(rounds, "modelcycle_drift_detected", model="breast-cancer-mlp", feature="dataset")
            == 1
        )
        assert metric_value(rounds, "modelcycle_alert_firing", model="breast-cancer-mlp", alert="drift") == 1
        assert state.monitor.check(state.watched()) == []  # now it is the other one's turn
    finally:
        rival.close()
    assert [event.kind for event in registry.history("breast-cancer-mlp")].count("alert") == 1


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    failures_left = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 500 if _Hook.failures_left > 0 else 200
        _Hook.failures_left -= 1
        if status == 200:
            _Hook.received.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_quality_alerts_go_to_the_registry_and_a_retried_webhook(mlp_home: Path, tmp_path: Path) -> None:
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=hook.serve_forever, daemon=True)
    thread.start()
    registry = Registry(shutil.copytree(mlp_home, tmp_path / "home"))
    try:
        webhook = WebhookConfig(url=f"http://127.0.0.1:{hook.server_port}/alerts", retries=2, timeout_s=2)
        rule = AlertRule(metric="accuracy", window="1h", below=0.9, min_samples=10)
        alerter = Alerter(registry, [rule], webhook)
        low = {"1h": LiveQuality("breast-cancer-mlp", None, "1h", 50, {"accuracy": 0.72})}
        few = {"1h": LiveQuality("breast-cancer-mlp", None, "1h", 5, {"accuracy": 0.10})}
        good = {"1h": LiveQuality("breast-cancer-mlp", None, "1h", 50, {"accuracy": 0.95})}
        assert alerter.check("breast-cancer-mlp", few, None) == []  # too few labels to judge
        raised = alerter.check("breast-cancer-mlp", low, None)
        assert [(alert.name, alert.firing, alert.value) for alert in raised] == [
            ("accuracy_1h_below_0.9", True, 0.72)
        ]
        restarted = Alerter(registry, [rule], webhook)  # a server started again reads what still fires
        assert restarted.check("breast-cancer-mlp", low, None) == []
        resolved = restarted.check("breast-cancer-mlp", good, None)
        assert [alert.firing for alert in resolved] == [False]
        assert Alerter(registry, [rule], webhook).check("breast-cancer-mlp", low, None) != []  # fires anew
        assert [(body["event"], body["value"]) for body in _Hook.received] == [
            ("alert", 0.72),
            ("alert_resolved", 0.95),
            ("alert", 0.72),
        ]
        kinds = [event.kind for event in registry.history("breast-cancer-mlp")]
        assert {"alert", "alert_resolved"} <= set(kinds)
    finally:
        hook.shutdown()
        registry.close()


def test_a_drift_report_alerts_only_when_the_share_is_reached(mlp_home: Path) -> None:
    registry = Registry(mlp_home)
    try:
        alerter = Alerter(registry, [AlertRule(metric="drift")])
        one = FeatureDrift("a", "numeric", 200, "ks", 0.001, 0.05, True)
        calm = FeatureDrift("b", "numeric", 200, "ks", 0.6, 0.05, False)
        assert alerter.check("breast-cancer-mlp", {}, DriftReport([one, calm, calm], 0.5, 200)) == []
        assert len(alerter.check("breast-cancer-mlp", {}, DriftReport([one, one, calm], 0.5, 200))) == 1
    finally:
        registry.close()


def test_store_tables_exist_for_readers_before_the_first_write(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "monitor.db")
    try:
        with sqlite3.connect(tmp_path / "monitor.db") as connection:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        assert {"predictions", "feedback", "quality", "drift"} <= tables
    finally:
        store.close()


def test_monitor_drift_command_on_same_and_shifted_data(
    mlp_home: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCYCLE_HOME", str(mlp_home))
    same = cli("monitor", "drift", "breast-cancer-mlp@1", "--data", "builtin:breast_cancer", "--json")
    assert same.exit_code == 0, same.stderr
    report = json.loads(same.stdout)
    assert report["drifted"] is False
    assert report["rows"] == 569
    assert {"mean radius", "prediction"} <= {item["feature"] for item in report["features"]}
    frame = training_split(Registry(mlp_home).open("breast-cancer-mlp@1"), "test").frame
    shifted = tmp_path / "shifted.csv"
    frame.drop(columns=["target"]).mul(2.5).to_csv(shifted, index=False)
    moved = json.loads(
        cli("monitor", "drift", "breast-cancer-mlp@1", "--data", str(shifted), "--json").stdout
    )
    assert moved["drifted"] is True
    assert len(moved["drifted_features"]) >= 15
    missing = cli("monitor", "drift", "breast-cancer-mlp@1", "--data", str(tmp_path / "absent.csv"))
    assert missing.exit_code != 0
    assert "absent.csv" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_monitor_report_writes_one_html_page_with_plots(
    mlp_home: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCYCLE_HOME", str(mlp_home))
    config = tmp_path / "config.yaml"
    config.write_text(
        (EXAMPLES / "breast-cancer-mlp.yaml").read_text() + f"\nmonitor:\n  store: {tmp_path / 'store.db'}\n"
    )
    absent = cli("monitor", "report", "breast-cancer-mlp", "--config", str(config))
    assert absent.exit_code != 0
    assert "no prediction store" in absent.stderr
    store = PredictionStore(tmp_path / "store.db")
    for index in range(30):
        record = _record(f"r{index}", [{"x": index}], created=time.time() - index * 60)
        store.record(dataclasses.replace(record, model="breast-cancer-mlp"))
    store.close()
    out = tmp_path / "report.html"
    written = cli(
        "monitor", "report", "breast-cancer-mlp", "--since", "2h", "--config", str(config), "--out", str(out)
    )
    assert written.exit_code == 0, written.stderr
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == 3  # traffic, latency, predicted classes
    assert "30 stored predictions" in page
    bad = cli("monitor", "report", "breast-cancer-mlp", "--since", "yesterday", "--config", str(config))
    assert bad.exit_code == 2
    assert "--since" in bad.stderr


@pytest.mark.slow  # measured: 12 CPU-s on its own (training and embedding the test split inside the test)
def test_image_drift_is_seen_through_the_models_embeddings(registry: Registry) -> None:
    result = train(load_config(EXAMPLES / "digits-cnn.yaml", ["train.epochs=1"]), registry)
    assert result is not None
    bundle = registry.open(result.ref)
    profile = bundle.read_json("reference.json")["embedding"]
    assert len(profile["sample"]) == 256
    assert len(profile["components"]) == 16
    assert len(profile["mean"]) == profile["dim"]
    test = training_split(bundle, "test")
    same = {item.feature: item for item in dataset_drift(bundle, test).features}
    assert not same["embedding"].drifted
    assert test.images is not None
    inverted = dataclasses.replace(test, images=16.0 - test.images)
    moved = {item.feature: item for item in dataset_drift(bundle, inverted).features}
    assert moved["embedding"].drifted
    assert moved["embedding"].score < 0.01


def test_the_records_budget_samples_out_beyond_its_rate(tmp_path: Path) -> None:
    bucket = TokenBucket(100)
    assert sum(bucket.take() for _ in range(1000)) == 100  # a second's burst, then nothing
    started = time.monotonic()
    bucket.updated = started - 0.1  # a tenth of a second has passed, without depending on a sleep's length
    refilled = sum(bucket.take() for _ in range(1000))
    later = (time.monotonic() - started) * 100  # what the loop itself took adds to it (a loaded machine)
    assert 10 <= refilled <= 10 + math.ceil(later) + 1
    config = MonitorConfig(store=str(tmp_path / "m.db"), max_records_per_s=50)
    monitor = LiveMonitor(config, Registry(tmp_path / "home"), ServerMetrics())
    for index in range(200):
        monitor.record(f"r{index}", "m", 1, "v1", [{}], np.zeros((1, 2)), CLASSIFIER, 1.0)
    monitor.close()
    assert monitor.sampled_out == 150
    assert monitor.store.written == 50


@contextlib.contextmanager
def _real_server(
    home: Path, tmp_path: Path, *options: str
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, list[dict[str, float]]]]:
    """``modelcycle serve breast-cancer-mlp@1`` in a process group of its own, storing to ``tmp_path/m.db``,
    once ready: the process, a client and a valid request's instances."""
    config = tmp_path / "serve.yaml"
    config.write_text(
        (EXAMPLES / "breast-cancer-mlp.yaml").read_text() + f"\nmonitor:\n  store: {tmp_path / 'm.db'}\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "modelcycle", "serve", "breast-cancer-mlp@1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--config", str(config), *options],
        env={**os.environ, "MODELCYCLE_HOME": str(home), "TMPDIR": str(tmp_path)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        features = Registry(home).open("breast-cancer-mlp@1").read_json("reference.json")["features"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield server, client, [dict.fromkeys(features, 1.0)]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _interrupt(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a terminal sends it to the whole process group; the server must end cleanly."""
    os.killpg(server.pid, signal.SIGINT)
    _, errors = server.communicate(timeout=60)
    assert server.returncode == 0, errors.decode()[-2000:]
    assert b"Traceback" not in errors


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the writer process through /proc")
def test_ctrl_c_on_the_server_stores_every_answered_request(mlp_home: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the server's whole process group; the writer, in a session of its own, still takes the
    server's last batch, and ends with the server."""
    with _real_server(mlp_home, tmp_path) as (server, client, instances):
        for _ in range(20):
            answer = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": instances})
            assert answer.status_code == 200
        writers: list[int] = []
        deadline = time.monotonic() + 10
        while not writers and time.monotonic() < deadline:  # started with the first batch, within 0.2 s
            time.sleep(0.05)
            tasks = Path(f"/proc/{server.pid}/task")
            writers = [
                int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()
            ]
        assert len(writers) == 1
        _interrupt(server)
    with pytest.raises(ProcessLookupError):
        os.kill(writers[0], 0)  # the writer ended with the server
    with connect(tmp_path / "m.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 20


@pytest.mark.integration
def test_with_workers_every_scrape_counts_every_workers_requests(mlp_home: Path, tmp_path: Path) -> None:
    """A scrape reaches one of the workers; each used to answer with its own share of the requests."""
    with _real_server(mlp_home, tmp_path, "--workers", "2") as (server, client, instances):
        url = f"{client.base_url}/v1/models/breast-cancer-mlp:predict"
        for _ in range(40):  # a connection each, so the kernel hands them to either worker
            assert httpx.post(url, json={"instances": instances}, timeout=30).status_code == 200
        scrapes = [httpx.get(f"{client.base_url}/metrics", timeout=30).text for _ in range(8)]
        for scrape in scrapes:
            labels = {"model": "breast-cancer-mlp", "version": "1", "protocol": "v1", "code": "200"}
            assert metric_value(scrape, "modelcycle_requests_total", **labels) == 40
            assert (
                metric_value(
                    scrape, "modelcycle_request_latency_seconds_count", model=labels["model"], protocol="v1"
                )
                == 40
            )
        stored, waiting, deadline = 0.0, -1.0, time.monotonic() + 20
        while (stored, waiting) != (40, 0) and time.monotonic() < deadline:  # shared every second
            time.sleep(0.2)
            scrape = httpx.get(f"{client.base_url}/metrics", timeout=30).text
            stored = metric_value(scrape, "modelcycle_monitor_records_total", outcome="stored")
            waiting = metric_value(scrape, "modelcycle_queue_depth", model="breast-cancer-mlp")
        assert (stored, waiting) == (40, 0)
        served = {  # each worker's own count, from its file: both took requests, so the sums above are sums
            path.name: sum(
                value
                for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
                if json.loads(key)[1] == "modelcycle_requests_total"
            )
            for path in tmp_path.glob("modelcycle-metrics-*/counter_*.db")
        }
        assert sum(served.values()) == 40
        assert sum(count > 0 for count in served.values()) == 2, served
        _interrupt(server)
    assert not list(tmp_path.glob("modelcycle-metrics-*"))  # the workers' shared values went with them
    with connect(tmp_path / "m.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 40
