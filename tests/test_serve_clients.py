"""Clients nobody here wrote, unchanged, against a live server on 127.0.0.1: tritonclient.http (metadata and
infer) on /v2, and the openai client (completions, chat with the model's chat template, streaming) on /v1
with tiny-gpt and the imported SmolLM2. Generations are kept short."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.http as triton

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.importer import import_model
from modelcycle.inference import predict
from modelcycle.monitor.database import connect
from modelcycle.predictor import Predictor, generate, model_tensors, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import TINY_GPT, metric_value, train_into
from tests.test_serve import live_server


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("clients-home")
    return train_into(home, ("digits-cnn.yaml", ["train.epochs=1"]), ("tiny-gpt.yaml", TINY_GPT))


@pytest.fixture
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELCYCLE_HOME", str(shared_home))
    return shared_home


def test_tritonclient_reads_metadata_and_infers_on_v2(registry: Registry) -> None:
    bundle = registry.open("digits-cnn")
    predictor = Predictor.load(bundle)
    images = model_tensors(predictor.preprocessor, predictor.encoder, training_split(bundle, "test")).inputs
    batch = images["image"][:5]
    with live_server(create_app(registry, ["digits-cnn"], ServeConfig())) as http:
        client = triton.InferenceServerClient(url=http.base_url.netloc.decode())
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("digits-cnn")
        metadata = client.get_model_metadata("digits-cnn")
        assert metadata["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        tensor = triton.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer("digits-cnn", [tensor], outputs=[triton.InferRequestedOutput("logits")])
        np.testing.assert_allclose(
            result.as_numpy("logits"), predict(predictor.model, {"image": batch}), atol=1e-5
        )
        client.close()


def openai_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_openai_client_completes_chats_and_streams_with_tiny_gpt(
    registry: Registry, cli: Callable[..., Any], tmp_path: Path
) -> None:
    expected = generate(Predictor.load(registry.open("tiny-gpt")), "To be", max_new_tokens=8, temperature=0)
    app = create_app(registry, ["tiny-gpt", "digits-cnn"], ServeConfig())
    with live_server(app) as http:
        client = openai_client(str(http.base_url))
        assert {model.id for model in client.models.list()} == {"tiny-gpt", "digits-cnn"}
        completion = client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=8, temperature=0)
        assert completion.choices[0].text == expected.text  # greedy: exactly what generate() gives
        assert completion.usage.prompt_tokens == expected.prompt_tokens
        assert completion.usage.completion_tokens == 8
        assert completion.choices[0].finish_reason == "length"
        pieces = list(
            client.completions.create(
                model="tiny-gpt", prompt="To be", max_tokens=8, temperature=0, stream=True
            )
        )
        assert "".join(piece.choices[0].text for piece in pieces) == expected.text
        assert pieces[-1].choices[0].finish_reason == "length"
        asked = [{"role": "user", "content": "ada@x.io"}]  # tiny-gpt's context is 32 characters
        chat = client.chat.completions.create(model="tiny-gpt", messages=asked, max_tokens=6, seed=3)
        assert chat.choices[0].message.role == "assistant"
        assert chat.usage.completion_tokens == 6
        chunks = list(
            client.chat.completions.create(
                model="tiny-gpt",
                messages=[{"role": "user", "content": "Who?"}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage.completion_tokens == 6
        with pytest.raises(openai.BadRequestError, match="not a language model"):
            client.completions.create(model="digits-cnn", prompt="hi", max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="nope", prompt="hi", max_tokens=2)
        metrics = http.get("/metrics").text
        timed = metric_value(
            metrics, "modelcycle_request_latency_seconds_count", model="tiny-gpt", protocol="openai"
        )
        assert timed == 4
    with connect(registry.home / "monitor.db") as connection:  # the server has stopped: everything is stored
        rows = connection.execute(
            "SELECT request_id, inputs, prediction FROM predictions WHERE model = 'tiny-gpt'"
        ).fetchall()
    stored = {request_id: (json.loads(inputs), prediction) for request_id, inputs, prediction in rows}
    assert stored[completion.id] == ({"prompt": "To be"}, expected.text)
    assert stored[pieces[0].id] == ({"prompt": "To be"}, expected.text)  # a stream: once its last piece went
    masked = [{"role": "user", "content": "[EMAIL]"}]
    assert stored[chat.id] == ({"messages": masked}, chat.choices[0].message.content)
    assert stored[chunks[0].id][0] == {"messages": [{"role": "user", "content": "Who?"}]}
    assert len(stored) == 4
    written = cli("monitor", "report", "tiny-gpt", "--out", str(tmp_path / "report.html"))
    assert written.exit_code == 0, written.stderr
    page = (tmp_path / "report.html").read_text()
    assert "4 stored predictions" in page
    assert "Predicted classes" not in page  # generated answers are no classes to count


def test_a_failed_openai_request_is_counted_with_its_status_and_told_in_openais_error_object(
    registry: Registry,
) -> None:
    app = create_app(
        registry, ["tiny-gpt", "digits-cnn"], ServeConfig(), monitoring=MonitorConfig(enabled=False)
    )
    with live_server(app) as http:
        client = openai_client(str(http.base_url))
        with pytest.raises(openai.BadRequestError, match="one prompt per request") as raised:
            client.completions.create(model="tiny-gpt", prompt=["To be", "or not"], max_tokens=2)
        assert raised.value.type == "invalid_request_error"
        with pytest.raises(openai.BadRequestError, match="not a language model"):
            client.chat.completions.create(model="digits-cnn", messages=[{"role": "user", "content": "hi"}])
        invalid = http.post(
            "/v1/completions", json={"model": "tiny-gpt", "prompt": "To be", "max_tokens": 10**6}
        )
        assert invalid.status_code == 400
        assert invalid.json()["error"]["param"] == "max_tokens"  # refused before it reached the model
        client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=2)
        metrics = http.get("/metrics").text

    def counted(model: str, code: str) -> float:
        labels = {"model": model, "version": "1", "protocol": "openai", "code": code}
        return metric_value(metrics, "modelcycle_requests_total", **labels)

    assert counted("tiny-gpt", "400") == 1
    assert counted("tiny-gpt", "200") == 1
    assert counted("digits-cnn", "400") == 1
    assert (
        metric_value(metrics, "modelcycle_request_latency_seconds_count", model="tiny-gpt", protocol="openai")
        == 2
    )


def test_a_language_models_prompts_raise_no_drift_alert(registry: Registry, tmp_path: Path) -> None:
    """Its reference profiles the training corpus cut in blocks; prompts, all shorter, alerted on any
    traffic."""
    monitoring = MonitorConfig(store=str(tmp_path / "m.db"), drift_min_rows=10, interval_s=3600)
    app = create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=monitoring)
    with live_server(app) as http:
        for index in range(12):
            body = {"model": "tiny-gpt", "prompt": f"To be or not {index}", "max_tokens": 1}
            assert http.post("/v1/completions", json=body).status_code == 200
        state = app.state.serving  # type: ignore[attr-defined]
        assert state.monitor.store.flush()
        with connect(tmp_path / "m.db") as connection:
            assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 12
        assert state.monitor.check(state.watched()) == []


def test_a_stream_the_client_leaves_is_stored_as_far_as_it_went(registry: Registry, tmp_path: Path) -> None:
    monitoring = MonitorConfig(store=str(tmp_path / "m.db"), interval_s=3600)
    app = create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=monitoring)
    body = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 2000, "stream": True}
    with live_server(app) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            request_id = response.headers["x-request-id"]
            first = next(response.iter_lines())  # one piece, then the client is gone
        assert first.startswith("data: ")
    with connect(tmp_path / "m.db") as connection:
        stored = connection.execute(
            "SELECT inputs, prediction FROM predictions WHERE request_id = ?", (request_id,)
        ).fetchall()
    assert [(json.loads(inputs), type(text)) for inputs, text in stored] == [({"prompt": "To be"}, str)]


@pytest.mark.slow
def test_the_openai_client_chats_with_smollm2_through_its_template(registry: Registry) -> None:
    import_model("builtin:smollm2", "smollm2", registry)
    with live_server(create_app(registry, ["smollm2"], ServeConfig())) as http:
        client = openai_client(str(http.base_url))
        chat = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            max_tokens=12,
            temperature=0,
        )
        assert "Paris" in chat.choices[0].message.content
        assert chat.choices[0].finish_reason == "stop"  # ended at <|im_end|>, which is not in the text
        assert "<|im_end|>" not in chat.choices[0].message.content
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                max_tokens=12,
                temperature=0,
                stream=True,
            )
            if chunk.choices
        )
        assert streamed == chat.choices[0].message.content
        with http.stream(
            "POST",
            "/v1/completions",
            json={"model": "smollm2", "prompt": "One, two,", "max_tokens": 3, "stream": True},
        ) as response:
            lines = [line for line in response.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
