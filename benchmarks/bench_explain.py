"""How long explaining one 512-token text takes on this machine, per method, for the pretrained MiniLM
classifier (6 layers, 22 M parameters) and the from-scratch text-student (2 layers), both trained here to
read 512 tokens. The claim to check: seconds, not minutes, on 2 CPU cores. Integrated gradients also reports
its completeness gap (convergence delta).

Run: .venv/bin/python benchmarks/bench_explain.py  → benchmarks/results/explain.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

from modelcycle.config import load_config
from modelcycle.data.text import TextEncoder
from modelcycle.explain import METHODS, explain
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 512
READS_512 = ["data.preprocess.text.max_length=512", "data.max_rows=400", "train.epochs=1"]


def long_text(predictor: Predictor, sentences: list[str]) -> str:
    """Review sentences joined until the model's tokenizer counts exactly ``TOKENS`` tokens (cut by words)."""
    encoder = predictor.preprocessor
    assert isinstance(encoder, TextEncoder)
    words: list[str] = []
    for sentence in sentences:
        words += sentence.split()
        if encoder.token_count(" ".join(words)) >= TOKENS:
            break
    while encoder.token_count(" ".join(words)) > TOKENS:
        words.pop()
    return " ".join(words)


def main() -> None:
    started = time.perf_counter()
    lines = ["# Explaining one 512-token text", "", f"Machine: {describe_machine()}", ""]
    lines += [
        f"torch threads: {torch.get_num_threads()}. One text of {TOKENS} tokens (special tokens included) "
        "built from Rotten Tomatoes reviews; each method explains the predicted class.",
        "",
        "| model | method | seconds | tokens attributed | convergence delta |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home))
        for example, extra in (
            ("text-minilm.yaml", []),
            ("text-student.yaml", ["model.params.max_length=512"]),
        ):
            result = train(load_config(ROOT / "examples" / example, READS_512 + extra), registry)
            assert result is not None
            bundle = registry.open(result.ref)
            predictor = Predictor.load(bundle)
            sentences = training_split(bundle, "train").frame["text"].astype(str).tolist()
            text = long_text(predictor, sentences)
            for method in METHODS:
                begin = time.perf_counter()
                (explanation,) = explain(predictor, [text], method=method)
                seconds = time.perf_counter() - begin
                delta = explanation.convergence_delta
                lines.append(
                    f"| {bundle.ref} | {method} | {seconds:.1f} | {len(explanation.attributions)} | "
                    + (f"{delta:.2e}" if delta is not None else "—")
                    + " |"
                )
                print(lines[-1], flush=True)
    lines += ["", f"Whole run (training included): {time.perf_counter() - started:.0f} s."]
    (ROOT / "benchmarks" / "results" / "explain.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
