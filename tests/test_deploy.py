"""deploy/: every metric the Grafana dashboard and the alert rules use is one the server exports; promtool
accepts the rules and the server's /metrics; a real Prometheus scrapes the server and answers a query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import ROOT, free_port, train_into
from tests.test_serve import live_server, wait_ready

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "modelcycle.json"
SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing"
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_into(tmp_path_factory.mktemp("deploy-home"), ("breast-cancer-mlp.yaml", ["train.epochs=2"]))


@pytest.fixture(scope="module")
def metrics_text(home: Path) -> str:
    """/metrics after one request, one feedback and one monitoring round, so every family has samples."""
    registry = Registry(home)
    try:
        monitoring = MonitorConfig(store=str(home / "deploy.db"), drift_min_rows=1)
        with TestClient(
            create_app(registry, ["breast-cancer-mlp"], ServeConfig(), monitoring=monitoring)
        ) as client:
            wait_ready(client)
            features = registry.open("breast-cancer-mlp").read_json("reference.json")["features"]
            answer = client.post(
                "/v1/models/breast-cancer-mlp:predict", json={"instances": [dict.fromkeys(features, 1.0)]}
            )
            assert answer.status_code == 200, answer.text
            client.post("/v1/feedback", json={"request_id": answer.json()["request_id"], "label": "benign"})
            state = client.app.state.serving  # type: ignore[attr-defined]
            state.monitor.check(state.watched())
            return client.get("/metrics").text
    finally:
        registry.close()


def _exported(metrics: str) -> set[str]:
    return {SUFFIXES.sub("", line.split()[2]) for line in metrics.splitlines() if line.startswith("# TYPE ")}


def _referenced() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {
        SUFFIXES.sub("", name) for text in expressions for name in re.findall(r"modelcycle_[a-z_]+", text)
    }


def test_every_metric_that_deploy_uses_is_exported(metrics_text: str) -> None:
    referenced, exported = _referenced(), _exported(metrics_text)
    assert len(referenced) >= 12
    assert referenced <= exported, f"not exported: {sorted(referenced - exported)}"


@needs_promtool
def test_promtool_accepts_the_rules_and_the_metrics(metrics_text: str) -> None:
    rules = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout
    metrics = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics_text, capture_output=True, text=True
    )
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus (Debian: prometheus) missing")
    port = free_port()
    return Path(binary), port


@pytest.mark.integration
def test_a_real_prometheus_scrapes_the_request_count(
    home: Path, tmp_path: Path, prometheus: tuple[Path, int]
) -> None:
    binary, port = prometheus
    registry = Registry(home)
    monitoring = MonitorConfig(store=str(tmp_path / "monitor.db"))
    app = create_app(registry, ["breast-cancer-mlp"], ServeConfig(), monitoring=monitoring)
    features = registry.open("breast-cancer-mlp").read_json("reference.json")["features"]
    with live_server(app) as client:
        for _ in range(7):
            answer = client.post(
                "/v1/models/breast-cancer-mlp:predict", json={"instances": [dict.fromkeys(features, 1.0)]}
            )
            assert answer.status_code == 200
        target = str(client.base_url).removeprefix("http://").rstrip("/")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s"},
                    "scrape_configs": [{"job_name": "modelcycle", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            value = None
            deadline = time.monotonic() + 60
            query = 'sum(modelcycle_requests_total{model="breast-cancer-mlp",code="200"})'
            while value is None and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    reply = httpx.get(
                        f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
                    )
                except httpx.HTTPError:
                    continue
                result = reply.json().get("data", {}).get("result", [])
                value = float(result[0]["value"][1]) if result else None
        finally:
            process.terminate()
            process.wait(timeout=20)
    registry.close()
    assert value == 7
