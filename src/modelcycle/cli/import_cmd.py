"""``modelcycle import SOURCE --name NAME``."""

from __future__ import annotations

from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, say
from modelcycle.cli.state import open_registry


def import_checkpoint(
    source: Annotated[
        str, typer.Argument(help="builtin:smollm2, a .gguf file, or a local Hugging Face folder.")
    ],
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    context_length: Annotated[
        int, typer.Option("--context-length", min=1, help="Block size for corpora.")
    ] = 512,
    task: Annotated[
        str | None, typer.Option("--task", help="Expected task: language_modeling or embedding (checked).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Register a pretrained causal language model as a bundle, without training."""
    from modelcycle.importer import import_model

    bundle = import_model(source, name, open_registry(), task=task, context_length=context_length)
    if json_output:
        emit_json({"ref": bundle.ref, "path": str(bundle.path), "task": bundle.manifest.task})
        return
    say(f"imported {source} as {bundle.ref} at {bundle.path}", style="bold")
