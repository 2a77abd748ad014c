"""The OpenAI API's response shapes for generated text: a whole choice, a streamed chunk, the usage chunk, and
log-probabilities in each endpoint's own form (``/v1/completions``: parallel lists; ``/v1/chat/completions``:
one object per token, with its bytes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelcycle.data.corpus import CorpusBlocks
from modelcycle.engine import Event, TokenLogprob


@dataclass
class Choice:
    """One choice's text, finish reason and (when asked) its tokens' log-probabilities."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Rendering:
    """How one request's answer is written: chat or completion, its id, creation time and model."""

    preprocessor: CorpusBlocks
    chat: bool
    common: dict[str, Any]

    @property
    def kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def whole(self, choice: Choice) -> dict[str, Any]:
        logprobs = self._logprobs(choice.tokens, 0) if choice.tokens else None
        if self.chat:
            message = {"role": "assistant", "content": choice.text}
            return {
                "index": choice.index,
                "message": message,
                "finish_reason": choice.finish_reason,
                "logprobs": logprobs,
            }
        return {
            "index": choice.index,
            "text": choice.text,
            "finish_reason": choice.finish_reason,
            "logprobs": logprobs,
        }

    def chunk(self, event: Event, *, role: bool = False, offset: int = 0) -> str:
        """One server-sent event for what a choice produced in one step (or, ``role``, the chat's opening
        chunk); ``offset`` is where its text starts in the choice (completions' ``text_offset``)."""
        logprobs = self._logprobs([event.token], offset) if event.token is not None else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if event.text:
                delta["content"] = event.text
            choice: dict[str, Any] = {
                "index": event.choice,
                "delta": delta,
                "finish_reason": event.finish_reason,
                "logprobs": logprobs,
            }
        else:
            choice = {
                "index": event.choice,
                "text": event.text,
                "finish_reason": event.finish_reason,
                "logprobs": logprobs,
            }
        return self._event({**self.common, "object": self.kind, "choices": [choice]})

    def usage_chunk(self, usage: dict[str, int]) -> str:
        return self._event({**self.common, "object": self.kind, "choices": [], "usage": usage})

    def _logprobs(self, tokens: list[TokenLogprob], offset: int) -> dict[str, Any]:
        if self.chat:
            return {"content": [self._chat_token(token) for token in tokens]}
        texts = [self._text(token.token) for token in tokens]
        offsets = [offset + sum(len(text) for text in texts[:index]) for index in range(len(texts))]
        return {
            "tokens": texts,
            "token_logprobs": [token.logprob for token in tokens],
            "top_logprobs": [{self._text(i): value for i, value in token.top} for token in tokens],
            "text_offset": offsets,
        }

    def _chat_token(self, token: TokenLogprob) -> dict[str, Any]:
        text = self._text(token.token)
        return {
            "token": text,
            "logprob": token.logprob,
            "bytes": list(text.encode()),
            "top_logprobs": [
                {"token": self._text(i), "logprob": value, "bytes": list(self._text(i).encode())}
                for i, value in token.top
            ],
        }

    def _text(self, token: int) -> str:
        return self.preprocessor.decode([token])

    @staticmethod
    def _event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"
