"""``modelcycle train CONFIG``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import console, emit_json, format_value, metrics_table, say
from modelcycle.cli.state import open_registry


def train(
    config_file: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    overrides: Overrides = None,
    json_output: JsonFlag = False,
) -> None:
    """Train the model a config describes and register it as a new version."""
    from modelcycle.config import load_config
    from modelcycle.pipeline import train as train_pipeline

    config = load_config(config_file, overrides or [])
    registry = open_registry()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=json_output,
        transient=False,
    )
    primary = "valid_rmse" if config.data.task == "regression" else "valid_accuracy"
    with progress:
        epochs = progress.add_task(f"train {config.name}", total=config.train.epochs, status="")

        def on_epoch(epoch: int, record: dict[str, float]) -> None:
            shown = {key: value for key, value in record.items() if key in ("train_loss", primary)}
            progress.update(epochs, completed=epoch, status=format_value(shown))

        result = train_pipeline(config, registry, on_epoch=on_epoch)
    if json_output:
        emit_json(
            {"ref": result.ref, "metrics": result.metrics, "run_id": result.run_id, "path": str(result.path)}
        )
        return
    metrics_table(f"{result.ref} (best epoch {result.best_epoch}, run {result.run_id[:8]})", result.metrics)
    say(f"registered {result.ref} at {result.path}", style="bold")
