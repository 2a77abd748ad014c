"""Explanations: integrated gradients is complete, every method finds the one feature that carries the signal,
the sampling methods are seeded, text / image / language-model explanations come in their users' terms,
errors name the field, and the server explains under its own concurrency limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from modelcycle.config import DataConfig, ServeConfig, load_config
from modelcycle.data import load_dataset
from modelcycle.errors import ConfigError, RequestError
from modelcycle.explain import METHODS, explain, explain_tensors, permutation_importance
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import EXAMPLES, TINY_GPT, CliResult, train_into
from tests.test_sequence_models import keyword_reviews
from tests.test_serve import wait_ready

FEATURES = [f"x{index}" for index in range(5)]


@pytest.fixture(scope="module")
def signal_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with an MLP trained on rows where only x2 decides the label."""
    home = tmp_path_factory.mktemp("explain-home")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1200, 5)), columns=FEATURES)
    frame["label"] = np.where(frame["x2"] > 0, "up", "down")
    frame.to_csv(home / "signal.csv", index=False)
    overrides = [f"data.source={home / 'signal.csv'}", "data.target=label", "name=signal", "train.epochs=15"]
    return train_into(home, ("breast-cancer-mlp.yaml", overrides))


@pytest.fixture(scope="module")
def signal(signal_home: Path) -> Predictor:
    registry = Registry(signal_home)
    try:
        return Predictor.load(registry.open("signal@1"))
    finally:
        registry.close()


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a small GRU whose label one word carries ("great" / "awful") and a small digits CNN:
    about a second of training."""
    home = tmp_path_factory.mktemp("explain-small")
    reviews = keyword_reviews(home / "reviews.csv", rows=400)
    keyword = [
        "name=keyword",
        f"data.source=csv:{reviews}",
        "data.target=label",
        "model.arch=rnn",
        "model.params={cell: gru, embed_dim: 16, hidden_size: 16, bidirectional: false}",
        "train.epochs=4",
        "train.optimizer.lr=0.01",
    ]
    digits = ["train.epochs=1", "model.params={channels: [8, 16], dropout: 0.0}"]
    return train_into(home, ("breast-cancer-mlp.yaml", keyword), ("digits-cnn.yaml", digits))


def _rows(home: Path, count: int) -> list[dict[str, float]]:
    frame = pd.read_csv(home / "signal.csv").iloc[:count]
    return frame[FEATURES].to_dict(orient="records")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_ranks_the_only_informative_feature_first(
    method: str, signal: Predictor, signal_home: Path
) -> None:
    explanations = explain(signal, _rows(signal_home, 12), method=method)
    assert len(explanations) == 12
    assert all(set(item.attributions) == set(FEATURES) for item in explanations)
    mean_size = {name: np.mean([abs(item.attributions[name]) for item in explanations]) for name in FEATURES}
    ranked = sorted(mean_size, key=mean_size.__getitem__, reverse=True)
    assert ranked[0] == "x2", mean_size
    assert mean_size["x2"] > 2 * mean_size[ranked[1]], mean_size


@pytest.mark.parametrize("method", ["kernelshap", "lime"])
def test_sampling_methods_are_seeded_per_input_and_leave_the_random_state_alone(
    method: str, signal: Predictor, signal_home: Path
) -> None:
    rows = _rows(signal_home, 3)
    before = torch.random.get_rng_state()
    together = explain(signal, rows, method=method)
    assert torch.equal(torch.random.get_rng_state(), before)
    (alone,) = explain(signal, rows[1:2], method=method)
    assert alone.attributions == together[1].attributions
    assert together[0].attributions != together[1].attributions


def test_lime_explains_text_by_token_and_images_by_pixel(
    small_home: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry = Registry(small_home)
    try:
        text = Predictor.load(registry.open("keyword@1"))
        image = training_split(registry.open("digits-cnn@1"), "test").images[0]
    finally:
        registry.close()
    review = "the plot was awful and the actor"
    (item,) = explain(text, [review], method="lime")
    assert [token for token, _ in item.attributions] == review.split(" ")
    assert item.ranked()[0][0] == "awful"
    assert item.target == "negative"

    monkeypatch.setenv("MODELCYCLE_HOME", str(small_home))
    request = tmp_path / "digit.json"
    request.write_text(json.dumps({"instances": [image[0].tolist()]}))
    out = tmp_path / "pictures"
    result = cli(
        "explain", "digits-cnn@1", "--input", str(request), "--method", "lime", "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.stderr
    (payload,) = json.loads(result.stdout)
    assert payload["method"] == "lime"
    pixels = np.asarray(payload["attributions"])
    assert pixels.shape == (8, 8)
    assert np.isfinite(pixels).all()
    assert np.abs(pixels).max() > 0
    assert Path(payload["picture"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_integrated_gradients_is_complete(signal: Predictor, signal_home: Path) -> None:
    rows = _rows(signal_home, 8)
    explanations = explain(signal, rows, method="ig", target="up")
    tensors = signal.preprocessor.transform(
        load_dataset(DataConfig(source=str(signal_home / "signal.csv"), target="label")).take(np.arange(8))
    )
    features = torch.from_numpy(tensors["features"])
    with torch.no_grad():
        gap = (signal.model(features)[:, 1] - signal.model(torch.zeros_like(features))[:, 1]).numpy()
    for explanation, expected in zip(explanations, gap, strict=True):
        total = sum(explanation.attributions.values())
        assert abs(total - expected) < 0.01 * max(1.0, abs(expected))
        assert explanation.convergence_delta is not None
        assert abs(explanation.convergence_delta) < 0.01
        assert explanation.target == "up"
        assert explanation.target_index == 1


def test_global_importance_ranks_the_signal_first(signal: Predictor, signal_home: Path) -> None:
    dataset = load_dataset(DataConfig(source=str(signal_home / "signal.csv"), target="label"))
    importance = permutation_importance(signal, dataset, repeats=3)
    assert importance.metric == "accuracy"
    assert importance.baseline > 0.9
    assert importance.features[0].feature == "x2"
    assert importance.features[0].mean > 0.3
    assert all(abs(item.mean) < 0.05 for item in importance.features[1:])


def test_errors_name_what_was_wrong(signal: Predictor, signal_home: Path) -> None:
    with pytest.raises(RequestError, match="target: 'sideways' is not a class"):
        explain(signal, _rows(signal_home, 1), target="sideways")
    with pytest.raises(RequestError, match=r"instances\[0\]\.x4: missing feature"):
        explain(signal, [{name: 0.0 for name in FEATURES[:4]}])
    with pytest.raises(ConfigError, match="unknown method 'anchors'"):
        explain(signal, _rows(signal_home, 1), method="anchors")
    with pytest.raises(RequestError, match="features"):
        explain_tensors(signal, {"features": np.zeros((1, 3), dtype=np.float32)})


@pytest.mark.slow  # measured: 27 CPU-s on its own (training inside the test)
def test_text_tokens_images_and_language_models_are_explained_in_their_terms(
    registry: Registry, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    student = load_config(EXAMPLES / "text-student.yaml", ["data.max_rows=600", "train.epochs=1"])
    text = Predictor.load(registry.open(train(student, registry).ref))  # type: ignore[union-attr]
    (item,) = explain(text, ["a wonderful, moving film"], method="ig")
    tokens = [token for token, _ in item.attributions]
    assert tokens[0] == "a"
    assert tokens[2:] == [",", "moving", "film"]
    assert item.convergence_delta is not None
    assert abs(item.convergence_delta) < 0.05
    for method in METHODS[1:]:
        (other,) = explain(text, ["a wonderful, moving film"], method=method)
        assert len(other.attributions) == 5

    digits = train(load_config(EXAMPLES / "digits-cnn.yaml", ["train.epochs=1"]), registry)
    assert digits is not None
    image = training_split(registry.open(digits.ref), "test").images[0]
    request = tmp_path / "digit.json"
    request.write_text(json.dumps({"instances": [image[0].tolist()]}))
    out = tmp_path / "pictures"
    result = cli("explain", digits.ref, "--input", str(request), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    (payload,) = json.loads(result.stdout)
    assert np.asarray(payload["attributions"]).shape == (8, 8)
    assert Path(payload["picture"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"instances": [[[1.0, 2.0]]]}))
    refused = cli("explain", digits.ref, "--input", str(wrong))
    assert refused.exit_code != 0
    assert "instances[0]: shape" in refused.stderr

    gpt = train(load_config(EXAMPLES / "tiny-gpt.yaml", TINY_GPT), registry)
    assert gpt is not None
    language_model = Predictor.load(registry.open(gpt.ref))
    (continuation,) = explain(language_model, ["the old man"])
    assert len(continuation.attributions) >= 3
    assert continuation.target is not None
    assert continuation.convergence_delta is not None
    with pytest.raises(ConfigError, match="a language model is explained with ig, not lime"):
        explain(language_model, ["the old man"], method="lime")


def test_the_server_explains_within_its_own_limit(signal_home: Path) -> None:
    registry = Registry(signal_home)
    app = create_app(registry, ["signal"], ServeConfig(max_concurrent_explanations=1))
    try:
        with TestClient(app) as client:
            wait_ready(client)
            rows = _rows(signal_home, 2)
            for method in ("occlusion", "lime"):
                simple = client.post("/v1/models/signal:explain", json={"instances": rows, "method": method})
                assert simple.status_code == 200, simple.text
                for item in simple.json()["explanations"]:
                    assert item["method"] == method
                    values = item["attributions"]
                    assert max(values, key=lambda name: abs(values[name])) == "x2"
            features = Predictor.load(registry.open("signal")).preprocessor.transform(
                load_dataset(DataConfig(source=str(signal_home / "signal.csv"), target="label")).take(
                    np.arange(1)
                )
            )["features"]
            inputs = [
                {"name": "features", "shape": [1, 5], "datatype": "FP32", "data": features.ravel().tolist()}
            ]
            v2 = client.post(
                "/v2/models/signal/explain",
                json={"inputs": inputs, "parameters": {"method": "ig", "target": "up"}},
            )
            assert v2.status_code == 200, v2.text
            assert v2.json()["explanations"][0]["target"] == "up"
            unknown = client.post(
                "/v2/models/signal/explain", json={"inputs": inputs, "parameters": {"method": "anchors"}}
            )
            assert unknown.status_code == 400
            assert unknown.json()["error"].startswith("method: unknown method 'anchors'")
            bad = client.post("/v1/models/signal:explain", json={"instances": rows, "target": "sideways"})
            assert bad.status_code == 400
            assert "target" in bad.json()["error"]
            state = app.state.serving
            state.explaining = asyncio.Semaphore(1)
            asyncio.run(state.explaining.acquire())  # one explanation is running
            busy = client.post("/v1/models/signal:explain", json={"instances": rows})
            assert busy.status_code == 503
            assert busy.headers["Retry-After"]
            assert client.post("/v1/models/signal:predict", json={"instances": rows}).status_code == 200
    finally:
        registry.close()


def test_a_categorical_feature_is_counted_once_by_the_group_methods(tmp_path: Path) -> None:
    """Occlusion switches a one-hot feature's columns off together: its attribution is the output's change
    when they are, once, not once per column."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 2)), columns=["a", "b"])
    frame["colour"] = rng.choice(["red", "green", "blue", "grey", "pink", "teal"], size=600)
    frame["label"] = np.where((frame["colour"] == "red") | (frame["a"] > 1), "up", "down")
    frame.to_csv(tmp_path / "colours.csv", index=False)
    overrides = [f"data.source={tmp_path / 'colours.csv'}", "data.target=label", "name=colours"]
    home = train_into(tmp_path / "home", ("breast-cancer-mlp.yaml", [*overrides, "train.epochs=5"]))
    registry = Registry(home)
    try:
        predictor = Predictor.load(registry.open("colours@1"))
    finally:
        registry.close()
    row = frame.iloc[:1][["a", "b", "colour"]].to_dict(orient="records")
    (explanation,) = explain(predictor, row, method="occlusion", target="up")
    features = torch.from_numpy(predictor.preprocessor.transform_rows(row)["features"])
    columns = [name == "colour" for name in predictor.preprocessor.column_features()]
    assert sum(columns) == 7  # six colours and one for a missing or unseen one
    ablated = features.clone()
    ablated[0, torch.tensor(columns)] = 0.0  # the baseline, as occlusion sets it
    with torch.no_grad():
        change = float(predictor.model(features)[0, 1] - predictor.model(ablated)[0, 1])
    assert explanation.attributions["colour"] == pytest.approx(change, abs=1e-5)
