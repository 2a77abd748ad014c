"""Serving: the Open Inference Protocol v2 and simple JSON answers equal the model's own outputs, bad requests
are 4xx naming the field, a full server answers 503 with Retry-After, and promotions, canaries, shadows and
rollbacks happen in process without a failed request (the units alone: tests/serve/). Servers bind 127.0.0.1
on a free port; every load loop is bounded in count and time."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelcycle.bundle import Bundle
from modelcycle.config import ServeConfig, load_config
from modelcycle.inference import predict
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.serve.background import background_server
from tests.conftest import EXAMPLES

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One registry for the module: two versions of an MLP and a CNN, trained once."""
    home = tmp_path_factory.mktemp("serve-home")
    registry = Registry(home)
    try:
        mlp = load_config(EXAMPLES / "breast-cancer-mlp.yaml", ["train.epochs=15"])
        train(mlp, registry)
        train(mlp.model_copy(update={"seed": 1}), registry)
        train(load_config(EXAMPLES / "digits-cnn.yaml", ["train.epochs=1"]), registry)
    finally:
        registry.close()
    return home


@pytest.fixture
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELCYCLE_HOME", str(shared_home))
    return shared_home


def wait_ready(client: TestClient | httpx.Client, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the server never became ready")


@contextlib.contextmanager
def serving(registry: Registry, refs: list[str], **settings: object) -> Iterator[TestClient]:
    app = create_app(registry, refs, ServeConfig(**settings), admin_token=TOKEN)
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[httpx.Client]:
    """The app on uvicorn, 127.0.0.1, a free port, in a thread; stopped (gracefully) on exit."""
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def resident_mb() -> float:
    """This process's resident memory (the server runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def held_out(bundle: Bundle) -> tuple[Predictor, dict[str, np.ndarray]]:
    predictor = Predictor.load(bundle)
    return predictor, model_tensors(
        predictor.preprocessor, predictor.encoder, training_split(bundle, "test")
    ).inputs


def v2_body(inputs: dict[str, np.ndarray]) -> dict:
    return {
        "inputs": [
            {"name": name, "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}
            for name, array in inputs.items()
        ]
    }


def test_v2_metadata_and_infer_equal_the_models_own_outputs(registry: Registry) -> None:
    with serving(registry, ["breast-cancer-mlp@1", "digits-cnn"]) as client:
        assert client.get("/v2").json()["name"] == "modelcycle"
        assert client.get("/v2/health/live").json() == {"live": True}
        meta = client.get("/v2/models/digits-cnn").json()
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert meta["outputs"][0]["shape"] == [-1, 10]
        assert client.get("/v2/models/digits-cnn/ready").json()["ready"] is True
        for ref in ("breast-cancer-mlp@1", "digits-cnn@1"):
            predictor, inputs = held_out(registry.open(ref))
            batch = {name: array[:7] for name, array in inputs.items()}
            name = ref.split("@")[0]
            response = client.post(f"/v2/models/{name}/infer", json={"id": "r1", **v2_body(batch)})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["id"] == "r1"
            assert body["model_version"] == response.headers["x-model-version"] == "1"
            (output,) = body["outputs"]
            got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            np.testing.assert_allclose(got, predict(predictor.model, batch), atol=1e-5)
        pinned = client.post(
            "/v2/models/breast-cancer-mlp/versions/1/infer", json=v2_body(batch_of(registry))
        )
        assert pinned.status_code == 200
        assert (
            client.post(
                "/v2/models/breast-cancer-mlp/versions/9/infer", json=v2_body(batch_of(registry))
            ).status_code
            == 404
        )


def batch_of(registry: Registry, rows: int = 3) -> dict[str, np.ndarray]:
    _, inputs = held_out(registry.open("breast-cancer-mlp@1"))
    return {name: array[:rows] for name, array in inputs.items()}


def test_simple_predict_takes_named_features_and_answers_labels(registry: Registry) -> None:
    bundle = registry.open("breast-cancer-mlp@1")
    test_rows = training_split(bundle, "test")
    instances = test_rows.frame[test_rows.features].head(5).to_dict(orient="records")
    expected = Predictor.load(bundle).outputs(test_rows.take(np.arange(5)))
    with serving(registry, ["breast-cancer-mlp@1"]) as client:
        response = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1"
        assert body["request_id"]
        labels = bundle.manifest.outputs.labels
        assert [item["label"] for item in body["predictions"]] == [labels[i] for i in expected.argmax(1)]
        for item in body["predictions"]:
            assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_bad_requests_are_4xx_with_a_json_body_naming_the_field(registry: Registry) -> None:
    bundle = registry.open("breast-cancer-mlp@1")
    test_rows = training_split(bundle, "test")
    good = test_rows.frame[test_rows.features].head(1).to_dict(orient="records")[0]
    tensor = v2_body(batch_of(registry, 1))["inputs"][0]
    cases = [
        (
            "/v1/models/breast-cancer-mlp:predict",
            {"instances": [{k: v for k, v in good.items() if k != "mean radius"}]},
            400,
            "mean radius: missing feature",
        ),
        (
            "/v1/models/breast-cancer-mlp:predict",
            {"instances": [{**good, "colour": 1}]},
            400,
            "colour: unknown feature",
        ),
        (
            "/v1/models/breast-cancer-mlp:predict",
            {"instances": [{**good, "mean area": "big"}]},
            400,
            "mean area: a number",
        ),
        ("/v1/models/breast-cancer-mlp:predict", {"instances": []}, 400, "instances"),
        (
            "/v2/models/breast-cancer-mlp/infer",
            {"inputs": [{**tensor, "datatype": "INT64"}]},
            400,
            "datatype: expected FP32",
        ),
        (
            "/v2/models/breast-cancer-mlp/infer",
            {"inputs": [{**tensor, "shape": [1, 29]}]},
            400,
            "shape: [1, 29]",
        ),
        (
            "/v2/models/breast-cancer-mlp/infer",
            {"inputs": [{**tensor, "name": "pixels"}]},
            400,
            "unknown tensor 'pixels'",
        ),
        (
            "/v2/models/breast-cancer-mlp/infer",
            {"inputs": [{**tensor, "data": tensor["data"][:-1]}]},
            400,
            "29 values",
        ),
        ("/v2/models/nope/infer", {"inputs": [tensor]}, 404, "'nope' is not served"),
    ]
    with serving(registry, ["breast-cancer-mlp@1"], max_body_bytes=200_000) as client:
        for path, payload, status, message in cases:
            response = client.post(path, json=payload)
            assert response.status_code == status, (path, payload, response.text)
            assert message in response.json()["error"], response.json()
        nan = json.dumps({"instances": [good]}).replace(str(good["mean texture"]), "NaN", 1)
        response = client.post(
            "/v1/models/breast-cancer-mlp:predict", content=nan, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert "NaN or Inf" in response.json()["error"]
        beyond = client.post(  # an integer no float holds
            "/v1/models/breast-cancer-mlp:predict", json={"instances": [{**good, "mean texture": 10**400}]}
        )
        assert beyond.status_code == 400
        assert "instances[0].mean texture" in beyond.json()["error"]
        broken = client.post(
            "/v2/models/breast-cancer-mlp/infer",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert "error" in broken.json()
        huge = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": [good] * 2000})
        assert huge.status_code == 413
        assert "over the limit" in huge.json()["error"]


def test_overload_gives_only_200s_and_503s_with_retry_after(registry: Registry) -> None:
    app = create_app(
        registry, ["breast-cancer-mlp@1"], ServeConfig(max_queue=4, max_batch_size=2), admin_token=TOKEN
    )
    with live_server(app) as client:
        served = app.state.serving.models["breast-cancer-mlp"]
        run = served.gateway.primary.batcher.runner
        served.gateway.primary.batcher.runner = lambda inputs: (time.sleep(0.02), run(inputs))[
            1
        ]  # a slow model
        body = v2_body(batch_of(registry, 1))
        before = resident_mb()
        with ThreadPoolExecutor(32) as pool:
            responses = list(
                pool.map(lambda _: client.post("/v2/models/breast-cancer-mlp/infer", json=body), range(160))
            )
        codes = {response.status_code for response in responses}
        assert codes <= {200, 503}
        assert 503 in codes
        assert 200 in codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        assert client.get("/v2/health/ready").status_code == 200  # still up
        assert resident_mb() - before < 100  # the bounded queue keeps memory bounded
        assert 'modelcycle_requests_total{code="503"' in client.get("/metrics").text


def test_promotions_back_and_forth_fail_no_request(registry: Registry) -> None:
    app = create_app(registry, ["breast-cancer-mlp@1"], ServeConfig(), admin_token=TOKEN)
    body = v2_body(batch_of(registry, 2))
    with live_server(app) as client:
        stop, results = threading.Event(), []

        def load() -> None:
            with httpx.Client(base_url=client.base_url, timeout=30) as own:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline and len(results) < 5000:
                    response = own.post("/v2/models/breast-cancer-mlp/infer", json=body)
                    results.append((response.status_code, response.headers.get("x-model-version")))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for step in range(20):
                response = client.post(
                    "/admin/models/breast-cancer-mlp/promote", json={"version": 2 - step % 2}, headers=ADMIN
                )
                assert response.status_code == 200, response.text
                time.sleep(0.03)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        assert len(results) >= 100
        assert all(code == 200 for code, _ in results), len(results)
        assert {version for _, version in results} == {"1", "2"}
        assert client.get("/admin/models/breast-cancer-mlp", headers=ADMIN).json()["primary"]["version"] == 1
    assert registry.resolve("breast-cancer-mlp@production").version == 1
    assert sum(event.kind == "promoted" for event in registry.history("breast-cancer-mlp")) >= 20


def test_canary_shadow_and_rollback_are_in_process_and_recorded(registry: Registry) -> None:
    with serving(registry, ["breast-cancer-mlp@1"]) as client:
        assert (
            client.post(
                "/admin/models/breast-cancer-mlp/canary", json={"version": 2, "percent": 50}
            ).status_code
            == 401
        )
        wrong = client.post(
            "/admin/models/breast-cancer-mlp/canary",
            json={"version": 2, "percent": 50},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
        status = client.post(
            "/admin/models/breast-cancer-mlp/canary", json={"version": 2, "percent": 50}, headers=ADMIN
        ).json()
        assert status["canary"]["version"] == 2
        assert status["canary_percent"] == 50
        body = v2_body(batch_of(registry, 1))
        versions = [
            client.post("/v2/models/breast-cancer-mlp/infer", json=body).headers["x-model-version"]
            for _ in range(200)
        ]
        assert 60 <= versions.count("2") <= 140  # about half (binomial, 200 draws)
        client.post(
            "/admin/models/breast-cancer-mlp/canary", json={"version": 2, "percent": 0}, headers=ADMIN
        )
        client.post("/admin/models/breast-cancer-mlp/shadow", json={"version": 2}, headers=ADMIN)
        for _ in range(30):
            assert (
                client.post("/v2/models/breast-cancer-mlp/infer", json=body).headers["x-model-version"] == "1"
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = client.get("/admin/models/breast-cancer-mlp", headers=ADMIN).json()
            if status["shadow_requests"] == 30:
                break
            time.sleep(0.02)
        assert status["shadow_requests"] == 30
        assert 0 <= status["shadow_disagreements"] <= 30
        client.post("/admin/models/breast-cancer-mlp/promote", json={"version": 2}, headers=ADMIN)
        back = client.post("/admin/models/breast-cancer-mlp/rollback", headers=ADMIN).json()
        assert back["primary"]["version"] == 1
        missing = client.post("/admin/models/breast-cancer-mlp/promote", json={"version": 99}, headers=ADMIN)
        assert missing.status_code == 404  # a version that cannot load leaves the old one serving
        assert client.post("/v2/models/breast-cancer-mlp/infer", json=body).status_code == 200
    kinds = [event.kind for event in registry.history("breast-cancer-mlp")]
    assert {"canary", "shadow", "rollback", "promoted"} <= set(kinds)


def test_the_admin_api_is_off_without_a_token_and_public_binds_need_one(registry: Registry, cli) -> None:
    app = create_app(registry, ["breast-cancer-mlp@1"], ServeConfig())
    with TestClient(app) as client:
        wait_ready(client)
        response = client.post("/admin/models/breast-cancer-mlp/rollback")
        assert response.status_code == 401
        assert "disabled" in response.json()["error"]
    result = cli("serve", "breast-cancer-mlp", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "without an admin token" in result.stderr


def test_text_instances_are_tokenized_and_overlong_text_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    from tests.test_sequence_models import keyword_reviews

    overrides = [
        "name=reviews",
        f"data.source=csv:{keyword_reviews(tmp_path / 'reviews.csv', rows=200)}",
        "data.target=label",
        "data.preprocess.text.max_length=16",
        "model.arch=transformer",
        "model.params={embed_dim: 16, num_heads: 2, num_layers: 1}",
        "train.epochs=1",
    ]
    train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", overrides), registry)
    with serving(registry, ["reviews"]) as client:
        response = client.post(
            "/v1/models/reviews:predict", json={"instances": ["a great film", {"text": "dull"}]}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
        long = client.post("/v1/models/reviews:predict", json={"instances": ["word " * 40]})
        assert long.status_code == 400
        assert "instances[0]: 40 tokens, the model reads at most 16" in long.json()["error"]
        wrong = client.post("/v1/models/reviews:predict", json={"instances": [3]})
        assert wrong.status_code == 400


def test_a_rejected_variant_is_served_only_when_forced(registry: Registry) -> None:
    from modelcycle.optimize import Gate, PruneSpec, prune_model

    bundle = registry.open("breast-cancer-mlp@2")
    if "pruned-l1-97" not in bundle.variant_names():
        assert (
            prune_model(bundle, PruneSpec.parse("l1-unstructured:0.97"), gate=Gate(0.0)).verdict == "rejected"
        )
    refused = create_app(
        registry, ["breast-cancer-mlp@2"], ServeConfig(variant="pruned-l1-97"), admin_token=TOKEN
    )
    with TestClient(refused) as client:
        deadline = time.monotonic() + 30
        while refused.state.serving.load_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "verdict 'rejected' and is not served" in ready.json()["error"]
    forced = ServeConfig(variant="pruned-l1-97", force_variant=True)
    with serving(registry, ["breast-cancer-mlp@2"], **forced.model_dump()) as client:
        assert client.get("/v2/models/breast-cancer-mlp").json()["platform"] == "modelcycle_torch"
        assert (
            client.post("/v2/models/breast-cancer-mlp/infer", json=v2_body(batch_of(registry))).status_code
            == 200
        )


def test_shutdown_answers_the_requests_in_flight(registry: Registry) -> None:
    app = create_app(registry, ["breast-cancer-mlp@1"], ServeConfig(max_batch_size=1), admin_token=TOKEN)
    body = v2_body(batch_of(registry, 1))
    with ThreadPoolExecutor(6) as pool:
        with live_server(app) as client:
            batcher = app.state.serving.models["breast-cancer-mlp"].gateway.primary.batcher
            run = batcher.runner
            all_accepted = threading.Event()  # the first batch waits until all six are in: no timing race
            batcher.runner = lambda inputs: (all_accepted.wait(10), time.sleep(0.1), run(inputs))[2]
            url = f"{client.base_url}/v2/models/breast-cancer-mlp/infer"
            pending = [pool.submit(httpx.post, url, json=body, timeout=30) for _ in range(6)]
            deadline = time.monotonic() + 10
            while batcher.in_flight < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert batcher.in_flight == 6
            all_accepted.set()
        # the server has stopped: every request it had accepted was answered
        assert [future.result().status_code for future in pending] == [200] * 6
