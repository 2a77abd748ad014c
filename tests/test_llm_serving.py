"""Language models served through the engine, over HTTP on 127.0.0.1 with the openai client: several choices
streamed with a stop list, log-probabilities, the admission limits (400 naming the token count, 503 with
Retry-After beyond the waiting queue), the vLLM-named metrics, a client that leaves, the engine-off
baseline giving the same greedy text, and the engine serving bf16 and int8 variants."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

from modelcycle.config import LlmConfig, MonitorConfig, ServeConfig
from modelcycle.optimize import quantize
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from tests.conftest import TINY_GPT, metric_value, train_into
from tests.test_serve import live_server

OFF = MonitorConfig(enabled=False)


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_into(tmp_path_factory.mktemp("llm-home"), ("tiny-gpt.yaml", TINY_GPT))


@pytest.fixture
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELCYCLE_HOME", str(shared_home))
    return shared_home


def client_of(http: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_openai_client_streams_two_choices_cut_by_a_stop_list(registry: Registry) -> None:
    asked = {"model": "tiny-gpt", "prompt": "To be or", "max_tokens": 12, "seed": 11, "n": 2}
    with live_server(create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=OFF)) as http:
        client = client_of(http)
        free = client.completions.create(**asked)
        assert [choice.index for choice in free.choices] == [0, 1]
        assert free.choices[0].text != free.choices[1].text  # each choice samples on its own
        assert free.usage.completion_tokens == 24
        stop = [free.choices[0].text[3], "zzz-never"]  # tiny-gpt writes characters
        chunks = list(client.completions.create(**asked, stop=stop, stream=True))
    texts: dict[int, str] = {0: "", 1: ""}
    reasons: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason is not None:
                reasons[choice.index] = choice.finish_reason
    cut = free.choices[0].text.index(stop[0])
    assert texts[0] == free.choices[0].text[:cut]  # the same seed, cut before the stop string
    assert reasons[0] == "stop"
    assert stop[0] not in texts[1]
    assert reasons[1] in {"stop", "length"}


def test_log_probabilities_in_each_endpoints_form(registry: Registry) -> None:
    with live_server(create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=OFF)) as http:
        client = client_of(http)
        completion = client.completions.create(
            model="tiny-gpt", prompt="To be", max_tokens=5, temperature=0, logprobs=2
        )
        chat = client.chat.completions.create(
            model="tiny-gpt",
            messages=[{"role": "user", "content": "Hi"}],  # the context is 32 characters
            max_tokens=4,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
        )
        asked = {"model": "tiny-gpt", "messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}
        refused = http.post("/v1/chat/completions", json=asked)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 5
    assert all(value <= 0 for value in logprobs.token_logprobs)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    # greedy: the chosen token is the likeliest one
    assert all(
        max(top.values()) == pytest.approx(value)
        for top, value in zip(logprobs.top_logprobs, logprobs.token_logprobs, strict=True)
    )
    assert refused.status_code == 400
    assert "top_logprobs needs logprobs: true" in refused.json()["error"]["message"]
    content = chat.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(token.top_logprobs) == 3 for token in content)
    assert content[0].logprob == pytest.approx(content[0].top_logprobs[0].logprob)


class Slowed(torch.nn.Module):
    """A language model whose every pass takes ``seconds`` more."""

    def __init__(self, model: torch.nn.Module, seconds: float = 0.02) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds

    def decode(self, *args: object, **kwargs: object) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.model.decode(*args, **kwargs)  # type: ignore[operator,no-any-return]


def test_admission_a_prompt_beyond_the_context_is_400_and_a_full_queue_503(registry: Registry) -> None:
    settings = ServeConfig(llm=LlmConfig(max_running=1, max_waiting=1))
    app = create_app(registry, ["tiny-gpt"], settings, monitoring=OFF)
    with live_server(app) as http:
        engine = app.state.serving.models["tiny-gpt"].gateway.primary.engine  # type: ignore[attr-defined]
        engine.scheduler.model = Slowed(engine.scheduler.model)  # on any CPU the 8 requests overlap
        long_prompt = "a" * 40  # tiny-gpt's tokens are characters
        refused = http.post("/v1/completions", json={"model": "tiny-gpt", "prompt": long_prompt})
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith(
            "prompt: 40 tokens, but the model's context holds 32"
        )
        body = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 30, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: http.post("/v1/completions", json=body), range(8)))
    codes = sorted(answer.status_code for answer in answers)
    assert set(codes) == {200, 503}
    assert codes.count(200) >= 2  # one running and one waiting at least
    overloaded = next(answer for answer in answers if answer.status_code == 503)
    assert overloaded.headers["retry-after"]
    assert "waiting queue is full" in overloaded.json()["error"]["message"]


def test_a_stream_that_waits_past_its_time_is_a_503_not_an_error_after_a_200(registry: Registry) -> None:
    """One long generation holds the only row; a streamed request behind it gets its overload as the
    response's status (with Retry-After, counted as a 503), since a stream's status goes out first."""
    settings = ServeConfig(request_timeout_s=0.5, llm=LlmConfig(max_running=1))
    app = create_app(registry, ["tiny-gpt"], settings, monitoring=OFF)
    with live_server(app) as http:
        engine = app.state.serving.models["tiny-gpt"].gateway.primary.engine  # type: ignore[attr-defined]
        engine.scheduler.model = Slowed(engine.scheduler.model, 0.06)  # 25 tokens: 1.5 s
        long = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 25, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(http.post, "/v1/completions", json=long)
            while engine.running() == 0:
                time.sleep(0.01)
            streamed = http.post("/v1/completions", json={**long, "max_tokens": 3, "stream": True})
            assert running.result().status_code == 200
        metrics = http.get("/metrics").text
    assert streamed.status_code == 503
    assert streamed.headers["retry-after"] == "1"
    assert "past the request's time" in streamed.json()["error"]["message"]
    counted = metric_value(
        metrics, "modelcycle_requests_total", model="tiny-gpt", version="1", protocol="openai", code="503"
    )
    assert counted == 1


def test_generation_metrics_are_named_as_vllm_names_them(registry: Registry) -> None:
    app = create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=OFF)
    with live_server(app) as http:
        client = client_of(http)
        made = [
            client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=tokens, temperature=0)
            for tokens in (3, 5, 7)
        ]
        metrics = http.get("/metrics").text
    generated = sum(completion.usage.completion_tokens for completion in made)
    prompt = sum(completion.usage.prompt_tokens for completion in made)
    assert metric_value(metrics, "modelcycle_generation_tokens_total", model="tiny-gpt") == generated == 15
    assert metric_value(metrics, "modelcycle_prompt_tokens_total", model="tiny-gpt") == prompt
    for histogram in ("time_to_first_token", "time_per_output_token", "e2e_request_latency"):
        assert metric_value(metrics, f"modelcycle_{histogram}_seconds_count", model="tiny-gpt") == 3
    assert metric_value(metrics, "modelcycle_num_requests_running", model="tiny-gpt") == 0
    assert metric_value(metrics, "modelcycle_num_requests_waiting", model="tiny-gpt") == 0
    assert metric_value(metrics, "modelcycle_kv_cache_usage_perc", model="tiny-gpt") == 0


def test_a_client_that_leaves_frees_its_rows_at_once(registry: Registry) -> None:
    app = create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=OFF)
    body = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 30, "stream": True}
    with live_server(app) as http:
        engine = app.state.serving.models["tiny-gpt"].gateway.primary.engine  # type: ignore[attr-defined]
        with http.stream("POST", "/v1/completions", json=body) as response:
            next(response.iter_lines())
        deadline = time.monotonic() + 5
        while (engine.scheduler.busy() or engine.scheduler.reserved) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.scheduler.busy()
        assert engine.scheduler.reserved == 0


def test_the_engine_off_baseline_gives_the_same_greedy_text(registry: Registry) -> None:
    body = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 10, "temperature": 0}
    texts = []
    for engine in (True, False):
        settings = ServeConfig(llm=LlmConfig(engine=engine))
        with live_server(create_app(registry, ["tiny-gpt"], settings, monitoring=OFF)) as http:
            texts.append(http.post("/v1/completions", json=body).json()["choices"][0]["text"])
            if not engine:
                for extra in ({"n": 2}, {"frequency_penalty": 1.0}):
                    refused = http.post("/v1/completions", json={**body, **extra})
                    assert refused.status_code == 400
                    assert "need the language-model engine" in refused.json()["error"]["message"]
    assert texts[0] == texts[1]


@pytest.mark.parametrize(("method", "runtime"), [("bf16", "all"), ("dynamic-int8", "torch")])
def test_the_engine_serves_a_language_models_variants(tmp_path: Path, method: str, runtime: str) -> None:
    registry = Registry(train_into(tmp_path / "home", ("tiny-gpt.yaml", TINY_GPT)))
    (made,) = quantize(registry.open("tiny-gpt"), method, runtime=runtime)  # type: ignore[arg-type]
    settings = ServeConfig(variant=made.variant, force_variant=True)
    app = create_app(registry, ["tiny-gpt"], settings, monitoring=OFF)
    body = {"model": "tiny-gpt", "prompt": "To be", "max_tokens": 6, "temperature": 0, "n": 2}
    with live_server(app) as http:
        answer = http.post("/v1/completions", json=body)
        loaded = app.state.serving.models["tiny-gpt"].gateway.primary  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    assert loaded.variant == made.variant
    assert loaded.engine is not None  # n = 2 needs it, too
    choices = answer.json()["choices"]
    assert [choice["finish_reason"] for choice in choices] == ["length", "length"]
    assert choices[0]["text"] == choices[1]["text"]  # greedy
    assert answer.json()["usage"]["completion_tokens"] == 12


class Broken(torch.nn.Module):
    """A language model whose every pass fails."""

    def decode(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("out of memory (on purpose)")


def test_a_model_failure_is_an_error_in_openais_shape_streaming_or_not(registry: Registry) -> None:
    app = create_app(registry, ["tiny-gpt"], ServeConfig(), monitoring=OFF)
    with live_server(app) as http:
        engine = app.state.serving.models["tiny-gpt"].gateway.primary.engine  # type: ignore[attr-defined]
        engine.scheduler.model = Broken()
        client = client_of(http)
        with pytest.raises(openai.InternalServerError, match="out of memory"):
            client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=3)
        with pytest.raises(openai.APIError, match="out of memory"):
            list(client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=3, stream=True))
        assert engine.scheduler.reserved == 0


def test_the_one_at_a_time_path_bounds_the_wait_for_its_lock() -> None:
    """Engine off: a request behind a long generation gets 503 after serve.request_timeout_s, not a wait
    for the whole generation."""
    from modelcycle.errors import OverloadedError
    from modelcycle.models.sampling import SamplingParams
    from modelcycle.serve.sequential import SequentialGeneration

    async def behind_a_held_lock() -> float:
        lock = asyncio.Lock()
        await lock.acquire()  # a long generation holds the version
        waiting = SequentialGeneration(
            None,  # type: ignore[arg-type]  # never reached: the wait ends first
            lock,
            "To be",
            2,
            8,
            SamplingParams(),
            [],
            queue_timeout_s=0.1,
        )
        started = time.monotonic()
        with pytest.raises(OverloadedError, match=r"waited 0\.1 s for the language model"):
            async for _ in waiting.events():
                pass
        assert lock.locked()  # still the long one's
        return time.monotonic() - started

    assert 0.1 <= asyncio.run(behind_a_held_lock()) < 2
