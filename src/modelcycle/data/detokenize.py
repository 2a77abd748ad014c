"""Generated token ids as text, piece by piece as they come (for streaming): a piece waits while the text ends
in half of a multi-byte character or in what may be the start of a stop string, and generation stops at the
end-of-turn token or where a stop string starts (neither is part of the text)."""

from __future__ import annotations

from modelcycle.data.corpus import CorpusBlocks


class Detokenizer:
    """One generation's text so far. ``push`` takes the next token and returns the new piece of text (maybe
    empty); ``finish_reason`` becomes "stop" when the end-of-turn token or a stop string ended it; ``flush``
    gives what was held back, once generation ends otherwise (its token limit)."""

    def __init__(self, preprocessor: CorpusBlocks, stop: list[str] | None = None) -> None:
        self.preprocessor = preprocessor
        self.stop_token = preprocessor.stop_token()
        self.stop = [word for word in stop or [] if word]
        self.tokens: list[int] = []
        self.sent = ""
        self.decoded = ""  # all of the text so far, sent or held back
        self.finish_reason: str | None = None

    def push(self, token: int) -> str:
        if self.finish_reason is not None:
            return ""
        if token == self.stop_token:
            self.finish_reason = "stop"
            return self.flush()
        self.tokens.append(token)
        text = self.preprocessor.decode(self.tokens)
        cut = min((text.find(word) for word in self.stop if word in text), default=-1)
        if cut >= 0:
            self.finish_reason = "stop"
            return self._advance(text[:cut])
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return ""
        self.decoded = text
        return self._advance(text[: len(text) - self._stop_prefix(text)])

    def flush(self) -> str:
        """The text held back as the possible start of a stop string, now that none can follow."""
        return self._advance(self.decoded)

    def _stop_prefix(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a stop string."""
        return max(
            (size for word in self.stop for size in range(1, len(word)) if text.endswith(word[:size])),
            default=0,
        )

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece
