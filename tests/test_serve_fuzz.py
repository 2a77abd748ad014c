"""A bounded fuzz run with schemathesis against the server's own OpenAPI document: whatever a client sends,
the answer is never a 5xx."""

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
from tests.conftest import EXAMPLES
from tests.test_serve import live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    registry = Registry(home)
    train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=2"]), registry)
    app = create_app(registry, ["breast-cancer-mlp"], ServeConfig(), admin_token="fuzz-token")
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
