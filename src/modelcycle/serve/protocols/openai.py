"""OpenAI-compatible text generation for language-model bundles: ``GET /v1/models``, ``POST /v1/completions``
and ``POST /v1/chat/completions`` (with the model's own chat template), each with ``stream: true`` as
server-sent events ending in ``data: [DONE]`` and with token ``usage``. Generation runs off the event loop,
one request at a time per model (a language model's decoding loop holds its own cache)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from modelcycle.data.corpus import CorpusBlocks
from modelcycle.errors import ConfigError, RequestError
from modelcycle.predictor import TextStream, stream_text
from modelcycle.serve.rendering import ProtocolRoute
from modelcycle.serve.request_path import Exchange, new_request_id
from modelcycle.serve.state import ServerState, serving_state
from modelcycle.serve.versions import LoadedVersion

PROTOCOL = "openai"
MAX_TOKENS = 4096
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


class Sampling(BaseModel):
    model: str
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)


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
        _language_model(exchange.loaded)
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise RequestError("prompt: one prompt per request")
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        asked = {"prompt": prompt}
        return await _respond(exchange, body, prompt, asked, chat=False, limit=body.max_tokens or 16)


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
    exchange = _exchange(serving_state(request), body.model, "chatcmpl-")
    with exchange.counted():
        preprocessor = _language_model(exchange.loaded)
        messages = [message.model_dump() for message in body.messages]
        prompt = preprocessor.chat_prompt(messages)
        limit = body.max_completion_tokens or body.max_tokens or 256
        return await _respond(exchange, body, prompt, {"messages": messages}, chat=True, limit=limit)


async def _respond(
    exchange: Exchange,
    body: Sampling,
    prompt: str,
    asked: dict[str, Any],
    *,
    chat: bool,
    limit: int,
) -> JSONResponse | StreamingResponse:
    """Generate from ``prompt``; ``asked`` is the request as monitoring stores it (``{"prompt": ...}``, or
    ``{"messages": [...]}`` before the chat template), masked by the ``pii`` settings like any input."""
    loaded = exchange.loaded

    def start() -> TextStream:
        try:
            return stream_text(
                loaded.predictor,
                prompt,
                max_new_tokens=limit,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
                stop=body.stops(),
            )
        except ConfigError as error:
            raise RequestError(error.message) from None

    identifier = exchange.request_id
    created = int(time.time())
    common = {"id": identifier, "created": created, "model": body.model}
    headers = {"X-Model-Version": str(loaded.version), "X-Request-Id": identifier}
    lock = loaded.generating

    def answered(text: str) -> None:
        """Time the request and store it with its answer (a stream's: once its last piece went out)."""
        exchange.stored([asked], NO_OUTPUTS, None, generated=text)

    if not body.stream:
        async with lock:
            stream, text = await asyncio.get_running_loop().run_in_executor(None, _run_whole, start)
        answered(text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": stream.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        payload = {
            **common,
            "object": "chat.completion" if chat else "text_completion",
            "choices": [choice],
            "usage": _usage(stream),
        }
        return JSONResponse(payload, headers=headers)
    stream = await asyncio.get_running_loop().run_in_executor(None, start)  # errors before the first byte
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    events = _events(stream, lock, common, answered, chat=chat, include_usage=include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _run_whole(start: Callable[[], TextStream]) -> tuple[TextStream, str]:
    stream = start()
    return stream, "".join(stream)


def _usage(stream: TextStream) -> dict[str, int]:
    return {
        "prompt_tokens": stream.prompt_tokens,
        "completion_tokens": stream.completion_tokens,
        "total_tokens": stream.prompt_tokens + stream.completion_tokens,
    }


async def _events(
    stream: TextStream,
    lock: asyncio.Lock,
    common: dict[str, Any],
    answered: Callable[[str], None],
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: one chunk per piece of text, a last chunk with the finish reason, optionally one
    with the usage, then ``[DONE]``. Tokens are produced on a thread and handed over through a queue;
    ``answered`` gets the text that went out (all of it, or as far as a client that left got)."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            content: dict[str, Any] = {"role": "assistant"} if role else {}
            if delta is not None:
                content["content"] = delta
            choice: dict[str, Any] = {"index": 0, "delta": content, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**common, 'object': kind, 'choices': [choice]})}\n\n"

    async with lock:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()

        def produce(pieces: Iterator[str]) -> None:
            try:
                for piece in pieces:
                    if cancelled.is_set():  # the client went away: stop computing
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(None, produce, iter(stream))
        sent: list[str] = []
        try:
            if chat:
                yield chunk(None, None, role=True)
            while (piece := await queue.get()) is not None:
                yield chunk(piece, None)
                sent.append(piece)
            yield chunk(None, stream.finish_reason)
            if include_usage:
                usage = {**common, "object": kind, "choices": [], "usage": _usage(stream)}
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()
            answered("".join(sent))  # before any await: a client that left cancels those too
            with anyio.CancelScope(shield=True):  # the model stays locked until its thread has stopped
                await worker
