"""``modelcycle train CONFIG [--resume] [--nproc N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from modelcycle.cli.options import JsonFlag, Overrides
from modelcycle.cli.render import console, emit_json, format_value, metrics_table, say
from modelcycle.cli.state import STATE, open_registry

SHOWN = ("train_loss", "valid_accuracy", "valid_rmse", "samples_per_second")


def train(
    config_file: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run of this config.")
    ] = False,
    nproc: Annotated[
        int,
        typer.Option("--nproc", min=1, help="Train data-parallel in N processes on this machine (torchrun)."),
    ] = 1,
    json_output: JsonFlag = False,
) -> None:
    """Train the model a config describes and register it as a new version."""
    from modelcycle.config import load_config
    from modelcycle.pipeline import train as train_pipeline
    from modelcycle.pipeline import validate
    from modelcycle.train.distributed import launch, shutdown

    config = load_config(config_file, overrides or [])
    if nproc > 1:
        validate(config)  # fail here once, not in every process
        arguments = ["train", str(config_file), *(f"--set={item}" for item in overrides or [])]
        arguments += ["--resume"] * resume + ["--json"] * json_output
        raise typer.Exit(launch(nproc, arguments, home=STATE.home))
    registry = open_registry()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=json_output,
    )
    try:
        with progress:
            epochs = progress.add_task(f"train {config.name}", total=config.train.epochs, status="")

            def on_epoch(epoch: int, record: dict[str, float]) -> None:
                shown = {key: value for key, value in record.items() if key in SHOWN}
                progress.update(epochs, completed=epoch, status=format_value(shown))

            result = train_pipeline(config, registry, resume=resume, on_epoch=on_epoch)
    except BaseException:
        shutdown(together=False)
        raise
    shutdown(together=True)
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    if json_output:
        emit_json(
            {"ref": result.ref, "metrics": result.metrics, "run_id": result.run_id, "path": str(result.path)}
        )
        return
    stopped = ", stopped early" if result.stopped_early else ""
    metrics_table(
        f"{result.ref} (best epoch {result.best_epoch}{stopped}, run {result.run_id[:8]})", result.metrics
    )
    say(f"registered {result.ref} at {result.path}", style="bold")
