"""OpenAI-compatible text generation for language-model bundles: ``GET /v1/models``, ``POST /v1/completions``
and ``POST /v1/chat/completions`` (with the model's own chat template), each with ``stream: true`` as
server-sent events ending in ``data: [DONE]`` and with token ``usage``; ``n`` choices, stop strings, seeds,
penalties and log-probabilities. Generation runs in the version's engine (modelcycle.engine: continuous
batching), or one request at a time per version with ``serve.llm.engine: false``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from modelcycle.data.corpus import CorpusBlocks
from modelcycle.engine import Event, GenerationRequest
from modelcycle.errors import ConfigError, ModelcycleError, RequestError
from modelcycle.models.sampling import SamplingParams
from modelcycle.predictor import prompt_ids
from modelcycle.serve.protocols.openai_shapes import Choice, Rendering
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.request_path import Exchange, new_request_id, time_left
from modelcycle.serve.sequential import SequentialGeneration
from modelcycle.serve.state import ServerState, serving_state
from modelcycle.serve.versions import LoadedVersion

PROTOCOL = "openai"
MAX_TOKENS = 4096
MAX_CHOICES = 8
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there
NO_OUTPUTS = np.empty((1, 0), dtype=np.float32)  # what a stored answer of generated text has for outputs
# OpenAI's error types by status (https://platform.openai.com/docs/guides/error-codes); others by class
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


class OpenAIRoute(ProtocolRoute):
    """OpenAI's error object, which its clients read: ``{"error": {"message", "type", "param", "code"}}``;
    ``param`` names the request field at fault when the body did not validate."""

    @staticmethod
    def error_body(message: str, status: int, field: str | None) -> dict[str, Any]:
        kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": field, "code": None}}


router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], route_class=OpenAIRoute)


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """What both endpoints take (OpenAI's names; ``top_k`` as vLLM adds it)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    user: str | None = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p if self.top_p < 1 else None,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
        )

    def alternatives(self) -> int | None:
        """How many likeliest tokens to report beside each chosen one; None: no log-probabilities."""
        return None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5)

    def alternatives(self) -> int | None:
        return self.logprobs


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")  # as OpenAI answers it
        return self

    def alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    state = serving_state(request)
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "modelcycle"}
            for name in state.models
        ],
    }


def _exchange(state: ServerState, name: str, prefix: str) -> Exchange:
    """The request to the version the gateway picks, under an id in OpenAI's form (``prefix`` + hex)."""
    served = state.model(name)
    return Exchange(state, name, served.gateway.route(), PROTOCOL, prefix + new_request_id())


def _language_model(loaded: LoadedVersion) -> CorpusBlocks:
    """The version's text preprocessing, which only a language model has."""
    preprocessor = loaded.predictor.preprocessor
    if not isinstance(preprocessor, CorpusBlocks):
        name = loaded.bundle.manifest.name
        raise RequestError(
            f"model: '{name}' is a {loaded.bundle.manifest.task} model, not a language model",
            hint=f"use /v1/models/{name}:predict",
        )
    return preprocessor


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    exchange = _exchange(serving_state(request), body.model, "cmpl-")
    with exchange.counted():
        preprocessor = _language_model(exchange.loaded)
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise RequestError("prompt: one prompt per request")
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        asked = {"prompt": prompt}
        limit = body.max_tokens or 16
        return await _respond(
            exchange, preprocessor, body, prompt, asked, chat=False, limit=limit, request=request
        )


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
    exchange = _exchange(serving_state(request), body.model, "chatcmpl-")
    with exchange.counted():
        preprocessor = _language_model(exchange.loaded)
        messages = [message.model_dump() for message in body.messages]
        prompt = await asyncio.to_thread(preprocessor.chat_prompt, messages)  # off the event loop
        limit = body.max_completion_tokens or body.max_tokens or 256
        asked = {"messages": messages}
        return await _respond(
            exchange, preprocessor, body, prompt, asked, chat=True, limit=limit, request=request
        )


class Produced(Protocol):
    """A generation under way: the engine's, or one at a time (``serve.llm.engine: false``)."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    def events(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...


async def _respond(
    exchange: Exchange,
    preprocessor: CorpusBlocks,
    body: Sampling,
    prompt: str,
    asked: dict[str, Any],
    *,
    chat: bool,
    limit: int,
    request: Request,
) -> JSONResponse | StreamingResponse:
    """Generate from ``prompt``; ``asked`` is the request as monitoring stores it (``{"prompt": ...}``, or
    ``{"messages": [...]}`` before the chat template), masked by the ``pii`` settings like any input."""
    loaded = exchange.loaded
    waiting_s = time_left(request.scope, exchange.state.settings.request_timeout_s)
    produced = _start(loaded, preprocessor, body, prompt, limit, waiting_s)
    identifier = exchange.request_id
    common = {"id": identifier, "created": int(time.time()), "model": body.model}
    headers = {"X-Model-Version": str(loaded.version), "X-Request-Id": identifier}
    render = Rendering(preprocessor, chat=chat, common=common)

    progress = Progress(exchange.started)

    def answered(text: str) -> None:
        """Time the request and store it with its (first choice's) answer once its last piece went out."""
        exchange.stored([asked], NO_OUTPUTS, None, generated=text)
        exchange.state.metrics.generation.finished(
            exchange.model,
            first_token_s=progress.first_token_s,
            total_s=time.perf_counter() - exchange.started,
            prompt=produced.prompt_tokens,
            generated=produced.completion_tokens,
        )

    events = progress.watch(produced.events())
    if body.stream:
        events = await _admitted(events)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _streamed(events, produced, render, answered, include_usage=include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    choices = await _collected(events, produced, request, body.n)
    answered(choices[0].text)
    payload = {
        **common,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [render.whole(choice) for choice in choices],
        "usage": _usage(produced),
    }
    return JSONResponse(payload, headers=headers)


def _start(
    loaded: LoadedVersion,
    preprocessor: CorpusBlocks,
    body: Sampling,
    prompt: str,
    limit: int,
    queue_timeout_s: float,
) -> Produced:
    """Hand the prompt to the version's engine, or queue it for the version's lock; either way it waits
    for room at most ``queue_timeout_s`` (what is left of the request's time)."""
    try:
        ids = prompt_ids(loaded.bundle, preprocessor, prompt)
    except ConfigError as error:  # the caller's prompt: a bad request
        raise RequestError(error.message, hint=error.hint) from None
    if loaded.engine is not None:
        request = GenerationRequest(
            ids.tolist(), limit, body.sampling(), tuple(body.stops()), body.n, body.alternatives()
        )
        return loaded.engine.submit(request, max_wait_s=queue_timeout_s)
    if body.n > 1 or body.alternatives() is not None or body.sampling().penalized:
        raise RequestError(
            "n: more than one choice, logprobs and penalties need the language-model engine",
            hint="serve with serve.llm.engine: true (the default)",
            parameter="n",
        )
    return SequentialGeneration(
        loaded.predictor,
        loaded.generating,
        prompt,
        len(ids),
        limit,
        body.sampling(),
        body.stops(),
        queue_timeout_s,
    )


@dataclass
class Progress:
    """When a generation's first token came, for the time-to-first-token metric."""

    started: float
    first_token_s: float | None = None

    async def watch(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        async for event in events:
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
            yield event


async def _admitted(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """``events`` once the first has come: a stream's status line goes out with its first byte, so waiting
    for room (the engine's queue, the one-at-a-time lock) happens before it and an overload is a 503 with
    Retry-After, counted as such, rather than an error event after a 200."""
    first = await anext(events, None)

    async def joined() -> AsyncIterator[Event]:
        if first is not None:
            yield first
        async for event in events:
            yield event

    return joined()


async def _collected(
    events: AsyncIterator[Event], produced: Produced, request: Request, n: int
) -> list[Choice]:
    """Every choice, whole; a client that leaves first cancels the generation."""
    choices = [Choice(index) for index in range(n)]
    watcher = asyncio.get_running_loop().create_task(_cancel_when_gone(request, produced))
    try:
        async for event in events:
            choice = choices[event.choice]
            choice.text += event.text
            choice.finish_reason = event.finish_reason or choice.finish_reason
            if event.token is not None:
                choice.tokens.append(event.token)
    finally:
        watcher.cancel()
    return choices


async def _cancel_when_gone(request: Request, produced: Produced) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    produced.cancel()


def _usage(produced: Produced) -> dict[str, int]:
    return {
        "prompt_tokens": produced.prompt_tokens,
        "completion_tokens": produced.completion_tokens,
        "total_tokens": produced.prompt_tokens + produced.completion_tokens,
    }


async def _streamed(
    events: AsyncIterator[Event],
    produced: Produced,
    render: Rendering,
    answered: Callable[[str], None],
    *,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: per choice a first chunk with the role (chat), one chunk per event (text,
    log-probabilities, the finish reason with the last), optionally a chunk with the usage, then ``[DONE]``.
    ``answered`` gets the first choice's text that went out (all of it, or as far as a client that left
    got); a client that leaves cancels the generation; a failure after the first byte is an event with
    OpenAI's error object (its client raises it)."""
    texts: dict[int, str] = {}
    try:
        async for event in events:
            if render.chat and event.choice not in texts:
                yield render.chunk(Event(event.choice, ""), role=True)
            sent = texts.get(event.choice, "")
            yield render.chunk(event, offset=len(sent))
            texts[event.choice] = sent + event.text
        if include_usage:
            yield render.usage_chunk(_usage(produced))
        yield "data: [DONE]\n\n"
    except ModelcycleError as error:  # after the first byte the status is sent: the error is an event
        body = OpenAIRoute.error_body(str(error), error.http_status, error.parameter)
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        produced.cancel()  # a no-op when it finished; else the client left: stop computing
        answered(texts.get(0, ""))
