"""The request path alone, with stand-in versions and a real metrics registry: every request is counted once
with the status it ended with (failures included), timed, and stored with what the caller sent; only an
unpinned answer is mirrored to the shadow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from modelcycle.config import ServeConfig
from modelcycle.errors import OverloadedError, RequestError
from modelcycle.monitor.metrics import ServerMetrics
from modelcycle.serve.gateway import Gateway
from modelcycle.serve.request_path import Exchange, answer, new_request_id
from modelcycle.serve.served import ServedModel
from tests.conftest import metric_value
from tests.serve.fakes import FakeLedger, FakeLoader, FakeVersion


@dataclass
class Monitor:
    records: list[tuple[Any, ...]] = field(default_factory=list)

    def record(self, *fields: Any, generated: str | None = None) -> None:
        self.records.append((*fields, generated))


@dataclass
class State:
    """What the request path reads of a server's state."""

    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    monitor: Monitor | None = field(default_factory=Monitor)
    settings: ServeConfig = field(default_factory=ServeConfig)

    def count(self, code: str, version: str = "1", protocol: str = "v2") -> float:
        labels = {"model": "m", "version": version, "protocol": protocol, "code": code}
        return metric_value(self.metrics.exposition().decode(), "modelcycle_requests_total", **labels)

    def timed(self, protocol: str = "v2") -> float:
        exposition = self.metrics.exposition().decode()
        name = "modelcycle_request_latency_seconds_count"
        return metric_value(exposition, name, model="m", protocol=protocol)


def exchange(state: State, protocol: str = "v2") -> Exchange:
    return Exchange(state, "m", FakeVersion(1), protocol, "r1")  # type: ignore[arg-type]


def test_an_answered_request_is_counted_as_200_then_timed_and_stored() -> None:
    state = State()
    done = exchange(state, "openai")
    with done.counted():
        pass
    assert state.count("200", protocol="openai") == 1
    with pytest.raises(AssertionError, match="not in /metrics"):
        state.timed("openai")  # a stream is timed when its last piece went out, not when it started
    done.stored([{"prompt": "hi"}], np.empty((1, 0)), None, generated="there")
    assert state.timed("openai") == 1
    assert state.monitor is not None
    ((request_id, model, version, protocol, inputs, _, target, latency_ms, generated),) = (
        state.monitor.records
    )
    assert (request_id, model, version, protocol, inputs) == ("r1", "m", 1, "openai", [{"prompt": "hi"}])
    assert (target, generated) == (None, "there")
    assert latency_ms >= 0


@pytest.mark.parametrize(
    ("error", "code"),
    [(RequestError("prompt: one prompt per request"), "400"), (OverloadedError("busy"), "503")],
)
def test_a_failed_request_is_counted_with_its_status_and_timed(error: Exception, code: str) -> None:
    state = State()
    with pytest.raises(type(error)), exchange(state).counted():
        raise error
    assert state.count(code) == 1
    assert state.timed() == 1
    assert state.monitor is not None
    assert state.monitor.records == []  # nothing to store: no answer


def test_an_unexpected_failure_is_counted_as_500() -> None:
    state = State()
    with pytest.raises(ZeroDivisionError), exchange(state).counted():
        _ = 1 / 0
    assert state.count("500") == 1


def served_model(shadow: FakeVersion) -> ServedModel:
    line_up = Gateway("m", FakeVersion(1), shadow=shadow)  # type: ignore[arg-type]
    return ServedModel(line_up, FakeLoader(set()), FakeLedger())  # type: ignore[arg-type]


def test_answer_stores_the_instances_as_sent_and_mirrors_only_unpinned_requests() -> None:
    state, shadow = State(), FakeVersion(2)
    model = served_model(shadow)
    tensors = {"x": np.ones((1, 3))}

    async def scenario() -> None:
        def encode(loaded: object) -> dict[str, np.ndarray]:
            return tensors

        await answer(state, model, encode, "v1", request_id="a", timeout=10, instances=[{"f": 1}])  # type: ignore[arg-type]
        await answer(state, model, encode, "v1", request_id="b", timeout=10, version=1)  # type: ignore[arg-type]
        await model.gateway.settle()

    asyncio.run(scenario())
    assert state.count("200", protocol="v1") == 2
    assert state.monitor is not None
    stored = {record[0]: (record[4], record[6]) for record in state.monitor.records}
    assert stored["a"] == ([{"f": 1}], "target encoder")
    assert stored["b"][0] is tensors  # no instances: the model-ready tensors are stored
    assert shadow.asked == 1
    assert model.gateway.shadow_requests == 1


def test_a_request_the_version_cannot_encode_is_counted_and_not_mirrored() -> None:
    state, shadow = State(), FakeVersion(2)
    model = served_model(shadow)

    def refuse(loaded: Any) -> Any:
        raise RequestError("instances[0]: missing feature")

    with pytest.raises(RequestError):
        asyncio.run(answer(state, model, refuse, "v1", request_id="c", timeout=10))  # type: ignore[arg-type]
    assert state.count("400", protocol="v1") == 1
    assert shadow.asked == 0


def test_request_ids_are_uuid7_and_ordered_by_time() -> None:
    ids = [new_request_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(value) == 32 and value[12] == "7" and value[16] in "89ab" for value in ids)
    assert [value[:12] for value in ids] == sorted(value[:12] for value in ids)
