"""One request to the engine (a :class:`Generation`: a prompt, ``n`` choices, their sampling) and its
choices (each a :class:`Sequence`, one row of the shared key / value cache while it decodes). The engine's
thread fills them; the request's own event loop reads what they produced through ``events``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from modelcycle.data.corpus import CorpusBlocks
from modelcycle.data.detokenize import Detokenizer
from modelcycle.errors import ModelcycleError
from modelcycle.models.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """What a client asks: ``prompt`` token ids, up to ``max_tokens`` new ones per choice, ``n`` choices;
    ``logprobs``: None for none, else how many alternatives (0 to 20) to report beside each chosen token."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Event:
    """What one choice produced in one step: a piece of text (maybe empty: a token that completes no
    character yet), its token and log-probability when asked, and the finish reason when it ended."""

    choice: int
    text: str
    token: TokenLogprob | None = None
    finish_reason: str | None = None


class Sequence:
    """One choice: its tokens so far, its sampling state, its cache row while it decodes."""

    def __init__(self, generation: Generation, choice: int, preprocessor: CorpusBlocks) -> None:
        self.generation = generation
        self.choice = choice
        request = generation.request
        self.sampling = request.sampling
        self.random: torch.Generator | None = None  # made on the logits' device at the first draw
        self.detokenizer = Detokenizer(preprocessor, list(request.stop))
        self.generated: list[int] = []
        self.counts: torch.Tensor | None = None  # per vocabulary token, for the penalties
        self.row: int | None = None
        self.finish_reason: str | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """This choice's random numbers: seeded with the request's seed + the choice's index, else fresh
        (without touching the process's global seed)."""
        if self.random is None:
            self.random = torch.Generator(device)
            seed = self.sampling.seed
            if seed is None:
                self.random.seed()
            else:
                self.random.manual_seed((seed + self.choice) % 2**64)
        return self.random

    @property
    def position(self) -> int:
        """The position of the last token chosen (the next input)."""
        return len(self.generation.request.prompt) + len(self.generated) - 1

    def accept(self, token: int, logprob: TokenLogprob | None) -> Event:
        """Record the chosen token; the event to send, with the finish reason if this ends the choice."""
        self.generated.append(token)
        piece = self.detokenizer.push(token)
        if self.detokenizer.finish_reason is not None:
            self.finish_reason = self.detokenizer.finish_reason
        elif len(self.generated) >= self.generation.max_tokens:
            self.finish_reason = "length"
            piece += self.detokenizer.flush()
        return Event(self.choice, piece, logprob, self.finish_reason)


class Generation:
    """A request in the engine. ``events`` yields every choice's events until all have finished; ``cancel``
    (the client left) frees its rows at the next step."""

    def __init__(
        self,
        request: GenerationRequest,
        preprocessor: CorpusBlocks,
        max_tokens: int,
        loop: asyncio.AbstractEventLoop,
        *,
        max_wait_s: float | None = None,
    ) -> None:
        self.request = request
        self.max_tokens = max_tokens  # the request's, within the model's context
        self.loop = loop
        self.queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()  # None: cancelled
        self.sequences = [Sequence(self, choice, preprocessor) for choice in range(request.n)]
        self.released = False  # its budget handed back to the scheduler
        self.prefilled = 0  # prompt tokens in the scheduler's prefill cache
        self.slot = -1  # their owner id there
        self.cancelled = False
        self.submitted = time.monotonic()
        self.max_wait_s = max_wait_s  # the longest it may wait for room (None: no bound)

    @property
    def cost(self) -> int:
        """Cache positions it may hold at most: every choice's prompt and tokens."""
        return self.request.n * (len(self.request.prompt) + self.max_tokens)

    def cancel(self) -> None:
        """Stop it (the client left, or its sampling failed): its rows go at the next step, ``events``
        ends. Safe from any thread."""
        self.cancelled = True
        self._post(None)

    def _post(self, item: Event | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed (server gone): nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def send(self, event: Event | BaseException) -> None:
        """From the engine's thread: hand an event to the request's event loop."""
        self._post(event)

    async def events(self) -> AsyncIterator[Event]:
        open_choices = self.request.n
        while open_choices:
            event = await self.queue.get()
            if event is None:
                return
            if isinstance(event, ModelcycleError):
                raise event
            if isinstance(event, BaseException):  # the model failed: the server's fault, said as such
                raise ModelcycleError(f"the language model failed: {event}") from event
            if event.finish_reason is not None:
                open_choices -= 1
            yield event

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt)

    @property
    def completion_tokens(self) -> int:
        return sum(len(sequence.generated) for sequence in self.sequences)


def token_logprob(logits: torch.Tensor, token: int, alternatives: int) -> TokenLogprob:
    """The chosen token's log-probability under the model (before sampling's filters) and the
    ``alternatives`` most likely tokens'."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top: tuple[tuple[int, float], ...] = ()
    alternatives = min(alternatives, logprobs.shape[-1])  # a small vocabulary has fewer to offer
    if alternatives:
        values, ids = torch.topk(logprobs, alternatives)
        top = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True))
    value = float(logprobs[token])
    return TokenLogprob(token, value if math.isfinite(value) else -9999.0, top)
