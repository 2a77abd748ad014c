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

from modelcycle.config import ServeConfig, load_config
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES
from tests.test_serve import live_server, resident_mb

LIMIT = 1 << 20  # the server's body limit in these tests
TIMEOUT_S = 2.0  # its request timeout
MLP = "breast-cancer-mlp"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home: Path = tmp_path_factory.mktemp("hostile-home")
    registry = Registry(home)
    train(load_config(EXAMPLES / f"{MLP}.yaml", ["train.epochs=2"]), registry)
    settings = ServeConfig(max_body_bytes=LIMIT, request_timeout_s=TIMEOUT_S)
    app = create_app(registry, [MLP], settings, admin_token="hostile-token")
    with live_server(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client
    registry.close()


def raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    connection.sendall(head.encode())
    return connection


def answered(connection: socket.socket) -> bool:
    return bool(select.select([connection], [], [], 0)[0])


def read_response(connection: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the HTTP/1.1 response on ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


@pytest.mark.parametrize(
    "path", [f"/v1/models/{MLP}:predict", f"/v2/models/{MLP}/infer", "/v1/completions", "/admin/reload"]
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
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 2


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
