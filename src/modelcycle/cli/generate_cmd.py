"""``modelcycle generate REF --prompt TEXT``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import console, emit_json, say
from modelcycle.cli.state import open_registry


def generate(
    ref: Annotated[str, typer.Argument(help="A language-model version, e.g. tiny-gpt@production.")],
    prompt: Annotated[str, typer.Option("--prompt", help="The text to continue.")] = "",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096)] = 200,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.0, help="0 picks the likeliest token.")
    ] = 0.8,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0)] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Same seed, same text.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Continue a prompt with a registered language model (key / value cache, temperature, top-k, top-p)."""
    from modelcycle.predictor import Predictor
    from modelcycle.predictor import generate as generate_text

    predictor = Predictor.load(open_registry().open(ref))
    result = generate_text(
        predictor,
        prompt,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    if json_output:
        emit_json(
            {
                "ref": predictor.bundle.ref,
                "prompt": prompt,
                "text": result.text,
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                },
            }
        )
        return
    say(prompt, style="bold")
    console.print(result.text, markup=False, highlight=False)
