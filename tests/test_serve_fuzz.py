"""A bounded fuzz run with schemathesis against the server's own OpenAPI document, a tabular model and a
language model behind it: whatever a client sends, the answer is never a 5xx nor a hang (every call is
bounded). The hand-written corpus of hostile bodies is tests/test_serve_hostile.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from modelcycle.config import ServeConfig, load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES, TINY_GPT
from tests.test_serve import live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    registry = Registry(home)
    train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2"]), registry)
    train(load_config(EXAMPLES / "tiny-gpt.yaml", TINY_GPT), registry)
    settings = ServeConfig(request_timeout_s=5)  # a hang shows as a timeout, well within the client's 30 s
    app = create_app(registry, ["breast-cancer-mlp", "tiny-gpt"], settings, admin_token="fuzz-token")
    with live_server(app) as client:
        yield client
    registry.close()


def test_no_request_makes_the_server_fail(server: httpx.Client) -> None:
    """Every operation of the OpenAPI document, 30 generated requests each (no example database)."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    codes: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            if case.path_parameters and "name" in case.path_parameters:
                case.path_parameters["name"] = "breast-cancer-mlp"  # reach the model, not only the router
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = "tiny-gpt"  # the OpenAI routes reach a language model too
            response = case.call(timeout=30)
            codes.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        call()
    assert not failures, failures[:5]
    assert len(codes) >= 100
    assert {400, 404} <= set(codes)  # the generated requests reached the validation, not just the router
