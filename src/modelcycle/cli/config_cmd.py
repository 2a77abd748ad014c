"""``modelcycle config validate|schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import emit_json, say

app = typer.Typer(help="Check pipeline configs and print their JSON schema.", no_args_is_help=True)


@app.command("validate")
def validate(
    config_file: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    overrides: Overrides = None,
    json_output: JsonFlag = False,
) -> None:
    """Check a config: syntax, keys, values, and that every named architecture, optimizer and source
    exists."""
    from modelcycle.config import load_config
    from modelcycle.pipeline import validate as validate_pipeline

    config = load_config(config_file, overrides or [])
    validate_pipeline(config)
    if json_output:
        emit_json(
            {"valid": True, "config": config.model_dump(mode="json"), "config_hash": config.config_hash()}
        )
    else:
        say(
            f"valid: {config_file} ({config.name}: {config.model.arch} on {config.data.source})",
            style="green",
        )


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of the pipeline YAML (for editors and CI)."""
    from modelcycle.config import PipelineConfig

    print(json.dumps(PipelineConfig.model_json_schema(), indent=2))
