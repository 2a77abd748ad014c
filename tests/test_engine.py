"""The language-model engine (continuous batching): greedy outputs token-identical alone and batched, for both
architectures; per-request sampling, stops, limits, cancellation and admission; the shared cache's rows."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from modelcycle.config import LlmConfig
from modelcycle.data.corpus import CorpusBlocks
from modelcycle.engine import Engine, GenerationRequest
from modelcycle.engine.generation import token_logprob
from modelcycle.errors import OverloadedError, RequestError
from modelcycle.models.causal_lm import CausalLM
from modelcycle.models.gpt import GPT, GPTParams
from modelcycle.models.kv_cache import KVCache
from modelcycle.models.sampling import SamplingParams

VOCABULARY = 64
GREEDY = SamplingParams(temperature=0)


class Numbers(CorpusBlocks):
    """Token ids written as numbers: the text shows which tokens came."""

    max_length = 32

    def __init__(self, stop: int | None = None) -> None:
        self.stop = stop

    def stream(self, text: str) -> np.ndarray:
        return np.asarray([int(word) for word in text.split()], dtype=np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return "".join(f" {int(token)}" for token in ids)

    def stop_token(self) -> int | None:
        return self.stop


def Limits(**changes: int) -> LlmConfig:
    """The engine's settings, small enough that the tests reach every limit."""
    return LlmConfig(
        **{"max_running": 16, "max_batch_tokens": 4096, "prefill_chunk": 8, "max_waiting": 64, **changes}
    )


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(
        VOCABULARY, GPTParams(embed_dim=32, num_layers=2, num_heads=4, context_length=96, dropout=0.0)
    ).eval()


def llama() -> CausalLM:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCABULARY,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
    )
    return CausalLM(transformers.AutoModelForCausalLM.from_config(config)).eval()


def prompts(count: int) -> list[list[int]]:
    generator = np.random.default_rng(1)
    return [
        generator.integers(2, VOCABULARY, size=int(length)).tolist()
        for length in generator.integers(1, 30, count)
    ]


async def run_all(engine: Engine, requests: list[GenerationRequest]) -> list[dict[int, list[int]]]:
    """Every request at once; per request, the tokens of each choice."""

    async def one(request: GenerationRequest) -> dict[int, list[int]]:
        generation = engine.submit(request)
        async for _ in generation.events():
            pass
        return {sequence.choice: sequence.generated for sequence in generation.sequences}

    return await asyncio.gather(*(one(request) for request in requests))


def generate(
    model: torch.nn.Module, requests: list[GenerationRequest], limits: LlmConfig | None = None
) -> list:
    engine = Engine(model, Numbers(), limits or Limits(), torch.device("cpu"))
    try:
        return asyncio.run(run_all(engine, requests))
    finally:
        engine.close()


@pytest.mark.parametrize("build", [gpt, llama], ids=["gpt", "hf_causal_lm"])
def test_greedy_tokens_are_the_same_alone_and_batched_with_15_others(build):
    model = build()
    requests = [
        GenerationRequest(prompt, max_tokens=8 + index, sampling=GREEDY)
        for index, prompt in enumerate(prompts(16))
    ]
    alone = [generate(model, [request])[0][0] for request in requests]
    batched = [choices[0] for choices in generate(model, requests)]
    assert batched == alone
    assert [len(tokens) for tokens in alone] == [8 + index for index in range(16)]
    # and the model's own one-at-a-time loop agrees
    first = requests[3]
    direct = [
        int(token) for token in model.tokens(torch.tensor([first.prompt]), first.max_tokens, temperature=0)
    ]
    assert alone[3] == direct


def test_prompts_longer_than_a_chunk_and_a_full_batch_queue_in_turn():
    model = gpt()
    long_prompt = list(range(2, 60))  # 58 tokens: 8 chunks of 8
    requests = [GenerationRequest(long_prompt, 5, sampling=GREEDY)] + [
        GenerationRequest(prompt, 6, sampling=GREEDY) for prompt in prompts(5)
    ]
    alone = [generate(model, [request])[0][0] for request in requests]
    batched = [choices[0] for choices in generate(model, requests, Limits(max_running=2))]
    assert batched == alone


def test_seeded_sampling_repeats_and_choices_differ():
    model = gpt()
    sampled = SamplingParams(temperature=1.0, top_k=20, seed=7)
    request = GenerationRequest([5, 6, 7], 12, sampling=sampled, n=2)
    first, again = generate(model, [request])[0], generate(model, [request, request])[1]
    assert first == again
    assert first[0] != first[1]  # choice i samples with seed + i


def test_frequency_penalty_keeps_tokens_from_repeating():
    model = gpt()
    plain = GenerationRequest([3, 4], 40, sampling=SamplingParams(temperature=0.0))
    penalized = GenerationRequest(
        [3, 4], 40, sampling=SamplingParams(temperature=0.0, frequency_penalty=100.0)
    )
    repeated = generate(model, [plain])[0][0]
    varied = generate(model, [penalized])[0][0]
    assert len(set(repeated)) < 40
    assert len(set(varied)) == 40  # a token once chosen is pushed out of reach


def test_stop_token_and_stop_strings_finish_with_stop():
    model = gpt()
    tokens = generate(model, [GenerationRequest([9, 9], 10, sampling=GREEDY)])[0][0]
    written = "".join(f" {token}" for token in tokens)

    async def finish(engine: Engine, request: GenerationRequest) -> tuple[str, str | None]:
        generation = engine.submit(request)
        text, reason = "", None
        async for event in generation.events():
            text, reason = text + event.text, event.finish_reason or reason
        return text, reason

    def run(stop_token: int | None, request: GenerationRequest) -> tuple[str, str | None]:
        engine = Engine(model, Numbers(stop=stop_token), Limits(), torch.device("cpu"))
        try:
            return asyncio.run(finish(engine, request))
        finally:
            engine.close()

    stop_word = f" {tokens[3]}"
    by_string = run(None, GenerationRequest([9, 9], 10, sampling=GREEDY, stop=(stop_word,)))
    assert by_string == (written[: written.find(stop_word)], "stop")
    first_new = next(index for index in range(1, len(tokens)) if tokens[index] not in tokens[:index])
    by_token = run(tokens[first_new], GenerationRequest([9, 9], 10, sampling=GREEDY))
    assert by_token == ("".join(f" {token}" for token in tokens[:first_new]), "stop")
    by_length = run(None, GenerationRequest([9, 9], 2, sampling=GREEDY))
    assert by_length == (f" {tokens[0]} {tokens[1]}", "length")


def test_a_cancelled_request_leaves_the_batch_and_frees_its_budget():
    model = gpt()

    async def scenario(engine: Engine) -> tuple[int, list[int]]:
        hanging = engine.submit(GenerationRequest([2, 3], 80, sampling=GREEDY))
        async for _ in hanging.events():
            break  # the first token came: the client leaves
        hanging.cancel()
        other = engine.submit(GenerationRequest([4, 5], 4, sampling=GREEDY))
        async for _ in other.events():
            pass
        while engine.scheduler.busy():
            await asyncio.sleep(0.01)
        return engine.scheduler.reserved, [len(s.generated) for s in hanging.sequences]

    engine = Engine(model, Numbers(), Limits(max_batch_tokens=90), torch.device("cpu"))
    try:
        reserved, produced = asyncio.run(scenario(engine))
    finally:
        engine.close()
    assert reserved == 0
    assert produced[0] < 80
    assert engine.scheduler.cache.rows == 0
    assert engine.scheduler.cache.bytes() == 0


def test_admission_errors_name_the_limit():
    model = gpt()

    async def scenario(engine: Engine) -> None:
        with pytest.raises(RequestError, match="96 tokens, but the model"):
            engine.submit(GenerationRequest(list(range(96)), 4))
        with pytest.raises(RequestError, match="budget of 40 tokens"):
            engine.submit(GenerationRequest([1, 2], 50))
        accepted, refused = [], []
        for _ in range(8):  # one at a time fits the budget, three more may wait
            try:
                accepted.append(engine.submit(GenerationRequest([1, 2], 30, sampling=GREEDY)))
            except OverloadedError as error:
                refused.append(str(error))
        assert 3 <= len(accepted) <= 4
        assert refused[0].startswith("the language model's waiting queue is full (3 requests)")
        for generation in accepted:
            async for _ in generation.events():
                pass

    engine = Engine(model, Numbers(), Limits(max_batch_tokens=40, max_waiting=3), torch.device("cpu"))
    try:
        asyncio.run(scenario(engine))
    finally:
        engine.close()


def test_cache_rows_join_leave_and_compact_keep_each_rows_positions():
    prefill = KVCache(1)  # two prompts packed in one row, 3 and 5 tokens, under owners 7 and 8
    owners = torch.tensor([[7, 7, 7, 8, 8, 8, 8, 8]])
    mask = prefill.open(8, rows=1, owners=owners)
    assert mask[0, 0, 4].tolist() == [False, False, False, True, True, False, False, False]  # owner 8's 2nd
    marker = owners[:, None, :, None].float().expand(1, 1, 8, 2)
    prefill.write(0, marker, marker)
    prefill.close()
    cache = KVCache(1)
    assert cache.join(prefill, owner=7) == 0
    assert cache.join(prefill, owner=8) == 1
    assert cache.length == 5
    assert (cache.owner[:2, :5] == 0).sum(dim=1).tolist() == [3, 5]
    prefill.forget(7)
    prefill.forget(8)
    assert prefill.bytes() == 0  # nothing held: released
    mask = cache.open(1)
    cache.write(0, torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    cache.close()
    assert mask.shape == (2, 1, 1, 6)
    assert mask[0, 0, 0].tolist() == [True, True, True, False, False, True]  # its own 3, the new one
    assert cache.leave(0) == 1  # the 5-long row moved into row 0
    cache.compact()
    assert cache.length == 6
    assert cache.rows == 1
    keys = cache.keys[0]
    assert keys is not None
    assert keys[0, 0, :5, 0].tolist() == [8.0] * 5


def test_choices_that_finish_in_the_same_step_hand_the_budget_back_once():
    engine = Engine(gpt(), Numbers(), Limits(), torch.device("cpu"))
    try:
        asyncio.run(run_all(engine, [GenerationRequest([5, 6], 6, sampling=GREEDY, n=3)]))
    finally:
        engine.close()
    assert engine.scheduler.reserved == 0


def test_text_that_may_begin_a_stop_string_waits_and_never_leaks():
    model = gpt()
    tokens = generate(model, [GenerationRequest([9, 9], 10, sampling=GREEDY)])[0][0]
    written = "".join(f" {token}" for token in tokens)

    def pieces(stop: str) -> list[str]:
        async def scenario(engine: Engine) -> list[str]:
            generation = engine.submit(GenerationRequest([9, 9], 10, sampling=GREEDY, stop=(stop,)))
            return [event.text async for event in generation.events()]

        engine = Engine(model, Numbers(), Limits(), torch.device("cpu"))
        try:
            return asyncio.run(scenario(engine))
        finally:
            engine.close()

    spanning = f" {tokens[2]} {tokens[3]}"  # completed by the fourth token: the third must not go out first
    assert "".join(pieces(spanning)) == written[: written.find(spanning)]
    never = f" {tokens[9]} 999"  # begun by the last token, never completed: held, then sent at the end
    assert "".join(pieces(never)) == written


class SlowGPT(GPT):
    """A gpt whose steps take a while, so that requests are still in the engine when it stops."""

    def decode(self, *args, **kwargs):
        time.sleep(0.01)
        return super().decode(*args, **kwargs)


def test_a_stopping_engine_answers_every_request_it_holds():
    torch.manual_seed(0)
    model = SlowGPT(VOCABULARY, GPTParams(embed_dim=32, num_layers=1, num_heads=4, context_length=96)).eval()
    engine = Engine(model, Numbers(), Limits(max_running=1), torch.device("cpu"))

    async def scenario() -> list[str]:
        held = [engine.submit(GenerationRequest([1, 2], 60, sampling=GREEDY)) for _ in range(3)]
        await asyncio.sleep(0.05)
        await asyncio.to_thread(engine.close)
        told = []
        for generation in held:
            try:
                async for _ in generation.events():
                    pass
            except OverloadedError as error:
                told.append(str(error))
        with pytest.raises(OverloadedError, match="engine has stopped"):
            engine.submit(GenerationRequest([1, 2], 4))
        return told

    told = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert told == ["the language model's engine stopped"] * 3


def test_a_request_waiting_past_the_queue_timeout_gets_503_and_the_running_one_goes_on():
    """One long generation holds the only row: the request behind it is told at once once its wait passes
    the bound, instead of waiting for the long one to end."""
    torch.manual_seed(0)
    model = SlowGPT(VOCABULARY, GPTParams(embed_dim=32, num_layers=1, num_heads=4, context_length=96)).eval()
    engine = Engine(model, Numbers(), Limits(max_running=1), torch.device("cpu"))

    async def scenario() -> tuple[int, str, float]:
        long = engine.submit(GenerationRequest([1, 2], 80, sampling=GREEDY))
        behind = engine.submit(GenerationRequest([3, 4], 4, sampling=GREEDY), max_wait_s=0.2)
        started = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            async for _ in behind.events():
                pass
        waited = time.monotonic() - started
        tokens = [event async for event in long.events()]
        return len(tokens), str(refused.value), waited

    try:
        count, message, waited = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    finally:
        engine.close()
    assert count == 80  # the long one finished
    assert "for room in the language model's batch, past the request's time" in message
    assert 0.2 <= waited < 0.2 + 80 * 0.01  # told long before the long generation ended
    assert engine.scheduler.reserved == 0


def test_log_probability_alternatives_stop_at_the_vocabulary():
    found = token_logprob(torch.tensor([0.0, 1.0, 2.0]), 2, alternatives=20)
    assert [token for token, _ in found.top] == [2, 1, 0]
    assert found.logprob == pytest.approx(found.top[0][1])
