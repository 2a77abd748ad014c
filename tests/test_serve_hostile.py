"""Hostile and careless clients against a live server (uvicorn on 127.0.0.1): bodies over the limit in any
transfer encoding, slow bodies, and a corpus of malformed requests. Whatever comes, the answer is a 4xx with
``{"error": ...}``, in bounded time and memory; never a 5xx."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sklearn.datasets import load_breast_cancer

from modelcycle.config import ServeConfig, load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES, TINY_GPT, metric_value
from tests.test_serve import live_server, resident_mb

LIMIT = 1 << 20  # the server's body limit in these tests
TIMEOUT_S = 2.0  # its request timeout
MLP = "breast-cancer-mlp"
GPT = "tiny-gpt"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, httpx.Client]]:
    home: Path = tmp_path_factory.mktemp("hostile-home")
    registry = Registry(home)
    train(load_config(EXAMPLES / f"{MLP}.yaml", ["train.epochs=2"]), registry)
    train(load_config(EXAMPLES / "tiny-gpt.yaml", TINY_GPT), registry)
    settings = ServeConfig(max_body_bytes=LIMIT, request_timeout_s=TIMEOUT_S)
    app = create_app(registry, [MLP, GPT], settings, admin_token="hostile-token")
    with live_server(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield app, client
    registry.close()


@pytest.fixture(scope="module")
def server(served: tuple[FastAPI, httpx.Client]) -> httpx.Client:
    return served[1]


def raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    connection.sendall(head.encode())
    return connection


def answered(connection: socket.socket) -> bool:
    return bool(select.select([connection], [], [], 0)[0])


def read_response(connection: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the HTTP/1.1 response on ``connection`` (a refused body's answer must
    close the connection: the rest of the body would be read as the next request)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += connection.recv(65536)
    status = int(head.split()[1])
    if status in (408, 413):
        assert b"\r\nconnection: close" in head.lower(), head
    return status, json.loads(body[:length])


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/{MLP}:predict",
        f"/v2/models/{MLP}/infer",
        "/v1/completions",
        f"/admin/models/{MLP}/promote",
    ],
)
def test_a_chunked_body_over_the_limit_is_refused_after_the_limit_and_memory_stays_flat(server, path):
    """400 MB offered in 1 MB chunks: the server answers 413 once the limit is passed and reads no more."""
    before = resident_mb()
    connection = raw_request(
        str(server.base_url),
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    sent = 0
    with connection:
        for _ in range(400):
            if answered(connection):
                break
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.002)
        status, body = read_response(connection)
    assert status == 413
    assert f"over the limit of {LIMIT} bytes" in body["error"]
    assert sent < 100  # it did not read the 400 MB
    assert resident_mb() - before < 50


def test_a_body_that_never_finishes_is_answered_408_within_the_request_timeout(server):
    connection = raw_request(
        str(server.base_url),
        f"POST /v1/models/{MLP}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"instances": [',
    )
    started = time.monotonic()
    with connection:
        status, body = read_response(connection)
    assert status == 408
    assert "not received whole within 2 s" in body["error"]
    assert TIMEOUT_S - 0.5 <= time.monotonic() - started < TIMEOUT_S + 2  # its clock starts first


def test_a_chunked_body_within_the_limit_is_served(server):
    (tensor,) = server.get(f"/v2/models/{MLP}").json()["inputs"]
    rows = {"name": tensor["name"], "shape": [2, 30], "datatype": "FP32", "data": [0.5] * 60}
    body = json.dumps({"inputs": [rows]}).encode()
    response = server.post(
        f"/v2/models/{MLP}/infer",
        content=iter([body[:10], body[10:]]),  # a generator: httpx sends it chunked
        headers={"content-type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"][0] == 2


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


MLP_ROW = "[" + ", ".join(["1.0"] * 30) + "]"  # a v2 tensor's data
FEATURES = load_breast_cancer().feature_names.tolist()  # what the simple API names
SIMPLE_ROW = json.dumps(dict.fromkeys(FEATURES, 1.0))
V2_ROW = '{"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": ' + MLP_ROW + "}]}"
HOSTILE = [  # (path, body): what careless and hostile clients sent; each must get a 4xx naming the fault
    (f"/v1/models/{MLP}:predict", '{"instances": [' + SIMPLE_ROW.replace("1.0", "1e308", 3) + "]}"),
    (f"/v1/models/{MLP}:predict", '{"instances": [' + SIMPLE_ROW.replace("1.0", "-1e308", 3) + "]}"),
    (f"/v1/models/{MLP}:predict", '{"instances": [' + SIMPLE_ROW.replace("1.0", "3e38") + "]}"),
    (f"/v2/models/{MLP}/infer", V2_ROW.replace("1.0", "3e38")),
    (f"/v1/models/{MLP}:predict", '{"instances": ' + nested(3000) + "}"),
    (f"/v2/models/{MLP}/infer", '{"inputs": ' + nested(3000) + "}"),
    (
        f"/v2/models/{MLP}/infer",
        '{"inputs": [{"name": "x", "shape": [true, 30], "datatype": "FP32", "data": []}]}',
    ),
    (
        f"/v2/models/{MLP}/infer",
        '{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [true]}]}',
    ),
    (
        f"/v2/models/{MLP}/infer",
        '{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [1e39]}]}',
    ),
    (
        f"/v2/models/{MLP}/infer",
        '{"inputs": [{"name": "x", "shape": [1, 1e30], "datatype": "FP32", "data": []}]}',
    ),
    (
        f"/v2/models/{MLP}/infer",
        '{"inputs": [{"name": "x", "shape": [99999999999999999999, 30], "datatype": "FP32", "data": []}]}',
    ),
    ("/v1/completions", f'{{"model": "{GPT}", "prompt": "To be", "seed": {2**64}}}'),
    ("/v1/completions", f'{{"model": "{GPT}", "prompt": "To be", "seed": -{2**70}}}'),
    ("/v1/completions", f'{{"model": "{GPT}", "prompt": "To be", "max_tokens": 1e400}}'),
    ("/v1/completions", f'{{"model": "{GPT}", "prompt": {nested(3000)}}}'),
    (
        "/v1/chat/completions",
        f'{{"model": "{GPT}", "messages": [{{"role": "user", "content": {nested(3000)}}}]}}',
    ),
    ("/v1/chat/completions", f'{{"model": "{GPT}", "messages": "hi"}}'),
    ("/v1/feedback", '{"id": ' + nested(3000) + ', "label": 1}'),
    (f"/admin/models/{MLP}/promote", nested(3000)),
    ("/v1/no-such-route", "{}"),
    (  # the same tensor twice
        f"/v2/models/{MLP}/infer",
        '{"inputs": [' + V2_ROW[len('{"inputs": [') : -2] + ", " + V2_ROW[len('{"inputs": [') : -2] + "]}",
    ),
    (f"/v1/models/{MLP}:predict", "\ufeff{}"),
    (f"/v1/models/{MLP}:predict", '{"instances": [' + SIMPLE_ROW + "]}".encode("utf-16").decode("latin-1")),
]


@pytest.mark.parametrize(("path", "body"), HOSTILE, ids=[f"{i}" for i in range(len(HOSTILE))])
def test_hostile_bodies_get_a_4xx_that_names_the_fault(server, path, body):
    response = server.post(
        path,
        content=body.encode("latin-1", "replace") if isinstance(body, str) else body,
        headers={"content-type": "application/json", "authorization": "Bearer hostile-token"},
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error  # the OpenAI shape nests it
    assert ":" in message, message  # "<field or body>: <what is wrong>"


def test_a_tiny_temperature_is_greedy_not_a_crash(server):
    body = {"model": GPT, "prompt": "To be", "max_tokens": 4, "temperature": 1e-45}
    greedy = {**body, "temperature": 0}
    response = server.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert (
        response.json()["choices"][0]["text"]
        == server.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
    )


def test_an_input_that_overflows_inside_the_model_is_a_400_counted_as_one(server):
    def count(code: str) -> float:
        try:
            return metric_value(
                server.get("/metrics").text,
                "modelcycle_requests_total",
                model=MLP,
                version="1",
                protocol="v2",
                code=code,
            )
        except AssertionError:  # not counted yet
            return 0.0

    before = count("400"), count("200")
    response = server.post(f"/v2/models/{MLP}/infer", content=V2_ROW.replace("1.0", "3e38"))
    assert response.status_code == 400
    assert "row 0: the model's output is not finite" in response.json()["error"]
    assert (count("400"), count("200")) == (before[0] + 1, before[1])


def test_a_caller_chosen_id_only_correlates_and_never_replaces_a_stored_prediction(server):
    """Two callers who send the same id get two predictions, each under an id of the server's own."""
    (tensor,) = server.get(f"/v2/models/{MLP}").json()["inputs"]
    simple, v2 = [], []
    for value in (0.5, 1.5):
        simple.append(
            server.post(
                f"/v1/models/{MLP}:predict",
                json={"instances": [dict.fromkeys(FEATURES, value)]},
                headers={"x-request-id": "alice@example.com"},
            )
        )
        rows = {"name": tensor["name"], "shape": [1, 30], "datatype": "FP32", "data": [value] * 30}
        v2.append(server.post(f"/v2/models/{MLP}/infer", json={"id": "alice@example.com", "inputs": [rows]}))
    ids = [answer.json()["request_id"] for answer in simple] + [
        answer.json()["parameters"]["request_id"] for answer in v2
    ]
    assert len(set(ids)) == 4
    assert "alice@example.com" not in ids
    assert [answer.headers["x-request-id"] for answer in simple + v2] == ids
    assert [answer.json()["correlation_id"] for answer in simple] == ["alice@example.com"] * 2
    assert [answer.headers["x-correlation-id"] for answer in simple] == ["alice@example.com"] * 2
    assert [answer.json()["id"] for answer in v2] == ["alice@example.com"] * 2  # the protocol echoes it


def test_feedback_is_given_once_a_retry_is_accepted_and_a_different_answer_refused(server):
    answer = server.post(f"/v1/models/{MLP}:predict", json={"instances": [dict.fromkeys(FEATURES, 1.0)]})
    request_id = answer.json()["request_id"]
    first = server.post("/v1/feedback", json={"request_id": request_id, "label": "benign"})
    again = server.post("/v1/feedback", json={"request_id": request_id, "label": "benign"})
    other = server.post("/v1/feedback", json={"request_id": request_id, "label": "malignant"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 409)
    assert "has feedback already ('benign'); the first answer stands" in other.json()["error"]
    counted = metric_value(server.get("/metrics").text, "modelcycle_feedback_total", model=MLP)
    assert counted == 1


def test_the_request_timeout_counts_from_arrival_body_and_queue_together(served):
    """A body that takes 1.2 s of the 2 s, then a model that takes 1.5 s: the answer is a 503 when the
    request's 2 s are up, not after the body's time plus a whole timeout more."""
    app, client = served
    batcher = app.state.serving.models[MLP].gateway.primary.batcher
    run = batcher.runner
    batcher.runner = lambda inputs: (time.sleep(1.5), run(inputs))[1]
    body = ('{"instances": [' + SIMPLE_ROW + "]}").encode()
    connection = raw_request(
        str(client.base_url),
        f"POST /v1/models/{MLP}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n",
    )
    started = time.monotonic()
    try:
        with connection:
            for part in (body[:10], body[10:20], body[20:]):
                connection.sendall(part)
                time.sleep(0.4)
            status, answer = read_response(connection)
    finally:
        batcher.runner = run
    assert status == 503
    assert answer["error"].startswith("no answer within the request's time (")
    left = float(answer["error"].split("(")[1].split(" s ")[0])
    assert left < TIMEOUT_S - 0.5  # the model got what the body left, not a whole timeout more
    assert time.monotonic() - started < TIMEOUT_S + 0.5


def test_a_method_a_path_does_not_take_is_a_405_with_allow(server):
    response = server.put(f"/v1/models/{MLP}:predict", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == f"/v1/models/{MLP}:predict: Method Not Allowed"
