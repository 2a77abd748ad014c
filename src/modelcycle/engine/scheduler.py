"""Iteration-level scheduling (continuous batching, as in Orca, OSDI 2022, and vLLM): every ``step`` runs one
pass over up to ``prefill_chunk`` prompt tokens (the waiting prompts' next chunks, first come first served,
packed into one row without padding; so a long prompt never stalls the decoding sequences for more than a
chunk) and then one batched forward pass for every decoding sequence. Requests are admitted
between steps while their prompt and ``max_tokens`` fit the token budget and the row limit; a sequence that
finishes (end-of-turn token, stop string, its token limit, its client gone) leaves the batch at once and
frees its rows. Sampling is per sequence (its own temperature, filters, penalties and seed)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque

import torch

from modelcycle.config import LlmConfig
from modelcycle.engine.generation import Generation, Sequence, token_logprob
from modelcycle.errors import OverloadedError
from modelcycle.models.kv_cache import BatchDecoder, KVCache
from modelcycle.models.sampling import penalize, sample_next

logger = logging.getLogger(__name__)


class Scheduler:
    """The state of one language model's batch: waiting, prefilling and decoding requests, and the cache."""

    def __init__(self, model: BatchDecoder, limits: LlmConfig, device: torch.device) -> None:
        self.model = model
        self.limits = limits
        self.device = device
        self.cache = KVCache(model.decode_layers())  # the decoding sequences, one per row
        self.prefill = KVCache(model.decode_layers())  # the prompts being prefilled, packed in one row
        self.slots = itertools.count()  # owner ids of prompts in ``prefill``
        self.lock = threading.Lock()  # guards ``waiting``, which the event loop appends to
        self.waiting: deque[Generation] = deque()
        self.prefilling: deque[Generation] = deque()
        self.rows: list[Sequence] = []  # the decoding sequences, by cache row
        self.reserved = 0  # the budget the admitted requests hold
        self.cached_tokens = 0  # positions the decoding sequences hold (read by other threads)
        self.published_running = 0  # sequences in the batch (read by other threads)

    # --- what it holds ----------------------------------------------------------------------------------
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.rows)

    def running(self) -> int:
        """Sequences in the batch (prefilling or decoding), as the engine's thread last counted them."""
        return self.published_running

    def _rows_in_use(self) -> int:
        return len(self.rows) + sum(generation.request.n for generation in self.prefilling)

    # --- one step ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """Admit, prefill one chunk, decode one token for every running sequence. A failed prompt pass fails
        the requests whose prompts were under way, a failed decode pass the decoding ones; the engine goes on
        with the rest."""
        self._drop_cancelled()
        self._admit()
        try:
            self._prefill_chunk()
        except Exception as error:  # the prompts under way fail; the decoding sequences go on
            self._fail_prefill(error)
        try:
            self._decode()
        except Exception as error:  # the model failed: those requests get the error, the engine goes on
            self._fail_all(error)
        self.cached_tokens = sum(sequence.position + 1 for sequence in self.rows)
        self.published_running = self._rows_in_use()

    def _admit(self) -> None:
        with self.lock:
            while self.waiting:
                generation = self.waiting[0]
                if generation.cancelled:
                    self.waiting.popleft()
                    continue
                if self._waited_too_long(generation):
                    self.waiting.popleft()
                    continue
                rows = self._rows_in_use() + generation.request.n
                budget = self.reserved + generation.cost
                if rows > self.limits.max_running or budget > self.limits.max_batch_tokens:
                    return  # first come, first served: the head waits for room
                self.waiting.popleft()
                self.prefilling.append(generation)
                self.reserved += generation.cost

    def _waited_too_long(self, generation: Generation) -> bool:
        """A request still waiting for room after its ``max_wait_s`` gets an overload error (503 with
        Retry-After: another replica, or later, may have room) instead of waiting behind long generations
        without end."""
        if generation.max_wait_s is None:
            return False
        waited = time.monotonic() - generation.submitted
        if waited <= generation.max_wait_s:
            return False
        generation.send(
            OverloadedError(
                f"waited {waited:.1f} s for room in the language model's batch, past the request's time "
                "(serve.request_timeout_s)",
                hint="retry later, or raise serve.llm.max_running / max_batch_tokens",
            )
        )
        return True

    def _prefill_chunk(self) -> None:
        """One pass over the next ``prefill_chunk`` prompt tokens; prompts that complete sample their first
        token and join the decoding batch."""
        if not self.prefilling:
            return
        budget = self.limits.prefill_chunk
        ids: list[int] = []
        positions: list[int] = []
        owners: list[int] = []
        completed: list[tuple[Generation, int]] = []  # and the index of its last prompt token in the pass
        for generation in self.prefilling:
            prompt, start = generation.request.prompt, generation.prefilled
            take = min(len(prompt) - start, budget)
            if take == 0:
                break
            if start == 0:
                generation.slot = next(self.slots)
            ids += prompt[start : start + take]
            positions += range(start, start + take)
            owners += [generation.slot] * take
            generation.prefilled += take
            budget -= take
            if generation.prefilled == len(prompt):
                completed.append((generation, len(ids) - 1))
        keep = torch.tensor([index for _, index in completed] or [len(ids) - 1], device=self.device)
        logits = self.model.decode(
            torch.tensor([ids], device=self.device),
            torch.tensor([positions], device=self.device),
            self.prefill,
            owners=torch.tensor([owners]),
            keep=keep,
        )
        for index, (generation, _) in enumerate(completed):
            for sequence in generation.sequences:
                self._accept(sequence, logits[0, index])
                if sequence.finish_reason is None:
                    sequence.row = self.cache.join(self.prefill, owner=generation.slot)
                    self.rows.append(sequence)
                else:
                    self._finished(sequence)
            self.prefilling.remove(generation)  # after joining: it is in the batch throughout
            self.prefill.forget(generation.slot)

    def _decode(self) -> None:
        if not self.rows:
            return
        ids = torch.tensor([[sequence.generated[-1]] for sequence in self.rows], device=self.device)
        positions = torch.tensor([[sequence.position] for sequence in self.rows], device=self.device)
        logits = self.model.decode(ids, positions, self.cache)[:, -1]
        greedy = logits.argmax(dim=-1).tolist()
        for row, sequence in enumerate(list(self.rows)):
            self._accept(sequence, logits[row], greedy[row])
        for sequence in self._last_rows_first():
            if sequence.finish_reason is not None:
                self._finished(sequence)  # before leaving: once no row is left, nothing is reserved
                self._leave(sequence)

    # --- sequences ----------------------------------------------------------------------------------------
    def _accept(self, sequence: Sequence, logits: torch.Tensor, greedy: int | None = None) -> None:
        """Choose the sequence's next token from its ``logits`` (V,) and send what it makes. A failure here
        (its sampling) is its request's alone: the request gets the error and leaves at the next step."""
        try:
            self._choose(sequence, logits, greedy)
        except Exception as error:
            sequence.finish_reason = "error"
            sequence.generation.send(error)
            sequence.generation.cancel()

    def _choose(self, sequence: Sequence, logits: torch.Tensor, greedy: int | None) -> None:
        params = sequence.sampling
        if params.greedy:
            token = greedy if greedy is not None else int(logits.argmax())
        else:
            scores = logits
            if params.penalized:
                if sequence.counts is None:
                    sequence.counts = torch.zeros(logits.shape[-1], device=logits.device)
                scores = penalize(logits, sequence.counts, params)
            token = int(
                sample_next(
                    scores[None],
                    temperature=params.effective_temperature,
                    top_k=params.top_k,
                    top_p=params.top_p,
                    generator=sequence.generator(logits.device),
                )[0]
            )
            if sequence.counts is not None:
                sequence.counts[token] += 1
        alternatives = sequence.generation.request.logprobs
        logprob = token_logprob(logits, token, alternatives) if alternatives is not None else None
        sequence.generation.send(sequence.accept(token, logprob))

    def _last_rows_first(self) -> list[Sequence]:
        """The decoding sequences from the last row back: a row leaving moves the last one into its place,
        which has then already been seen."""
        return self.rows[::-1]

    def _leave(self, sequence: Sequence) -> None:
        row = sequence.row
        if row is None:
            return
        moved = self.cache.leave(row)
        last = self.rows.pop()
        if moved is not None:
            self.rows[row] = last
            last.row = row
        sequence.row = None

    def _finished(self, sequence: Sequence) -> None:
        """Hand the request's budget back once its last choice has finished (choices may finish together)."""
        generation = sequence.generation
        if all(choice.finish_reason is not None for choice in generation.sequences):
            self._release(generation)

    def _release(self, generation: Generation) -> None:
        if not generation.released:
            generation.released = True
            self.reserved -= generation.cost

    def _drop_cancelled(self) -> None:
        for sequence in self._last_rows_first():
            if sequence.generation.cancelled:
                sequence.finish_reason = "cancelled"
                self._finished(sequence)  # before leaving: once no row is left, nothing is reserved
                self._leave(sequence)
        for generation in [generation for generation in self.prefilling if generation.cancelled]:
            self.prefilling.remove(generation)
            if generation.prefilled:
                self.prefill.forget(generation.slot)
            for sequence in generation.sequences:
                sequence.finish_reason = "cancelled"
            self._release(generation)

    def _fail_prefill(self, error: Exception) -> None:
        """The prompts' pass failed: the requests whose prompts were under way get the error."""
        logger.error("the language model failed to prefill prompts: %s", error)
        for generation in [generation for generation in self.prefilling if generation.prefilled]:
            self.prefilling.remove(generation)
            generation.send(error)
            generation.cancel()  # any of its choices that joined the batch already leave at the next step
            self._release(generation)
        self.prefill.release()

    def _fail_all(self, error: Exception) -> None:
        """The batched pass failed: every decoding request gets the error; the engine starts empty."""
        logger.error(
            "the language model failed a step (%d sequences get the error): %s", len(self.rows), error
        )
        for generation in {sequence.generation for sequence in self.rows}:
            generation.send(error)
            self._release(generation)
        self.rows.clear()
        self.cache.release()

    def fail_everything(self, error: Exception) -> None:
        """Every request in the engine, waiting ones too, gets ``error`` (the engine stops or broke)."""
        with self.lock:
            waiting = list(self.waiting)
            self.waiting.clear()
        for generation in {*waiting, *self.prefilling, *(sequence.generation for sequence in self.rows)}:
            generation.send(error)
            self._release(generation)
        self.prefilling.clear()
        self.rows.clear()
        self.prefill.release()
        self.cache.release()
        self.published_running = 0
