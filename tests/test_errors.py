"""Errors name the parameter at fault as each caller knows it: the library and the HTTP API by its own name
(the request field), the CLI by its flag; no library message names a command-line flag."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelcycle.config import ServeConfig
from modelcycle.errors import ConfigError
from modelcycle.predictor import training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES, train_into

MODEL = "breast-cancer-mlp"


def test_the_parameter_leads_the_message_and_a_boundary_may_rename_it() -> None:
    error = ConfigError("unknown method 'x'", hint="set method to one of ig", parameter="method")
    assert error.message == "method: unknown method 'x'"
    assert str(error) == "method: unknown method 'x' (set method to one of ig)"
    assert error.named("--method") == "--method: unknown method 'x'"
    plain = ConfigError("the config is empty")
    assert plain.message == plain.named("--anything") == "the config is empty"


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_into(tmp_path_factory.mktemp("errors"), ("breast-cancer-mlp.yaml", ["train.epochs=1"]))


def instances(home: Path) -> list[dict[str, Any]]:
    registry = Registry(home)
    try:
        rows = training_split(registry.open(MODEL), "test")
    finally:
        registry.close()
    return rows.frame.drop(columns=[rows.target]).head(2).to_dict(orient="records")


def test_the_cli_names_the_flag(
    trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setenv("MODELCYCLE_HOME", str(trained_home))
    request = tmp_path / "rows.json"
    request.write_text(json.dumps({"instances": instances(trained_home)}))
    result = cli("explain", MODEL, "--input", str(request), "--method", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --method: unknown method 'nope'")
    assert "set method to one of" in result.stderr


def test_an_option_named_otherwise_in_python_is_shown_as_its_flag(
    trained_home: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setenv("MODELCYCLE_HOME", str(trained_home))
    result = cli("train", str(EXAMPLES / "breast-cancer-mlp.yaml"), "--set", "seed")  # Python: `overrides`
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --set: 'seed': expected KEY=VALUE")


def wait_ready(client: TestClient, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)


def test_the_http_api_names_the_request_field_not_a_flag(trained_home: Path) -> None:
    registry = Registry(trained_home)
    try:
        with TestClient(create_app(registry, [MODEL], ServeConfig())) as client:
            wait_ready(client)
            answer = client.post(
                f"/v1/models/{MODEL}:explain", json={"instances": instances(trained_home), "method": "nope"}
            )
    finally:
        registry.close()
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith("method: unknown method 'nope'")
    assert "--" not in error
